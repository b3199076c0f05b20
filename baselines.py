"""
The paper's baselines in the same pipeline as ExGRPO: one flag of train.py picks the method,
and every method shares the loaders, the teacher cache, the student, the run folder and the
evaluation.

    python train.py --student micro --method sft            # SFT on teacher reasoning (the warm-up alone)
    python train.py --student micro --method step-by-step   # distilling step-by-step (Hsieh et al., 2023)
    python train.py --student micro --method revthink       # RevThink (Chen et al., 2024)
    python train.py --student micro --method gkd --gkd-teacher hf:runs/methods/teacher/sft/final \\
        --sft-from runs/methods/sft/sft/final   # on-policy distillation (GKD, Agarwal et al., 2024)
    python train.py --student micro --method grpo           # plain GRPO (= --no-probes)
    python bench/methods.py                                 # every method, the paper's table
    python -m pytest -q tests/test_baselines.py             # each loss against a hand computation

What each method changes in train.py's stages (EI, SFT, RL):
  sft           SFT warm-up only (= --no-rl)
  step-by-step  SFT replaced by two tasks, "[label] Q" -> "The answer is A." and "[rationale] Q" -> the
                teacher's reasoning, L = L_label + lambda L_rationale (--rationale-weight); no RL; at
                test time the student is asked with the label prefix and answers without a rationale
  revthink      SFT replaced by three tasks, Q -> R_f, Q -> Q_b, Q_b -> R_b (equal weights, as in its
                paper; ours: each task a token mean); Q_b, R_b: RevThink's Gemini-1.5-Pro fields on
                strategyqa, arc_challenge, anli, date_understanding (its training files, an R_b that
                misses Q_b's answer left out); on the synthetic world the oracle's reverse probe
                (probes.reverse: the end amount given, the start asked) and its solution; no RL
  gkd           the RL stage replaced by on-policy distillation (the paper's lambda = 1: student samples
                only): the student samples at --temperature, the teacher LM scores every student token,
                loss = token-mean generalized JSD between the teacher's and the student's next-token
                distributions at temperature 1; no KL to pi_ref (--beta is set to 0); starts from the
                SFT warm-up
  grpo          ExGRPO without probes (= --no-probes)
GKD needs an hf: teacher whose tokenizer is the student's (the divergence is over one vocabulary);
any other pairing stops with one line. On the synthetic world bench/methods.py builds one: a wider
micro model (same tokenizer) trained by SFT on the oracle's solutions.
"""

import math
import re
import time

import torch

import checks
import data
import exgrpo
import models
import optim
import probes
import rewards
import sample
from data.oracle import solve

# -----------------------------------------------------------------------------
# defaults (train.py exposes each as a flag)

METHODS = ("exgrpo", "sft", "step-by-step", "revthink", "gkd", "grpo")
LABELS = {"exgrpo": "ExGRPO", "sft": "SFT", "step-by-step": "Distilling step-by-step", "revthink": "RevThink",
          "gkd": "On-policy distillation (GKD)", "grpo": "GRPO"}
LABEL_PREFIX = "[label] "          # step-by-step's task prefixes (Hsieh et al. prepend them to the input)
RATIONALE_PREFIX = "[rationale] "
RATIONALE_WEIGHT = 1.0             # lambda in L_label + lambda L_rationale
BACKWARD_ASK = ("Write the backward question of this problem: give its answer as a fact and ask for "
                "one of the facts it started from.")   # RevThink's Q -> Q_b task instruction (ours)
# generalized JSD: 0 forward KL(teacher||student), 1 reverse KL(student||teacher)
GKD_BETA = 0.5
ANSWER_LINE = {"number": "The answer is {}.", "yesno": "The answer is {}.", "choice": "The answer is ({}).",
               "math": "The answer is $\\boxed{{{}}}$."}   # the label target, in the format rewards.py checks

# -----------------------------------------------------------------------------
# flags


def add_flags(ap):
    g = ap.add_argument_group("method (baselines.py)")
    g.add_argument("--method", default="exgrpo", choices=METHODS,
                   help="a baseline of the paper in place of ExGRPO (README: Flags, ablations and baselines)")
    g.add_argument("--rationale-weight", type=float, default=RATIONALE_WEIGHT, help="step-by-step: lambda")
    g.add_argument("--gkd-beta", type=float, default=GKD_BETA,
                   help="gkd: generalized JSD beta; 0 = forward KL(teacher||student), "
                        "1 = reverse KL(student||teacher)")
    g.add_argument("--gkd-teacher", default=None, metavar="hf:FOLDER",
                   help="gkd: the teacher LM, sharing the student's tokenizer "
                        "(default: --teacher when it is hf:)")
    return ap


