"""
ExGRPO's loss, as pure tensor math. Read top to bottom, this file is the algorithm:

    rewards  --group_advantages-->  A_i               (one number per rollout)
    logp, logp_old, A  --clipped_surrogate-->  per-token policy loss
    logp, logp_ref  --kl_k3-->  per-token KL to the warm-up (SFT) model
    teacher-forced logp on the teacher's probe answers  --aux_sft_nll-->  per-token NLL
    per-token terms  --aggregate-->  one scalar, micro-batch exact

It receives log-probs, masks and rewards as tensors and imports nothing of the
project; sample.py computes the log-probs, rewards.py the rewards, train.py the loop.
Shapes: B rollouts, T tokens; masks are 1 on the tokens the student generated.

    python -m pytest tests/test_exgrpo.py -q     # every equation, hand-computed

Our choices where the paper is silent (DESIGN.md section 1, each a flag in train.py):
std with Bessel's correction within a group (as DeepSeekMath/TRL), eps = 1e-4;
k3 KL estimator; token-mean aggregation; one optimizer step per rollout batch.
"""

import math

import torch

# -----------------------------------------------------------------------------
# defaults

ADV_EPS = 1e-4        # (r - mean) / (std + ADV_EPS)
CLIP_EPS = 0.2        # PPO clip range: ratio in [1 - eps, 1 + eps]
BETA = 0.04           # weight of KL(pi_theta || pi_ref)
AUX_WEIGHT = 0.1      # lambda, weight of the auxiliary SFT loss on teacher probe answers
KL_LOG_RATIO_CLAMP = 10.0  # |log pi_ref - log pi_theta| clamp, keeps exp() finite (P6)
AGG_MODES = ("token", "sequence", "constant")

def dsu_bonus(r_full, r_partial, delta=0.5, nu=1.0):
    """Per-rollout bonus for the full-dialogue (Scenario A) rollouts of one question:

        P_full = mean(r_full),  P_partial = mean(r_partial)
        if P_full > nu * P_partial:  bonus_i = delta for every correct Scenario A rollout i
        else:                        bonus_i = 0

    Example: r_full = [1, 1, 0, 1], r_partial = [1, 0, 0, 0], delta 0.5, nu 1
        P_full 0.75 > 0.25 -> [0.5, 0.5, 0, 0.5]"""
    if not len(r_full) or not len(r_partial):
        raise ValueError("dsu_bonus needs the rewards of both scenarios")
    if nu < 1:
        raise ValueError(f"nu must be >= 1 (a margin, not a discount), got {nu}")
    p_full = sum(float(x) for x in r_full) / len(r_full)
    p_partial = sum(float(x) for x in r_partial) / len(r_partial)
    if p_full > nu * p_partial:
        return [delta if float(x) > 0 else 0.0 for x in r_full]
    return [0.0] * len(r_full)

# -----------------------------------------------------------------------------
# advantages

def group_advantages(rewards, eps=ADV_EPS, scale=True):
    """A_i = (r_i - mean(r_group)) / (std(r_group) + eps), and exactly 0 for a group whose
    rewards are all equal (P2: the rounded mean would otherwise leak tiny fake advantages).
    scale=False leaves out the division (Dr. GRPO): A_i = r_i - mean(r_group).

    rewards: (num_groups, G) -> (num_groups, G).
    Example: [[1, 0, 0, 1]] -> mean 0.5, std 0.5774 -> [[0.8659, -0.8659, -0.8659, 0.8659]]
             [[1, 0, 0, 1]], scale=False -> [[0.5, -0.5, -0.5, 0.5]]
             [[0.3, 0.3, 0.3]] -> [[0, 0, 0]]
    Note: dividing by the std makes A invariant to r -> c * r. With binary rewards the DSU
    bonus (+delta on every correct rollout of a full-dialogue group) is exactly such a
    rescaling, [1, 0, 0, 1] -> [1.5, 0, 0, 1.5], so under scale=True it changes nothing;
    with scale=False the correct rollouts' advantage grows from 0.5 to 0.75."""
    rewards = rewards.float()
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (num_groups, G), got shape {tuple(rewards.shape)}")
    G = rewards.shape[1]
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, correction=1) if G > 1 else torch.zeros_like(mean)
    adv = (rewards - mean) / (std + eps) if scale else rewards - mean
    constant = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
    return torch.where(constant, torch.zeros_like(adv), adv)


