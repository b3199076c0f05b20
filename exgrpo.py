"""
ExGRPO, stage 3 of the method, in the order it runs. Read top to bottom, this file is the algorithm:

    1. draw k probes per question; Scenario A = all k probes then Q, Scenario B = the first k' then Q
    2. roll every dialogue out G times, on-policy, the student's own answers in the context (sample.py)
    3. score the final answer of each rollout: R_base in {0, 1} (rewards.py)
    4. the Dialogue Structure Utility bonus: +delta on correct A rollouts when P_full > nu * P_partial
    5. group advantages: one group per question (A and B together), A_i = r_i - mean(group)
    6. per token: the clipped surrogate, the KL to the warm-up model, the aux NLL of the teacher's answers
    7. aggregate to one scalar (micro-batch exact), backward, one optimizer step
    exgrpo_step() ties 1-7 into one update; train.py calls it once per RL step.

    python train.py                              # the whole pipeline; stage 3 is exgrpo_step
    python -m pytest tests/test_exgrpo.py tests/test_dialogue.py -q   # every equation, hand-computed

Shapes: N rollouts, T tokens; masks are 1 on the tokens the student generated (every turn).
Our choices where the paper is silent (docs/design.md), each a flag of train.py:
advantages over one group per question without std division (--adv-group, --adv-norm; the
std would divide the DSU bonus out of binary rewards, P16), k3 KL estimator, token-mean
aggregation, one optimizer step per rollout batch (pi_old = pi_theta.detach(), the ratio is 1
at the update and the clip matters only with --ppo-epochs > 1 or a fused optimizer).
"""

import random
import time
from dataclasses import dataclass

import torch

import data
import dist
import optim
import probes
import rewards
import sample

# -----------------------------------------------------------------------------
# defaults (train.py exposes each as a flag)

DELTA = 0.5           # DSU bonus added to each correct Scenario A rollout
NU = 1.0              # DSU margin: the bonus fires iff P_full > nu * P_partial (nu >= 1)
ADV_GROUP = "question"  # question: A and B rollouts of a question form one group; scenario: one each
ADV_NORM = "none"     # none: A = r - mean (Dr. GRPO); std: (r - mean) / (std + ADV_EPS)
ADV_EPS = 1e-4
CLIP_EPS = 0.2        # PPO clip range: ratio in [1 - eps, 1 + eps]
BETA = 0.04           # weight of KL(pi_theta || pi_ref)
AUX_WEIGHT = 0.1      # lambda, weight of the auxiliary SFT loss on the teacher's probe answers
KL_EXP_MAX = 20.0     # log-ratio clamp, upper side only: one token cannot swamp the batch (P6)
AGG_MODES = ("token", "sequence", "constant")
MIN_PROBES = 2        # RL probes a question needs for Scenarios A and B (B keeps k' in [1, k-1])

# -----------------------------------------------------------------------------
# 1. draw k probes, build Scenario A and Scenario B


def probe_message(p):
    """The user message of a probe: its question plus the answer-format instruction."""
    return data.user_message({"question": p["question"], "answer_type": p["answer_type"]})


def probe_coverage_note(questions, rules=None):
    """One line on how many questions can form Scenarios A and B (2+ RL probes), or None when all
    can: the others are asked plainly, as GRPO would. A rule set that leaves none (--rules reverse,
    whose probes all state the answer) makes an "ExGRPO" run plain GRPO: say so loudly."""
    n = sum(len(probes.rl_probes(q)) >= MIN_PROBES for q in questions)
    if n == len(questions):
        return None
    what = f" (--rules {rules})" if rules else ""
    if n == 0:
        return (f"WARNING: no training question has the 2 RL probes a dialogue needs{what}: every RL "
                f"dialogue is the plain question, so this run is GRPO (no Scenario A/B, no DSU, no aux loss)")
    return (f"note: {n} of {len(questions)} training questions have the 2+ RL probes a dialogue needs{what}; "
            f"the other {len(questions) - n} are asked plainly in RL")