def apply(ap, args):
    """Check the method's flags (one line, exit 2) and set what the method implies."""
    checks.ranges(ap, args, {"rationale_weight": checks.AT_LEAST_0, "gkd_beta": checks.FRACTION})
    m = args.method
    if m in ("step-by-step", "revthink") and args.no_sft:
        checks.fail(ap, f"--method {m} is a kind of SFT: it cannot run with --no-sft")
    if m in ("step-by-step", "revthink") and args.sft_from:
        checks.fail(ap, f"--method {m} trains its own SFT stage: drop --sft-from")
    if m in ("sft", "step-by-step", "revthink"):
        args.no_rl = True
    if m == "grpo":
        args.no_probes = True
    if m == "gkd":
        if args.no_rl:
            checks.fail(ap, "--method gkd is an RL-stage method: drop --no-rl")
        spec = args.gkd_teacher or (args.teacher if str(args.teacher).startswith("hf:") else None)
        if not spec or not spec.startswith("hf:"):
            checks.fail(ap, f"--method gkd needs a teacher LM that shares the student's tokenizer: "
                            f"--gkd-teacher hf:<folder> (got {spec or args.teacher!r}; the oracle and "
                            f"endpoints give no next-token distributions)")
        checks.student(ap, "--gkd-teacher", spec[3:])
        args.gkd_teacher, args.beta = spec, 0.0   # no KL to pi_ref: the teacher's distribution is the anchor


def lm_teacher(args, tok):
    """GKD's teacher model, frozen (eval, no gradients), or None for the other methods. Refuses a
    teacher whose tokenizer differs from the student's (same token -> id map), or whose head
    cannot score every token of it: the divergence compares two distributions over one vocabulary."""
    if args.method != "gkd":
        return None
    teacher, ttok = models.load_student(args.gkd_teacher[3:], args.dtype, args.device)
    if ttok.get_vocab() != tok.get_vocab():
        raise ValueError(f"--gkd-teacher {args.gkd_teacher}: its tokenizer ({len(ttok)} tokens) is not the "
                         f"student's ({len(tok)} tokens); GKD needs one shared vocabulary")
    rows = teacher.get_output_embeddings().weight.shape[0]
    if rows < len(tok):
        raise ValueError(f"--gkd-teacher {args.gkd_teacher}: its head has {rows} rows, fewer than the "
                         f"tokenizer's {len(tok)} tokens; it cannot score every token the student may sample")
    return teacher.eval().requires_grad_(False)


def sft_label(args):
    """The name of train.py's SFT row for this method."""
    return LABELS[args.method] if args.method in ("sft", "step-by-step", "revthink") else "SFT warm-up"


def eval_prompt(args):
    """How evaluation asks a question: step-by-step with its label prefix (the label task only)."""
    if args.method == "step-by-step":
        return lambda r: [{"role": "user", "content": LABEL_PREFIX + data.user_message(r)}]
    return data.messages

# -----------------------------------------------------------------------------
# multi-task SFT: step-by-step and RevThink


def task_scale(mask, tasks, weights):
    """Per-row factors that turn train.py's token-mean SFT loss into a weighted sum of task means:

        L = sum_k w_k * L_k,   L_k = sum_{i in task k, t} m_it * nll_it / N_k,
        N_k = sum_{i in task k, t} m_it
        s_i = w_{k(i)} * N / N_{k(i)}   (N = all tokens)  =>  sum_{i,t} s_i m_it nll_it / N = L

    step-by-step: w = [1, lambda] (label, rationale); RevThink: w = [1, 1, 1]; plain SFT: one task,
    s = 1. mask: (B, T); tasks: (B,) task ids; weights: one per task. Returns (B,).
    Example: mask rows with 2 and 3 tokens, tasks [0, 1], weights [1, 0.5]
        N = 5 -> s = [1 * 5/2, 0.5 * 5/3] = [2.5, 0.8333]"""
    tokens = mask.sum(-1).float()
    per_task = torch.zeros(len(weights)).index_add_(0, tasks, tokens)
    w = torch.tensor(weights, dtype=torch.float32)
    return w[tasks] * tokens.sum() / per_task[tasks].clamp(min=1)