def zero_variance_fraction(rewards):
    """Fraction of groups whose rewards are all equal: they carry no learning signal."""
    return (rewards == rewards[:, :1]).all(dim=1).float().mean().item()

# -----------------------------------------------------------------------------
# per-token terms

def clipped_surrogate(logp, logp_old, adv, clip_eps=CLIP_EPS):
    """PPO's clipped objective, as a loss to minimize:
        ratio = exp(logp - logp_old)
        L_t = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)

    logp, logp_old: (B, T); adv: (B,) broadcast over tokens. Returns (loss (B, T), clipped (B, T)),
    clipped = 1 where the clip is the active branch (no gradient flows there).
    Example: ratio 1.5, A = +1, eps 0.2 -> min(1.5, 1.2) = 1.2 -> L = -1.2 (clipped)
             ratio 0.5, A = -1          -> min(-0.5, -0.8) = -0.8 -> L = 0.8 (clipped)"""
    ratio = torch.exp(logp - logp_old)
    adv = adv[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
    loss = -torch.minimum(unclipped, clipped)
    return loss, (clipped < unclipped).float()


def kl_k3(logp, logp_ref):
    """Per-token KL(pi_theta || pi_ref) by Schulman's k3 estimator (unbiased, always >= 0):
        x = clamp(logp_ref - logp, -c, c);  KL_t = exp(x) - x - 1

    (B, T) -> (B, T). Example: logp = log 0.5, logp_ref = log 0.25
        x = -0.6931 -> 0.5 + 0.6931 - 1 = 0.1931.  Identical policies -> exactly 0 (P6)."""
    x = torch.clamp(logp_ref - logp, -KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)
    return torch.exp(x) - x - 1


def aux_sft_nll(logp_teacher):
    """The auxiliary SFT loss: negative log-likelihood of the teacher's answer to each probe
    turn, teacher-forced, given the probe and the dialogue before it:  L_t = -log pi(y_t | ...).
    (B, T) -> (B, T); aggregate it over the mask of the teacher's tokens."""
    return -logp_teacher

# -----------------------------------------------------------------------------
# aggregation: one scalar from per-token terms

def aggregate(values, mask, mode="token", num_tokens=None, num_seqs=None, max_len=None):
    """Reduce (B, T) per-token values over a (B, T) mask to a scalar.

        token:    sum_{i,t} m x / sum_{i,t} m                      (token mean over the batch)
        sequence: (1/B) sum_i [ sum_t m x / sum_t m ]              (mean per sequence, then mean)
        constant: sum_{i,t} m x / (B * T_max)                      (Dr. GRPO)

    For micro-batching, pass the FULL batch's num_tokens / num_seqs / max_len: each
    micro-batch then contributes its exact share and the accumulated gradient equals the
    full-batch gradient (P11). Defaults are this batch's own.
    Example: x = [[1, 2], [3, 0]], m = [[1, 1], [1, 0]]
        token 6/3 = 2.0; sequence (1.5 + 3)/2 = 2.25; constant 6/(2*2) = 1.5"""
    mask = mask.to(values.dtype)
    total = (values * mask).sum()
    if mode == "token":
        n = mask.sum() if num_tokens is None else num_tokens
        return total / max(float(n), 1.0)
    if mode == "sequence":
        per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return per_seq.sum() / (values.shape[0] if num_seqs is None else num_seqs)
    if mode == "constant":
        B = values.shape[0] if num_seqs is None else num_seqs
        T = values.shape[1] if max_len is None else max_len
        return total / (B * T)
    raise ValueError(f"unknown aggregation {mode!r}; choose one of {', '.join(AGG_MODES)}")

# -----------------------------------------------------------------------------
# the full ExGRPO loss of one (micro-)batch

def exgrpo_loss(logp, logp_old, logp_ref, adv, mask, clip_eps=CLIP_EPS, beta=BETA,
                agg="token", aux_logp=None, aux_mask=None, aux_weight=AUX_WEIGHT, norm=None):
    """
        J = agg( L_clip + beta * KL )  +  lambda * agg_aux( -log pi(teacher probe answers) )

    logp, logp_old, logp_ref, mask: (B, T) over the dialogue tokens the student generated;
    adv: (B,). aux_logp, aux_mask: (B', T') teacher-forced log-probs of the teacher's answers
    (optional). norm: dict of full-batch normalizers for `aggregate` (num_tokens, num_seqs,
    max_len, aux_tokens) when this is one micro-batch of a larger batch.
    Returns (loss, metrics); metrics are detached floats for logging."""
    norm = norm or {}
    pg, clipped = clipped_surrogate(logp, logp_old, adv, clip_eps)
    kl = kl_k3(logp, logp_ref)
    per_token = pg + beta * kl if beta else pg
    kw = dict(num_tokens=norm.get("num_tokens"), num_seqs=norm.get("num_seqs"), max_len=norm.get("max_len"))
    loss = aggregate(per_token, mask, agg, **kw)
    m = mask.float()
    n_tok = max(float(m.sum()), 1.0)
    metrics = {"pg_loss": aggregate(pg.detach(), mask, agg, **kw).item(),
               "kl": float((kl.detach() * m).sum() / n_tok),
               "clip_frac": float((clipped * m).sum() / n_tok),
               "adv_abs": float(adv.detach().abs().mean()) if adv.numel() else 0.0}
    if aux_logp is not None and aux_weight:
        aux = aggregate(aux_sft_nll(aux_logp), aux_mask, "token", num_tokens=norm.get("aux_tokens"))
        loss = loss + aux_weight * aux
        metrics["aux_nll"] = aux.item()
    metrics["loss"] = loss.item()
    return loss, metrics


def is_finite_loss(loss):
    """Skip the update when a loss is NaN/inf (P6): one bad batch must not poison the weights."""
    return bool(torch.isfinite(loss).all())

# -----------------------------------------------------------------------------
# precision: fp32 master weights (P10)

class MasterWeightAdamW:
    """AdamW whose state and weights live in fp32 while the model computes in bf16.

    Why: a bf16 weight of size ~0.02 has a resolution of ~1e-4, so a pure-bf16 update of
    lr * 1 = 1e-6 rounds back to the same weight and training silently stops (P10). Here the
    update lands on an fp32 master copy, which is then rounded into the bf16 model; many
    small updates accumulate and the model moves. fp32 parameters are updated in place
    (no copy, no cost). Memory: +4 bytes per bf16 parameter (see bench/memory.py)."""

    def __init__(self, params, lr=1e-6, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.master = [p if p.dtype == torch.float32 else
                       p.detach().float().clone().requires_grad_(True) for p in self.params]
        self.opt = torch.optim.AdamW(self.master, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps)

    @property
    def param_groups(self):
        return self.opt.param_groups

    def zero_grad(self):
        for p in self.params:
            p.grad = None
        for m in self.master:
            m.grad = None

    @torch.no_grad()
    def step(self):
        for p, m in zip(self.params, self.master):
            if m is not p:
                m.grad = None if p.grad is None else p.grad.float()
        self.opt.step()
        for p, m in zip(self.params, self.master):
            if m is not p:
                p.copy_(m)  # round the fp32 master into the bf16 model

    def state_dict(self):
        return {"opt": self.opt.state_dict(),
                "master": [m.detach().to("cpu", copy=True) if m is not p else None
                           for p, m in zip(self.params, self.master)]}

    def load_state_dict(self, state):
        self.opt.load_state_dict(state["opt"])
        with torch.no_grad():
            for p, m, saved in zip(self.params, self.master, state["master"]):
                if saved is not None and m is not p:
                    m.copy_(saved)
                    p.copy_(saved)


def cosine_lr(step, total, lr, warmup=0):
    """Linear warm-up to lr over `warmup` steps, then cosine decay to 0.1 * lr."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

# -----------------------------------------------------------------------------
# precision for a 7B student on one 80 GB GPU: bf16 AdamW, stochastic rounding, fused into backward

SR_CHUNK = 1 << 22    # elements updated at once: bounds the fp32 temporaries (~28 bytes each) of a step


def stochastic_round_bf16(x, generator=None):
    """fp32 -> bf16, rounding up or down at random so that E[round(x)] = x.

    bf16 is the top 16 bits of an fp32; add 16 random low bits, then cut them off: x rounds
    away from zero with probability (its low bits) / 2^16. An update of 1e-6 on a weight
    of 0.02 (bf16 spacing there: 2^-13 = 1.2e-4) lands with probability 1/122 and moves
    it by one spacing, so on average the weight moves by exactly 1e-6 per step (P10)."""
    bits = x.float().contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=x.device, generator=generator)
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)  # exact: low bits are 0


class BF16AdamW:
    """AdamW that keeps nothing in fp32: weights, m and v all in the model's dtype.

    Bytes per parameter, bf16 model (bench/memory.py counts them for gemma-7b):
        MasterWeightAdamW: 2 weight + 2 grad + 4 master + 4 master grad + 4 m + 4 v = 20
        BF16AdamW:         2 weight + 2 m + 2 v                                      =  6
                           (+ 2 grad unless fused: fused=True frees each gradient at once)
    The update is computed in fp32, one chunk of SR_CHUNK elements at a time, and rounded
    stochastically into bf16 (weights and both moments: v moves by 0.1% a step, below bf16's
    0.4% resolution, and would stall too). A Kahan buffer would also fix P10 but costs
    another 2 bytes per parameter, 17 GB for gemma-7b: more than the GPU has left.
    fp32 parameters (the CPU default) are updated exactly, no rounding: plain AdamW.

    fused=True runs each parameter's step inside backward(), as soon as its gradient is
    complete (register_post_accumulate_grad_hook), then frees the gradient: no gradient
    buffer is ever held for the whole model. The price: every backward() is one optimizer
    step. Micro-batches cannot accumulate into one update; each micro-batch is its own
    step (PPO-style mini-batches: pi_old = the rollout policy's log-probs, taken once under
    no_grad, and the clip becomes active), and global grad-norm clipping is impossible
    (grad_norm() reports the norm after the fact; a non-finite gradient skips that tensor).
    step() and zero_grad() are then no-ops, so a training loop written for torch optimizers
    still runs. With one micro-batch per rollout batch the algorithm is unchanged.

    Rounding noise is seeded by (seed, parameter index, that parameter's step): the fused and
    the plain step give bit-identical weights, and a resumed run continues exactly."""

    def __init__(self, params, lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=False,
                 seed=0, chunk=SR_CHUNK):
        self.params = [p for p in params if p.requires_grad]
        for p in self.params:
            if p.dtype not in (torch.bfloat16, torch.float32):
                raise ValueError(f"BF16AdamW handles bf16 and fp32 parameters, got {p.dtype}")
        self.param_groups = [dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)]
        self.fused, self.seed, self.chunk = fused, seed, chunk
        self.steps = [0] * len(self.params)
        self.m = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in self.params]
        self.v = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in self.params]
        self._generators = {}
        self._sq_norm, self.skipped = 0.0, 0
        self._hooks = []
        if fused:
            for p in self.params:   # a second fused optimizer on the same weights would step them twice
                if getattr(p, "_fused_optimizer", None) is not None:
                    raise ValueError("a parameter is already stepped inside backward by another fused "
                                     "BF16AdamW: call its remove_hooks() first")
            for i, p in enumerate(self.params):
                self._hooks.append(p.register_post_accumulate_grad_hook(self._hook(i)))
                p._fused_optimizer = id(self)

    def _hook(self, i):
        def hook(p):
            self._update(i, p, p.grad)
            p.grad = None   # freed here: no gradient buffer for the whole model
        return hook

    def _generator(self, device):
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        return self._generators[device]

    @torch.no_grad()
    def _update(self, i, p, grad):
        """AdamW on one parameter, torch.optim.AdamW's formula:
            m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
            p = p (1 - lr wd) - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)"""
        if grad is None:
            return
        flat_p, flat_g, flat_m, flat_v = p.view(-1), grad.reshape(-1), self.m[i].view(-1), self.v[i].view(-1)
        chunks = [slice(s, s + self.chunk) for s in range(0, flat_p.numel(), self.chunk)]
        sq = sum(flat_g[sl].float().pow(2).sum() for sl in chunks).item()   # chunked: no fp32 copy of it all
        if not math.isfinite(sq):
            self.skipped += 1   # P6: a NaN/inf gradient must not poison the weights
            return
        self._sq_norm += sq
        g = self.param_groups[0]
        lr, (b1, b2), eps, wd = g["lr"], g["betas"], g["eps"], g["weight_decay"]
        self.steps[i] += 1
        t = self.steps[i]
        bc1, bc2_sqrt = 1 - b1 ** t, math.sqrt(1 - b2 ** t)
        rounded = p.dtype == torch.bfloat16
        gen = self._generator(p.device)
        gen.manual_seed(((self.seed * 1_000_003 + i) * 1_000_033 + t) % (1 << 62))
        for sl in chunks:
            gc = flat_g[sl].float()
            m = flat_m[sl].float().lerp_(gc, 1 - b1)
            v = flat_v[sl].float().mul_(b2).addcmul_(gc, gc, value=1 - b2)
            w = flat_p[sl].float()
            if wd:
                w.mul_(1 - lr * wd)
            w.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(eps), value=-lr / bc1)
            if rounded:
                w, m, v = (stochastic_round_bf16(x, gen) for x in (w, m, v))
            flat_p[sl].copy_(w)
            flat_m[sl].copy_(m)
            flat_v[sl].copy_(v)

    def step(self):
        """The plain (unfused) step: every parameter with a gradient. No-op when fused."""
        if self.fused:
            return
        for i, p in enumerate(self.params):
            self._update(i, p, p.grad)

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def grad_norm(self, reset=True):
        """L2 norm of the gradients applied since the last call (for logging)."""
        n = math.sqrt(self._sq_norm)
        if reset:
            self._sq_norm = 0.0
        return n

    def remove_hooks(self):
        """Stop stepping inside backward (before another optimizer takes over these weights)."""
        for h in self._hooks:
            h.remove()
        if self._hooks:
            for p in self.params:
                p._fused_optimizer = None
        self._hooks = []

    def state_dict(self):
        return {"param_groups": [dict(g) for g in self.param_groups], "steps": list(self.steps),
                # on the CPU: a 7B model's moments are 34 GB that the GPU does not have twice
                "m": [x.detach().to("cpu", copy=True) for x in self.m],
                "v": [x.detach().to("cpu", copy=True) for x in self.v],
                "seed": self.seed}

    def load_state_dict(self, state):
        if len(state["m"]) != len(self.params):
            raise ValueError(f"optimizer state holds {len(state['m'])} tensors, the model {len(self.params)}")
        self.param_groups = [dict(g) for g in state["param_groups"]]
        self.steps, self.seed = list(state["steps"]), state["seed"]
        with torch.no_grad():
            for dst, src in zip(self.m + self.v, state["m"] + state["v"]):
                dst.copy_(src)