def build_scenarios(questions, k, k_partial=None, rng=None, use_probes=True, use_aux=True, keep=None):
    """Per question: Scenario A (k probes, then Q) and Scenario B (the first k' of them, then Q),
    k' uniform in [1, k-1] unless fixed; a question with fewer than 2 usable probes (or
    use_probes=False, plain GRPO) gets one plain dialogue [Q]. Returns
        dialogues: list of user-message lists, e.g. [[p1, p2, Q], [p1, Q], ...]
        meta:      one (question index, "full" | "partial" | "plain") per dialogue
        aux:       per question with probes, the teacher's answers to the same k probes,
                   [(probe, teacher answer), ...] (not the answers the checker marked wrong;
                   a probe with no check, as in an older dei.jsonl, counts as right)
    keep: the indices of the questions to build (several processes, each its own); the others'
    probes are drawn all the same, so that every question gets the draws of a one-process run."""
    rng = rng or random.Random(0)
    dialogues, meta, aux_dialogues = [], [], []
    for qi, q in enumerate(questions):
        qmsg = data.user_message(q)
        ps = probes.rl_probes(q) if use_probes else []   # kept, and never stating Q's answer (P17)
        if len(ps) < MIN_PROBES:   # Scenario B needs at least one probe fewer than A, and k' >= 1
            if keep is None or qi in keep:
                dialogues.append([qmsg])
                meta.append((qi, "plain"))
            continue
        drawn = rng.sample(ps, min(k, len(ps)))
        kp = min(k_partial, len(drawn) - 1) if k_partial else rng.randint(1, len(drawn) - 1)
        if keep is not None and qi not in keep:
            continue
        dialogues += [[probe_message(p) for p in drawn] + [qmsg],
                      [probe_message(p) for p in drawn[:kp]] + [qmsg]]
        meta += [(qi, "full"), (qi, "partial")]
        turns = [(probe_message(p), p["teacher_reasoning"]) for p in drawn
                 if p.get("teacher_reasoning") and p.get("reasoning_correct", True)]
        if use_aux and turns:
            aux_dialogues.append(turns)
    return dialogues, meta, aux_dialogues

# -----------------------------------------------------------------------------
# 2-3. roll out and score


