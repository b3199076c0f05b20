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
