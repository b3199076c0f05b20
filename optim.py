"""
Optimizers and memory schemes: plumbing, not the method. A reader of ExGRPO can skip this file.

    opt = optim.make_optimizer(model, lr=1e-5, kind="master")   # master | bf16 | bf16-fused
    loss.backward()                                              # one or more micro-batches
    grad_norm = optim.finish_step(opt, model.parameters(), grad_clip=1.0)

Every optimizer here has the same interface, so the training step reads the same for each:
  - `finish_step` applies the accumulated gradient (clip, finite check, step, zero_grad);
  - `opt.fused` says whether each backward() already was an optimizer step (then every
    micro-batch must be normalized on its own: see `step_normalizer`).

    python -m pytest tests/test_memory_savings.py -q

Three schemes, in bytes per parameter of a bf16 model (memory.py counts them for a 7B student):
  master      fp32 master weights + fp32 AdamW (P10 solved by precision)            20 B
  bf16        bf16 weights and moments, stochastic rounding (P10 solved by noise)   6 B + 2 B grad
  bf16-fused  the same, each parameter stepped inside backward, gradient freed      6 B
"""

import math

import torch

OPTIMIZERS = ("master", "bf16", "bf16-fused", "adamw")   # adamw: torch's, over FSDP2-sharded fp32 weights


def make_optimizer(model, lr, kind="master"):
    """AdamW that moves bf16 weights at lr 1e-6 (P10): fp32 master weights, or bf16 weights and
    states with stochastic rounding (BF16AdamW), optionally fused into backward."""
    if kind == "master":
        return MasterWeightAdamW(model.parameters(), lr=lr, weight_decay=0.0)
    if kind in ("bf16", "bf16-fused"):
        return BF16AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=kind == "bf16-fused")
    if kind == "adamw":   # several processes (dist.py): fp32 master weights are the sharded parameters
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    raise ValueError(f"unknown optimizer {kind!r}; choose one of {', '.join(OPTIMIZERS)}")


def finish_step(opt, params, grad_clip, micro_steps=1):
    """Apply the gradient accumulated since the last call; returns the gradient norm (for logging).

    A non-finite gradient never reaches opt.step(), whatever grad_clip is (P6): the norm is
    always computed (clip_grad_norm_ with an infinite bound clips nothing). A fused optimizer
    has already stepped inside backward(); its norm is the root mean square over the
    `micro_steps` steps it took."""
    if getattr(opt, "fused", False):
        return opt.grad_norm() / micro_steps ** 0.5
    params = [p for p in params if p.grad is not None]
    gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip or float("inf")) if params else 0.0
    if hasattr(gnorm, "full_tensor"):   # sharded (FSDP2) gradients: the norm over every process
        gnorm = gnorm.full_tensor()
    gnorm = float(gnorm)
    if math.isfinite(gnorm):
        opt.step()
    else:
        opt.skipped = getattr(opt, "skipped", 0) + 1
    opt.zero_grad()
    return gnorm


def step_normalizer(opt, full_batch, micro_batch):
    """Which normalizers a micro-batch's loss divides by: the full batch's (its gradients add up
    to the full-batch gradient, P11) or, when every backward() is its own optimizer step
    (fused), the micro-batch's own."""
    return micro_batch if getattr(opt, "fused", False) else full_batch


def fused_notes(args):
    """What --optimizer bf16-fused changes, said once at the start (see the module docstring)."""
    if args.grad_clip:
        print(f"note: --optimizer bf16-fused steps inside backward and cannot clip the global gradient "
              f"norm; --grad-clip {args.grad_clip} is not applied (the norm is logged)")
    rollouts = args.rl_questions * args.G * (1 if args.no_probes else 2)
    if args.rl_micro < rollouts and not args.no_rl:
        print(f"note: --optimizer bf16-fused: each of the {-(-rollouts // args.rl_micro)} micro-batches of "
              f"a rollout batch ({rollouts} rollouts, --rl-micro {args.rl_micro}) is its own optimizer step")


def cosine_lr(step, total, lr, warmup=0):
    """Linear warm-up to lr over `warmup` steps, then cosine decay to 0.1 * lr."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

# -----------------------------------------------------------------------------
# precision: fp32 master weights (P10)

class MasterWeightAdamW:
    """AdamW whose state and weights live in fp32 while the model computes in bf16.

    Why: a bf16 weight of size ~0.02 has a resolution of ~1e-4, so a pure-bf16 update of
    lr * 1 = 1e-6 rounds back to the same weight and training silently stops (P10). Here the
    update lands on an fp32 master copy, which is then rounded into the bf16 model; many
    small updates accumulate and the model moves. fp32 parameters are updated in place
    (no copy, no cost). Memory: +4 bytes per bf16 parameter (see memory.py)."""

    def __init__(self, params, lr=1e-6, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.master = [p if p.dtype == torch.float32 else
                       p.detach().float().clone().requires_grad_(True) for p in self.params]
        # on the CPU, PyTorch's fused AdamW makes one pass over each tensor; the default for-loop
        # makes several (0.16 s against 0.065 s a step for 133M parameters here)
        cpu = all(m.device.type == "cpu" for m in self.master)
        self.opt = torch.optim.AdamW(self.master, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps,
                                     fused=cpu or None)
        self.fused, self.skipped = False, 0

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

    Bytes per parameter, bf16 model (memory.py counts them for gemma-7b):
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