def rollout_and_score(cfg, model, tok, questions, dialogues, meta, reward_fn=rewards.reward):
    """G rollouts of every dialogue (sample.rollout_dialogues: batched, per-row EOS, the student's
    sampled ids kept as sampled), and R_base of each: reward_fn(final answer, gold, type, Q).
    Returns the rollouts and R_base as (num_dialogues, G)."""
    roll = sample.rollout_dialogues(model, tok, dialogues, n=cfg.G, max_new_tokens=cfg.max_new_tokens,
                                    temperature=cfg.temperature,
                                    batch_size=cfg.rollout_batch or max(len(dialogues) * cfg.G, 1))
    r = [reward_fn(roll.turns[i][-1], q["answer"], q["answer_type"], q["question"])
         for i in range(len(roll.ids)) for q in [questions[meta[i // cfg.G][0]]]]
    return roll, torch.tensor(r, dtype=torch.float32).view(len(dialogues), cfg.G)

# -----------------------------------------------------------------------------
# 4. the Dialogue Structure Utility bonus


def dsu_bonus(r_full, r_partial, delta=DELTA, nu=NU):
    """Per-rollout bonus for the Scenario A rollouts of one question:

        P_full = mean(r_full),  P_partial = mean(r_partial)
        bonus_i = delta * [r_full_i > 0]   if P_full > nu * P_partial,  else 0

    An outcome-level, group-level comparison (not a likelihood term). r_full, r_partial: the
    R_base values (0/1) of the G rollouts of each scenario.
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


def add_dsu(r_base, meta, delta=DELTA, nu=NU, enabled=True):
    """R = R_base + the DSU bonus on every question's Scenario A row (the row after it is the
    same question's Scenario B). r_base: (num_dialogues, G). Returns (R, fired per question,
    P_full per question, P_partial per question)."""
    r = r_base.clone()
    fired, p_full, p_part = [], [], []
    for d, (_, kind) in enumerate(meta):
        if kind == "full":
            bonus = dsu_bonus(r_base[d].tolist(), r_base[d + 1].tolist(), delta, nu) if enabled else [0.0]
            r[d] += torch.tensor(bonus)
            fired.append(float(any(bonus)))
            p_full.append(r_base[d].mean().item())
            p_part.append(r_base[d + 1].mean().item())
    return r, fired, p_full, p_part

# -----------------------------------------------------------------------------
# 5. advantages


def group_advantages(r, groups, norm=ADV_NORM, eps=ADV_EPS):
    """A_i = r_i - mean_{j in g(i)} r_j                      (norm="none", Dr. GRPO's unbiased form)
    A_i = (r_i - mean_g) / (std_g + eps), Bessel's std      (norm="std", DeepSeekMath / TRL)
    and exactly 0 in a group whose rewards are all equal (P2: a rounded mean would leak fake ones).

    r: (N,) rewards, floats; groups: (N,) group ids in [0, num_groups). Returns (N,).
    Example, one question, A = [1.5, 1.5, 0, 0] (two correct + DSU 0.5), B = [0, 0, 0, 0],
    one group of 8: mean 3/8 -> A: [1.125, 1.125, -0.375, -0.375], B: [-0.375] * 4.
    Without the bonus: [0.75, 0.75, -0.25, -0.25], [-0.25] * 4. With per-scenario groups and
    the std, both cases give A: [0.866, 0.866, -0.866, -0.866], B: 0: the bonus is divided out
    (pitfall P16 of docs/design.md)."""
    r, groups = r.float().flatten(), groups.long().flatten()
    n = int(groups.max()) + 1 if groups.numel() else 0
    count = torch.zeros(n).index_add_(0, groups, torch.ones_like(r))
    mean = torch.zeros(n).index_add_(0, groups, r) / count
    adv = r - mean[groups]
    if norm == "std":
        var = torch.zeros(n).index_add_(0, groups, adv ** 2) / (count - 1).clamp(min=1)
        adv = adv / (var.sqrt()[groups] + eps)
    elif norm != "none":
        raise ValueError(f"unknown advantage normalization {norm!r}; choose none or std")
    lo = torch.full((n,), float("inf")).scatter_reduce(0, groups, r, "amin")
    hi = torch.full((n,), float("-inf")).scatter_reduce(0, groups, r, "amax")
    return torch.where((lo == hi)[groups], torch.zeros_like(adv), adv)


def group_ids(meta, G, by=ADV_GROUP):
    """The advantage group of each of the len(meta) * G rollouts: its question (by="question":
    Scenario A and B together, 2G rollouts; a plain question's G) or its dialogue ("scenario")."""
    if by not in ("question", "scenario"):
        raise ValueError(f"unknown advantage grouping {by!r}; choose question or scenario")
    key = [m[0] for m in meta] if by == "question" else list(range(len(meta)))
    return torch.tensor(key).repeat_interleave(G)


def zero_variance_fraction(r, groups):
    """Fraction of groups whose rewards r are all equal: they carry no learning signal."""
    return sum(bool((r[groups == g] == r[groups == g][0]).all())
               for g in groups.unique()) / max(len(groups.unique()), 1)

# -----------------------------------------------------------------------------
# 6. per-token terms


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
    return -torch.minimum(unclipped, clipped), (clipped < unclipped).float()


def kl_k3(logp, logp_ref):
    """Per-token KL(pi_theta || pi_ref) by Schulman's k3 estimator (unbiased, always >= 0):
        x = logp_ref - logp;  KL_t = exp(x) - x - 1

    x is clamped above at KL_EXP_MAX only: a token the policy made e^20 times less likely than
    the reference would otherwise add exp(x) (up to e^88 before fp32 overflows) and swamp the
    batch; past the cap that token's KL gradient is 0, a trade for a bounded loss. Below, exp(x)
    -> 0 and KL_t = -x - 1 keeps pulling the policy back (its gradient is 1, never switched off).
    (B, T) -> (B, T). Example: logp = log 0.5, logp_ref = log 0.25
        x = -0.6931 -> 0.5 + 0.6931 - 1 = 0.1931.  Identical policies -> exactly 0 (P6)."""
    x = (logp_ref - logp).clamp(max=KL_EXP_MAX)
    return torch.exp(x) - x - 1


def aux_sft_nll(logp_teacher):
    """The auxiliary SFT loss: negative log-likelihood of the teacher's answer to each probe
    turn, teacher-forced, given the probe and the dialogue before it:  L_t = -log pi(y_t | ...).
    (B, T) -> (B, T); aggregate it over the mask of the teacher's tokens."""
    return -logp_teacher

# -----------------------------------------------------------------------------
# 7. aggregation: one scalar from per-token terms


def aggregate(values, mask, mode="token", num_tokens=None, num_seqs=None, token_budget=None):
    """Reduce (B, T) per-token values over a (B, T) mask to a scalar.

        token:    sum_{i,t} m x / sum_{i,t} m                      (token mean over the batch)
        sequence: (1/B) sum_i [ sum_t m x / sum_t m ]              (mean per sequence, then mean)
        constant: sum_{i,t} m x / (B * T_budget)                   (Dr. GRPO: a fixed budget)

    T_budget is fixed by the configuration (a dialogue's token budget, the same every step);
    default: this batch's width. For micro-batching, pass the FULL batch's num_tokens /
    num_seqs: each micro-batch then contributes its exact share and the accumulated gradient
    equals the full-batch gradient (P11).
    Example: x = [[1, 2], [3, 0]], m = [[1, 1], [1, 0]]
        token 6/3 = 2.0; sequence (1.5 + 3)/2 = 2.25; constant (T_budget 4) 6/(2*4) = 0.75"""
    mask = mask.to(values.dtype)
    total = (values * mask).sum()
    B = values.shape[0] if num_seqs is None else num_seqs
    if mode == "token":
        n = mask.sum() if num_tokens is None else num_tokens
        return total / max(float(n), 1.0)
    if mode == "sequence":
        return ((values * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum() / B
    if mode == "constant":
        return total / (B * (values.shape[1] if token_budget is None else token_budget))
    raise ValueError(f"unknown aggregation {mode!r}; choose one of {', '.join(AGG_MODES)}")


def exgrpo_loss(logp, logp_old, logp_ref, adv, mask, clip_eps=CLIP_EPS, beta=BETA, agg="token",
                aux_logp=None, aux_mask=None, aux_weight=AUX_WEIGHT, normalizers=None):
    """The loss of one (micro-)batch:
        J = agg( L_clip + beta * KL )  +  lambda * token_mean( -log pi(teacher probe answers) )

    logp, logp_old, logp_ref, mask: (B, T) over the dialogue tokens the student generated;
    adv: (B,). aux_logp, aux_mask: (B', T') teacher-forced log-probs of the teacher's answers
    (optional). normalizers: the full batch's normalizers for `aggregate` (num_tokens, num_seqs,
    token_budget, aux_tokens) when this is one micro-batch of a larger batch.
    Returns (loss, stats), all detached floats a caller adds up over micro-batches: kl,
    clip_frac and entropy (= -log pi) are token SUMS over the mask (the caller divides by the
    batch's tokens); loss and pg_loss are this micro-batch's share of the batch's loss (already
    divided by the normalizers); aux_nll is the aux loss's token mean."""
    normalizers = normalizers or {}
    pg, clipped = clipped_surrogate(logp, logp_old, adv, clip_eps)
    kl = kl_k3(logp, logp_ref)
    kw = dict(num_tokens=normalizers.get("num_tokens"), num_seqs=normalizers.get("num_seqs"),
              token_budget=normalizers.get("token_budget"))
    loss = aggregate(pg + beta * kl if beta else pg, mask, agg, **kw)
    m = mask.float()
    stats = {"pg_loss": aggregate(pg.detach(), mask, agg, **kw).item(), "kl": float((kl.detach() * m).sum()),
             "clip_frac": float((clipped * m).sum()), "entropy": float((-logp.detach() * m).sum())}
    if aux_logp is not None and aux_weight:
        aux = aggregate(aux_sft_nll(aux_logp), aux_mask, "token", num_tokens=normalizers.get("aux_tokens"))
        loss = loss + aux_weight * aux
        stats["aux_nll"] = aux.item()
    stats["loss"] = loss.item()
    return loss, stats

# -----------------------------------------------------------------------------
# the update: a rollout batch, its micro-batches, their scoring, one optimizer step


@dataclass
class RolloutBatch:
    """One step's rollouts, packed once, as the update needs them:
        batch:  sample.Batch of the N rollouts; ids, attn, loss_mask (N, T); the loss mask is 1
                on the tokens the student generated (every turn), 0 on prompts and padding
        lengths: tokens of each rollout (N,), before padding
        adv:    (N,) advantage of each rollout, in rollout order (rollout i = dialogue i // G)
        aux:    sample.Batch of the teacher-forced aux dialogues (A, T_aux), or None
        normalizers: the FULL batch's, for `aggregate`: num_tokens, num_seqs, token_budget (and
                aux_tokens), so that micro-batches add up to the one-batch loss"""
    batch: sample.Batch
    lengths: list
    adv: torch.Tensor
    aux: object
    normalizers: dict


def pack_rollouts(tok, roll, adv, aux_dialogues, token_budget):
    """sample.Dialogues + advantages + aux dialogues -> a RolloutBatch. The normalizers count
    every process's rollouts (dist.total): each process's loss is its share of one global loss."""
    batch = sample.pack([[]] * len(roll.ids), roll.ids, tok.pad_token_id, roll.student_mask)   # (N, T)
    aux = None
    if aux_dialogues:
        tf = [sample.teacher_forced(tok, a) for a in aux_dialogues]
        aux = sample.pack([[]] * len(tf), [x[0] for x in tf], tok.pad_token_id,
                          [x[1] for x in tf])   # (A, T_aux)
    tokens, seqs, aux_tokens = dist.total(batch.loss_mask.sum(), len(roll.ids),
                                          0 if aux is None else aux.loss_mask.sum())
    normalizers = {"num_tokens": max(int(tokens), 1), "num_seqs": int(seqs), "token_budget": token_budget}
    if aux is not None:
        normalizers["aux_tokens"] = int(aux_tokens)
    return RolloutBatch(batch, [len(x) for x in roll.ids], adv, aux, normalizers)


def micro_batches(lengths, G, size, in_order=False):
    """Index tensors of the micro-batches of one rollout batch, `size` rollouts each.

    Rollouts of similar length go together and each micro-batch is cut to its own longest row: a
    dialogue batch mixes 2- and 4-turn rollouts, and padding them all to the longest doubled the
    work. A dialogue's G rollouts stay together (sorted by their longest), so that token_logprobs
    runs their shared first turn once. in_order: rollout order, for a fused optimizer, which
    steps on each micro-batch: a micro-batch of a multiple of G rollouts then holds whole groups,
    and the order of the steps does not depend on the rollouts' lengths.
    Example: lengths [5, 9, 3, 4], G 2, size 2 -> [tensor([1, 0]), tensor([3, 2])]"""
    n = len(lengths)
    longest = [max(lengths[i - i % G:i - i % G + G]) for i in range(n)]   # of the rollout's dialogue
    order = range(n) if in_order else sorted(range(n), key=lambda i: (-longest[i], i // G, -lengths[i]))
    order = torch.tensor(list(order), dtype=torch.long)
    return [order[s:s + size] for s in range(0, n, size)]


def batch_rows(b, idx, device):
    """Rows idx of a packed sample.Batch, cut to their longest row: (ids, attn, loss_mask), (b, T_idx)."""
    width = int(b.attn[idx].sum(-1).max()) if b.attn.shape[0] else 0
    return tuple(x[idx, :width].to(device) for x in (b.ids, b.attn, b.loss_mask))


def logprobs_of(model, rb, idx, temperature, limit, share_prefix, with_aux, device):
    """Per-token log-probs of the rollouts idx under `model`, (b, T_idx), scored at the sampling
    temperature; and with_aux: of the teacher's aux answers, (A, T_aux), in the same forward pass
    (sample.joint_logprobs says why), else None. share_prefix: run a group's shared prompt once."""
    if not with_aux or rb.aux is None:
        return sample.token_logprobs(model, *batch_rows(rb.batch, idx, device), temperature, limit,
                                     share_prefix=share_prefix), None
    # not shared here: with the aux rows in it, two runs of one seed differed by ~1e-7 across processes
    parts = [(*batch_rows(rb.batch, idx, device), temperature),
             (*batch_rows(rb.aux, slice(None), device), 1.0)]
    return sample.joint_logprobs(model, parts, limit, share_prefix=False)


def policy_update(cfg, model, ref, tok, opt, rb):
    """Steps 6-7 on a RolloutBatch: reference (and, when it must stay put, old) log-probs once,
    then per micro-batch the loss and its backward; one optimizer step (optim.finish_step). The
    aux dialogues ride on micro-batch 0. A non-finite loss is skipped (P6): alone, its micro-batch;
    with several processes, the whole step on every process (see below). skipped_micro counts the
    micro-batches skipped, summed over processes."""
    device, limit = next(model.parameters()).device, sample.vocab_limit_of(model, tok)
    n_tok, fused = rb.normalizers["num_tokens"], getattr(opt, "fused", False)   # fused: optim.BF16AdamW's
    micro = micro_batches(rb.lengths, cfg.G, cfg.rl_micro, in_order=fused)   # [(b,) rollout indices]
    # several processes run as many micro-batches each (every forward and backward is a collective):
    # one with fewer repeats its first micro-batch with weight 0
    n_real = len(micro)
    micro += [micro[0]] * (dist.most(n_real) - n_real)
    use_ref = ref is not None and cfg.beta > 0
    frozen_old = cfg.ppo_epochs > 1 or (fused and len(micro) > 1)   # pi_old must not move under us
    # a shared prompt is scored in two passes, and a fused optimizer steps inside the one backward
    share_prefix = sample.SHARE_PREFIX and not fused
    # the aux rows ride on micro-batch 0
    lp_of = lambda m, mi, idx: logprobs_of(m, rb, idx, cfg.temperature, limit, share_prefix,
                                           with_aux=(mi == 0), device=device)
    with torch.no_grad():   # scored exactly as below, so that the ratio is 1 and the KL 0 at the start
        ref_lp = [lp_of(ref, mi, idx)[0] for mi, idx in enumerate(micro)] if use_ref else None  # [(b, T_idx)]
        old_lp = [lp_of(model, mi, idx)[0] for mi, idx in enumerate(micro)] if frozen_old else None
    model.train()
    sums, skipped, gnorm = {}, 0, 0.0   # metrics: of the last PPO epoch; skipped: over all of them
    for _ in range(cfg.ppo_epochs):
        sums = {}
        for mi, idx in enumerate(micro):
            mask = batch_rows(rb.batch, idx, device)[2]                    # (b, T_idx)
            lp, aux_lp = lp_of(model, mi, idx)                             # (b, T_idx), (A, T_aux) or None
            aux_kw = {} if aux_lp is None else dict(aux_logp=aux_lp,
                                                    aux_mask=batch_rows(rb.aux, slice(None), device)[2],
                                                    aux_weight=cfg.aux_weight)
            own = {**rb.normalizers, "num_tokens": int(mask.sum()), "num_seqs": mask.shape[0]}
            loss, st = exgrpo_loss(lp, old_lp[mi] if frozen_old else lp.detach(),
                                   ref_lp[mi] if use_ref else lp.detach(), rb.adv[idx].to(device), mask,
                                   cfg.clip_eps, cfg.beta if use_ref else 0.0, cfg.agg,
                                   normalizers=optim.step_normalizer(opt, rb.normalizers, own), **aux_kw)
            # a non-finite loss (P6): alone, its micro-batch is skipped. With several processes each
            # backward is a collective (FSDP2) that every process must join, so all of them run it
            # with the loss times 0: the non-finite values poison the summed gradient, and
            # optim.finish_step then skips the whole step on every process alike
            bad = dist.total(0.0 if torch.isfinite(loss) else 1.0)[0] > 0   # on any process
            if bad and not dist.on():
                skipped += 1
                continue
            if bad or mi >= n_real:   # or a repeat, for the collectives only: no gradient, no metrics
                skipped += bad and mi < n_real
                (loss * 0.0).backward()
                continue
            loss.backward()
            weight = 1.0 if not fused else int(mask.sum()) / n_tok   # fused: each normalized alone
            for key, v in st.items():
                sums[key] = sums.get(key, 0.0) + (v * weight if key in ("loss", "pg_loss") else v)
            if "aux_nll" in st:   # the aux term belongs to its micro-batch alone: never weighted down
                sums["loss"] += (1.0 - weight) * cfg.aux_weight * st["aux_nll"]
        gnorm = optim.finish_step(opt, model.parameters(), cfg.grad_clip, micro_steps=len(micro))
    keys = sorted(sums)   # every process's share of the loss and of the token sums, added up
    *totals, skipped = dist.total(*[sums[k] for k in keys], skipped)
    sums = dict(zip(keys, totals))
    for key in ("kl", "clip_frac", "entropy"):   # token sums -> token means
        sums[key] = sums.get(key, 0.0) / n_tok
    return {**sums, "grad_norm": gnorm, "skipped_micro": int(skipped), "student_tokens": n_tok}


def exgrpo_step(cfg, model, ref, tok, opt, questions, step, reward_fn=rewards.reward):
    """One ExGRPO update on `questions` (D_EI records): steps 1-7 above. cfg holds train.py's
    flags (k, k_partial, G, delta, nu, adv_group, adv_norm, no_probes, no_dsu, no_aux, beta, ...).
    Returns the metrics row that train.py logs. Several processes (dist.py) split the questions,
    each keeping a question's whole group, and add up the metrics."""
    t0 = time.time()
    rng = random.Random(cfg.seed * 100_003 + step)   # the same draws after a resume
    mine = set(dist.share(range(len(questions))))    # all of them, in one process
    dialogues, meta, aux = build_scenarios(questions, cfg.k, cfg.k_partial, rng, not cfg.no_probes,
                                           not cfg.no_aux, keep=mine)
    with dist.gathered(model):   # whole weights while generating: processes stop at their own steps
        roll, r_base = rollout_and_score(cfg, model, tok, questions, dialogues, meta, reward_fn)
    t_gen = time.time() - t0
    r, fired, p_full, p_part = add_dsu(r_base, meta, cfg.delta, cfg.nu, enabled=not cfg.no_dsu)
    groups = group_ids(meta, cfg.G, cfg.adv_group)
    adv = group_advantages(r.flatten(), groups, cfg.adv_norm)
    turns = 1 if cfg.no_probes else cfg.k + 1
    row = policy_update(cfg, model, ref, tok, opt,
                        pack_rollouts(tok, roll, adv, aux, turns * cfg.max_new_tokens))
    # accuracy: the final answers of the full (Scenario A) and plain dialogues, not of Scenario B's
    final = [d for d, (_, kind) in enumerate(meta) if kind != "partial"]
    n_groups = len(groups.unique())
    reward, n, bonus, right, n_final, adv_abs, n_adv, zero_var, n_groups = dist.total(   # over processes
        r_base.sum(), r_base.numel(), r.sum(), r_base[final].sum(), r_base[final].numel(), adv.abs().sum(),
        adv.numel(), zero_variance_fraction(r.flatten(), groups) * n_groups, n_groups)
    return {"reward": reward / n, "reward_with_bonus": bonus / n, "accuracy": right / n_final,
            "dsu_rate": dist.mean(fired) or 0.0, "P_full": dist.mean(p_full), "P_partial": dist.mean(p_part),
            "adv_abs": adv_abs / n_adv, "zero_var_groups": zero_var / n_groups, **row,
            "gen_tokens_per_s": row["student_tokens"] / max(t_gen, 1e-9), "gen_seconds": round(t_gen, 2),
            "step_seconds": round(time.time() - t0, 2)}