def sft_scale(opt, mask, tasks, weights, sl):
    """task_scale over the rows that share the loss's normalizer (the batch, or with a fused
    optimizer the micro-batch, which is then its own step), for the rows of slice sl."""
    if getattr(opt, "fused", False):
        return task_scale(mask[sl], tasks[sl], weights)
    return task_scale(mask, tasks, weights)[sl]


def answer_line(record):
    return ANSWER_LINE[record["answer_type"]].format(record["answer"])


def step_by_step_examples(args, records, correct):
    """Two tasks per question (Hsieh et al., 2023): [label] Q -> the answer line (task 0), and
    [rationale] Q -> the teacher's reasoning (task 1) when the checker did not mark it wrong."""
    turns, tasks = [], []
    for r in records:
        turns.append([(LABEL_PREFIX + data.user_message(r), answer_line(r))])
        tasks.append(0)
        if correct(r):
            turns.append([(RATIONALE_PREFIX + data.user_message(r), r["reasoning"])])
            tasks.append(1)
    return turns, tasks, [1.0, args.rationale_weight]


def backward_pair(record):
    """(Q_b, its answer type, R_b) of a record, or None. RevThink's own fields first (its
    training files: the teacher's backward question, which ends "The correct answer is (X).",
    and its backward reasoning), kept only when R_b reaches X: as for every teacher text SFT
    imitates, a wrong one is left out (of the training files: 6% StrategyQA, 3% ARC, 2% ANLI,
    21% Date).
    Then the record's D_EI reverse probe answered correctly by the teacher, then the oracle's
    reverse probe (probes.reverse) on the synthetic world. Q_b never carries its own answer.
    Example: "If more people ... then Genghis Khan had _ descendants. (A) more (B) less. The
    correct answer is (A)." + R_b "... The answer is (A)" -> ("If ... (A) more (B) less.", "choice", R_b)"""
    bq, rb = record.get("backward_question"), record.get("backward_reasoning")
    gold = re.search(r"The correct answer is\W*\(([A-J])\)", bq or "")
    if rb and gold:
        q = bq[:gold.start()].strip()
        if f"({gold[1]})" in q and rewards.is_correct(rb, gold[1], "choice", q):
            return q, "choice", rb
    for p in record.get("probes") or []:
        if p["rule"] == "reverse" and p.get("teacher_reasoning") and p.get("reasoning_correct"):
            return p["question"], p["answer_type"], p["teacher_reasoning"]
    if record.get("problem") is not None:
        p = probes.reverse(record)[0]
        return p["question"], p["answer_type"], solve(p["spec"])[1]
    return None


def revthink_examples(args, records, correct):
    """Three tasks per question (Chen et al., 2024): Q -> R_f (task 0), Q -> Q_b (task 1), and
    Q_b -> R_b (task 2); the backward tasks only where the record has a backward pair."""
    turns, tasks, backward = [], [], 0
    for r in records:
        if correct(r):
            turns.append([(data.user_message(r), r["reasoning"])])
            tasks.append(0)
        pair = backward_pair(r)
        if pair:
            qb, kind, rb = pair
            # the task writes Q_b as the teacher did
            full_qb = (r.get("backward_question") or "").strip() or qb
            turns += [[(f"{r['question']}\n\n{BACKWARD_ASK}", full_qb)],
                      [(data.user_message({"question": qb, "answer_type": kind}), rb)]]
            tasks += [1, 2]
            backward += 1
    if not backward:
        raise ValueError(f"--method revthink: no backward question for any training record of {args.dataset} "
                         f"(RevThink's augmented files: strategyqa, arc_challenge, anli, date_understanding)")
    print(f"RevThink: {backward} of {len(records)} questions with a backward question and reasoning")
    return turns, tasks, [1.0, 1.0, 1.0]


def sft_data(args, train, dei, sft_examples, correct):
    """(dialogues, task id per dialogue, weight per task) of the method's SFT stage: train.py's
    sft_examples for the methods that warm up with it, else the method's own tasks."""
    records = dei if dei is not None else train
    if args.method == "step-by-step":
        turns, tasks, weights = step_by_step_examples(args, records, correct)
    elif args.method == "revthink":
        turns, tasks, weights = revthink_examples(args, records, correct)
    else:
        turns = sft_examples(args, train, dei)
        return turns, torch.zeros(len(turns), dtype=torch.long), [1.0]
    print(f"{LABELS[args.method]}: {len(turns)} examples in {len(weights)} tasks, weights {weights}")
    return turns, torch.tensor(tasks), weights

# -----------------------------------------------------------------------------
# on-policy distillation (GKD)


def token_log_softmax(model, ids, attn, mask, vocab):
    """log pi(. | ids[<t]) over the first `vocab` ids, at every position t with mask 1, at
    temperature 1: (N, vocab), N = mask[:, 1:].sum(), in mask order (position t is predicted
    from t - 1: sample.scored_hidden; only those rows go through the lm_head). Teacher
    and student are cut to the same `vocab`, the ids the student samples from (P12)."""
    h, _ = sample.scored_hidden(model, ids, attn, mask[:, 1:].bool())   # (N, H)
    return model.get_output_embeddings()(h)[:, :vocab].float().log_softmax(-1)


def generalized_jsd(logp, logq, beta):
    """GKD's divergence per token, P the teacher's next-token distribution, Q the student's
    (Agarwal et al., 2024, eq. 1; TRL's GKDTrainer.generalized_jsd_loss uses the same convention):

        D_beta(P || Q) = beta KL(P || M) + (1 - beta) KL(Q || M),   M = beta P + (1 - beta) Q
        beta = 0: KL(P || Q), forward KL;  beta = 1: KL(Q || P), reverse KL (the limits of D/beta, D/(1-beta))

    logp, logq: (N, V) log-probabilities. Returns (N,).
    Example: P = [0.5, 0.5], Q = [0.9, 0.1]
        beta 0: 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5108
        beta 1: 0.9 ln(0.9/0.5) + 0.1 ln(0.1/0.5) = 0.3681
        beta 0.5: M = [0.7, 0.3]; 0.5 * 0.0872 + 0.5 * 0.1163 = 0.1017"""
    kl = lambda a, b: (a.exp() * (a - b)).sum(-1)   # KL(A || B) from log-probabilities
    if beta == 0:
        return kl(logp, logq)
    if beta == 1:
        return kl(logq, logp)
    logm = torch.logaddexp(logp + math.log(beta), logq + math.log(1 - beta))
    return beta * kl(logp, logm) + (1 - beta) * kl(logq, logm)


def gkd_step(cfg, model, teacher, tok, opt, questions, step):
    """One on-policy distillation update, in place of exgrpo_step (train.py's rl_stage calls it):
    G samples of each question from the student at --temperature (exgrpo.rollout_and_score:
    R_base is logged, never trained on), the frozen teacher's distributions at every token the
    student sampled (prompt, template glue and padding masked), and the token mean of
    generalized_jsd over the batch (micro-batch exact), one optimizer step. The divergence is
    between the models' own distributions (temperature 1, as the paper's D(p_T || p_S) and
    TRL's GKDTrainer.compute_loss), whatever temperature the samples were drawn at."""
    t0 = time.time()
    device = next(model.parameters()).device
    dialogues, meta = ([[data.user_message(q)] for q in questions],
                       [(i, "plain") for i in range(len(questions))])
    roll, r_base = exgrpo.rollout_and_score(cfg, model, tok, questions, dialogues, meta)
    t_gen = time.time() - t0
    batch = sample.pack([[]] * len(roll.ids), roll.ids, tok.pad_token_id, roll.student_mask)
    # what it samples
    vocab = sample.vocab_limit_of(model, tok) or model.get_output_embeddings().weight.shape[0]
    n_tok = max(int(batch.loss_mask.sum()), 1)
    model.train()
    total, micro = 0.0, range(0, len(roll.ids), cfg.rl_micro)
    for s in micro:
        ids, attn, mask = (x[s:s + cfg.rl_micro].to(device) for x in (batch.ids, batch.attn, batch.loss_mask))
        with torch.no_grad():
            logp = token_log_softmax(teacher, ids, attn, mask, vocab)
        logq = token_log_softmax(model, ids, attn, mask, vocab)
        n_norm = optim.step_normalizer(opt, n_tok, max(int(mask.sum()), 1))   # fused: each micro-batch a step
        loss = generalized_jsd(logp, logq, cfg.gkd_beta).sum() / n_norm
        loss.backward()
        total += loss.item() * n_norm / n_tok
    gnorm = optim.finish_step(opt, model.parameters(), cfg.grad_clip, micro_steps=len(micro))
    return {"reward": r_base.mean().item(), "accuracy": r_base.mean().item(), "loss": total, "gkd": total,
            "grad_norm": gnorm, "student_tokens": n_tok, "gen_seconds": round(t_gen, 2),
            "step_seconds": round(time.time() - t0, 2)}
