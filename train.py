"""
The whole method, three stages: Explanatory Inversion -> SFT warm-up -> ExGRPO.

    python train.py                # embedded default: synthetic world, oracle teacher, SmolLM2-135M, CPU
    python train.py --student tiny                    # every stage end to end in under a minute
    python train.py --no-probes                       # plain GRPO on the original questions
    python train.py --method step-by-step             # a baseline: sft|step-by-step|revthink|gkd|grpo
                                                        (baselines.py)
    python train.py --resume runs/smollm2-135m-20261125-031500   # continue a killed run
    python train.py --student qwen2.5-7b --dataset strategyqa --G 8 --k 5 \
        --teacher-url http://localhost:8000/v1 --teacher-model gemini-1.5-pro

What happens (docs/design.md explains each choice):
  0. zero-shot: greedy accuracy of the untouched student on the evaluation splits
  1. EI: probes.py turns every training question into explanatory probes, the teacher
     answers them, two filters keep the useful ones -> D_EI (cached in the run folder)
  2. SFT warm-up: next-token loss on the teacher's answers (the original questions and the
     probes; prompts masked). The result is the reference policy pi_ref of stage 3.
  3. ExGRPO: per question, k probes drawn without replacement; Scenario A = all k probes
     then the question, Scenario B = the first k' < k probes then the question; G on-policy
     rollouts of each; R_base on the final answer, + delta for correct A rollouts when
     P_full > nu * P_partial (DSU); advantages r - mean over one group per question (A and B
     together); clipped surrogate on every student token + beta * KL(pi || pi_ref) + lambda *
     NLL of the teacher's probe answers. All of it is exgrpo.exgrpo_step, called once per step.
  4. the final table: accuracy per stage on each evaluation split, and each stage's time.

Design decisions and simplifications, stated once:
  - one optimizer step per rollout batch, so pi_old = pi_theta.detach() and the PPO ratio is 1 at
    the update (the clip matters with --ppo-epochs > 1). --optimizer bf16-fused steps in every
    backward instead (pi_old = the rollout policy; no global grad clip; optim.fused_notes);
  - the auxiliary SFT loss: one teacher-forced dialogue per question, Scenario A's k probes each
    followed by the teacher's answer (the paper: "given the probe and the dialogue so far");
  - one process, or several under torchrun (dist.py: FSDP2, questions split by process);
    checkpoints (save_pretrained + optimizer/RNG/step) make any stage resumable, and a run
    folder is never overwritten.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import baselines
import checks
import data
import decode
import dist
import evaluate
import exgrpo
import optim
import presets
import probes
import runs
import models
import sample
import teachers

# -----------------------------------------------------------------------------
# defaults: the CPU preset (SmolLM2-135M, 2 cores, about 11 minutes in all)

STUDENT = "smollm2-135m"
DATASET = "synth"
TRAIN_N = 160            # training questions (synthetic world; 240 made SFT alone 15 min here)
EVAL_N = 40              # questions per evaluation split
EVAL_MAX_NEW_TOKENS = 128
# stage 1: EI
TEACHER = teachers.TEACHER     # the synthetic world's oracle
RULES = None             # None = every rule of probes.RULES
TAU_HARD = probes.TAU_HARD     # difficulty filter threshold (only with --difficulty-student)
PROBES_PER_Q_SFT = 1     # teacher probe answers per question added to the SFT data
SFT_DIALOGUES = 0        # per question, teacher-written dialogues in stage 3's format (j probes, then Q)
# stage 2: SFT
SFT_EPOCHS = 1
SFT_BATCH = 8
SFT_MICRO = 8
SFT_LR = 1e-4
SFT_WARMUP = 3
# stage 3: ExGRPO (the defaults of docs/design.md, scaled down for the CPU where marked)
RL_STEPS = 4             # CPU preset: a demonstration; a GPU run wants hundreds
RL_QUESTIONS = 1         # questions per step (CPU preset; each brings 2 scenarios x G dialogues)
G = 4                    # rollouts per scenario (paper/ours: 8; CPU preset 4)
K = 2                    # probes in Scenario A (paper: 5; CPU preset 2)
DELTA = exgrpo.DELTA     # DSU bonus 0.5
NU = exgrpo.NU           # DSU margin 1.0: bonus iff P_full > nu * P_partial
BETA = exgrpo.BETA       # KL weight 0.04
CLIP_EPS = exgrpo.CLIP_EPS
AUX_WEIGHT = exgrpo.AUX_WEIGHT
AGG = "token"
ADV_GROUP = exgrpo.ADV_GROUP   # one advantage group per question: Scenario A and B together
ADV_NORM = exgrpo.ADV_NORM     # r - mean, no std division (the std divides the DSU bonus out)
EVAL_EVERY = 0           # RL steps between held-out evaluations (0 = none), on EVAL_EVERY_N questions
EVAL_EVERY_N = 200
RL_LR = 1e-5
RL_MICRO = 4              # rollouts per forward/backward (activation memory)
RL_MAX_NEW_TOKENS = 80   # per student turn
TEMPERATURE = 1.0
PPO_EPOCHS = 1
GRAD_CLIP = 1.0
SAVE_EVERY = 0           # optimizer steps between checkpoints (0: use SAVE_MINUTES)
SAVE_MINUTES = 5.0       # checkpoint a stage at least this often (a crash loses at most this much)
SEED = 0

STAGES = ("zero_shot", "ei", "sft", "eval_sft", "rl", "eval_rl")


# -----------------------------------------------------------------------------
# command line


def parser():
    """Every flag, grouped by stage; the defaults are the module-level names above (or the
    student's preset: presets.py), and `--student X --help` shows that preset's values."""
    ap = argparse.ArgumentParser(description="EI -> SFT warm-up -> ExGRPO (docs/design.md; "
                                             "README: how to run)",
                                 usage="python train.py [--student S] [flags]",
                                 formatter_class=checks.CompactHelp)
    g = ap.add_argument_group("run")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="run folder (default runs/<student>-<time>); never overwritten")
    g.add_argument("--resume", default=None, metavar="DIR",
                   help="continue a killed run from its last checkpoint")
    g.add_argument("--seed", type=int, default=SEED, help="model init, probe draws, sampling")
    g.add_argument("--save-every", type=int, default=SAVE_EVERY,
                   help="checkpoint every N steps (0 = by time)")
    g.add_argument("--save-minutes", type=float, default=SAVE_MINUTES, help="checkpoint at least this often")
    g.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot evaluation")
    g.add_argument("--report-to", default="none", choices=["none", "tensorboard", "wandb"],
                   help="mirror metrics.jsonl there (optional packages)")
    g = ap.add_argument_group("model and memory (the memory model: memory.py)")
    g.add_argument("--student", default=STUDENT,
                   help=f"an alias ({', '.join(models.STUDENTS)}), a folder or a hub id")
    g.add_argument("--dtype", default=None, choices=["bf16", "fp32", "fp16"],
                   help="default: bf16 on CUDA, fp32 on CPU")
    g.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    g.add_argument("--optimizer", default="master", choices=["master", "bf16", "bf16-fused"],
                   help="fp32 master weights | bf16 + stochastic rounding | bf16, stepped in backward")
    g.add_argument("--grad-checkpointing", action="store_true",
                   help="recompute each layer's activations in backward")
    g.add_argument("--rollout-batch", type=int, default=0,
                   help="rows per generate() call in rollouts (0 = all)")
    g.add_argument("--decode", default="auto", choices=["auto"] + list(decode.MODES),
                   help="auto: compiled on CUDA, lean on CPU")
    g = ap.add_argument_group("data")
    g.add_argument("--dataset", default=DATASET, help=f"one of {', '.join(data.DATASETS)}")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="real datasets (else $EXGRPO_DATA_DIR, ~/.cache/exgrpo/data); "
                        "python -m data.download")
    g.add_argument("--train-n", type=int, default=TRAIN_N, help="training questions (0 = all)")
    g.add_argument("--data-seed", type=int, default=None,
                   help="picks the training questions (default: --seed)")
    g.add_argument("--level", type=int, default=None, help="synthetic world difficulty, 1-3 (data/synth.py)")
    g.add_argument("--data-fraction", type=float, default=1.0,
                   help="use this fraction of the training questions")
    g.add_argument("--eval-n", type=int, default=EVAL_N, help="questions per evaluation split")
    g.add_argument("--eval-max-new-tokens", type=int, default=EVAL_MAX_NEW_TOKENS,
                   help="answer budget in evaluation")
    g = ap.add_argument_group("stage 1: explanatory inversion (probes.py, teachers.py)")
    teachers.add_arguments(g, "oracle | hf:<path-or-id> | none (skip EI); an endpoint: --teacher-url",
                           TEACHER)
    g.add_argument("--probe-writer", default=None, choices=["template", "teacher"],
                   help="default: teacher on text with a real teacher, else template")
    g.add_argument("--rules", default=RULES, help="comma-separated subset of the probe rules (default: all)")
    g.add_argument("--tau-hard", type=float, default=TAU_HARD,
                   help="difficulty filter: keep Q if solved >= this")
    g.add_argument("--difficulty-student", default="none",
                   help="student for the difficulty filter (none = skip)")
    g.add_argument("--sft-probes", type=int, default=PROBES_PER_Q_SFT,
                   help="probe answers per question in SFT")
    g.add_argument("--sft-dialogues", type=int, default=SFT_DIALOGUES,
                   help="SFT dialogues per question in stage 3's format (1..k probes, then Q)")
    g = ap.add_argument_group("stage 2: SFT warm-up")
    g.add_argument("--no-sft", action="store_true", help="RL from a cold start (the paper's ablation)")
    g.add_argument("--sft-from", default=None, metavar="DIR",
                   help="reuse a finished warm-up (runs/x/sft/final) as the start and pi_ref")
    g.add_argument("--sft-epochs", type=int, default=SFT_EPOCHS, help="passes over the SFT data")
    g.add_argument("--sft-batch", type=int, default=SFT_BATCH, help="examples per optimizer step")
    g.add_argument("--sft-micro", type=int, default=SFT_MICRO, help="examples per forward/backward")
    g.add_argument("--sft-lr", type=float, default=SFT_LR, help="peak learning rate (cosine, after warm-up)")
    g.add_argument("--sft-warmup", type=int, default=SFT_WARMUP, help="linear warm-up steps")
    g = ap.add_argument_group("stage 3: ExGRPO (exgrpo.py)")
    g.add_argument("--no-rl", action="store_true", help="stop after SFT")
    g.add_argument("--no-probes", action="store_true", help="plain GRPO on the original questions")
    g.add_argument("--no-dsu", action="store_true", help="no Dialogue Structure Utility bonus")
    g.add_argument("--no-aux", action="store_true",
                   help="no auxiliary SFT loss on the teacher's probe answers")
    g.add_argument("--rl-steps", type=int, default=RL_STEPS, help="optimizer steps")
    g.add_argument("--rl-questions", type=int, default=RL_QUESTIONS, help="questions per step")
    g.add_argument("--G", type=int, default=G, help="rollouts per scenario")
    g.add_argument("--k", type=int, default=K, help="probes in Scenario A")
    g.add_argument("--k-partial", type=int, default=None,
                   help="probes in Scenario B (default: uniform in [1, k-1])")
    g.add_argument("--delta", type=float, default=DELTA, help="DSU bonus on correct Scenario A rollouts")
    g.add_argument("--nu", type=float, default=NU,
                   help="DSU margin: the bonus fires iff P_full > nu * P_partial")
    g.add_argument("--beta", type=float, default=BETA, help="weight of KL(pi || pi_ref)")
    g.add_argument("--clip-eps", type=float, default=CLIP_EPS, help="PPO clip range")
    g.add_argument("--aux-weight", type=float, default=AUX_WEIGHT,
                   help="lambda, weight of the auxiliary SFT loss")
    g.add_argument("--agg", default=AGG, choices=exgrpo.AGG_MODES,
                   help="token-mean, sequence-mean or fixed budget")
    g.add_argument("--adv-group", default=ADV_GROUP, choices=["question", "scenario"],
                   help="one advantage group per question (A and B) or per scenario")
    g.add_argument("--adv-norm", default=ADV_NORM, choices=["none", "std"],
                   help="r - mean, or / std too (cancels the DSU bonus: docs/design.md P16)")
    g.add_argument("--rl-lr", type=float, default=RL_LR, help="learning rate (constant)")
    g.add_argument("--rl-micro", type=int, default=RL_MICRO, help="rollouts per forward/backward")
    g.add_argument("--max-new-tokens", type=int, default=RL_MAX_NEW_TOKENS, help="per student turn")
    g.add_argument("--temperature", type=float, default=TEMPERATURE,
                   help="sampling (and scoring) temperature")
    g.add_argument("--ppo-epochs", type=int, default=PPO_EPOCHS, help="updates per rollout batch")
    g.add_argument("--grad-clip", type=float, default=GRAD_CLIP, help="global gradient norm (0 = none)")
    g.add_argument("--eval-every", type=int, default=EVAL_EVERY,
                   help="held-out evaluation every N steps (0 = never)")
    g.add_argument("--eval-every-n", type=int, default=EVAL_EVERY_N,
                   help="... on this many questions per split")
    return baselines.add_flags(ap)


def resumed_defaults(ap, argv):
    """--resume RUN: the run's saved flags become the parser's defaults (over the preset's), so that
    every check reads the run's own values: --resume RUN --teacher-url NEW keeps the run's
    --teacher-model, and --sft-from is checked against the run's --student."""
    known, _ = ap.parse_known_args(argv)
    saved = runs.read_config(known.resume)[0] if known.resume else None
    if saved:
        ap.set_defaults(**{a.dest: saved[a.dest] for a in ap._actions
                           if a.dest in saved and a.dest != "resume"})


def get_args(argv=None):
    """Parse and check every flag before anything is loaded or written (a bad value: one line, exit 2)."""
    ap = checks.one_line(presets.add_flags(parser()))   # argparse's own errors: one line, no usage block
    # presets.py: the student's preset (tiny, cpu, gpu-7b) as defaults; flags still win
    presets.apply(ap, argv)
    resumed_defaults(ap, argv)
    args = ap.parse_args(argv)
    checks.train_flags(ap, args)   # every flag: ranges, paths, student, k and k', teacher (checks.py)
    if args.teacher != "none":
        checks.raises(ap, "--rules", args.rules, probes.parse_rules)
    if args.dataset != "synth":   # now that the flags are sound: budgets from the dataset's rationales
        presets.apply(ap, argv, read_data=True)
        resumed_defaults(ap, argv)
        args = ap.parse_args(argv)
    # --method: its flags, and what it implies (sft: --no-rl, grpo: --no-probes)
    baselines.apply(ap, args)
    if args.resume:   # a resumed run keeps its flags: one written that differs is refused, not dropped
        saved, _ = runs.read_config(args.resume)   # checks.train_flags has read it already
        for key in sorted(presets.GIVEN - {"resume", "out", "dry_run", "force"} - runs.RESUME_MAY_CHANGE):
            if key in saved and getattr(args, key) != saved[key]:
                ap.error(f"--{key.replace('_', '-')} {getattr(args, key)} differs from the resumed run's "
                         f"{saved[key]} ({args.resume}/config.json); drop the flag or start a new run")
    if args.teacher_url and args.teacher == teachers.TEACHER:
        args.teacher = "openai"   # the endpoint answers, not the oracle (the start-up block says so)
    if args.teacher == "none":
        args.no_probes = True
    args.probe_writer = args.probe_writer or probes.default_probe_writer(args.dataset, args.teacher,
                                                                         args.teacher_url)
    return args

# -----------------------------------------------------------------------------
# data


def load_data(args):
    """Training records, and the evaluation splits {name: records}. The synthetic test splits are
    fixed (data/synth.py EVAL_SEED): --seed and --data-seed pick the training questions only."""
    seed = args.seed if args.data_seed is None else args.data_seed
    if args.dataset == "synth":
        train = data.load("synth", "train", limit=args.train_n or None, seed=seed, level=args.level)
    else:   # a real dataset: the first --train-n of one seeded order (more questions: a superset)
        train = data.load(args.dataset, "train", data_dir=args.data_dir)
        train = random.Random(seed).sample(train, len(train))[:args.train_n or None]
    if args.data_fraction < 1:
        train = random.Random(seed).sample(train, max(1, int(len(train) * args.data_fraction)))
    if not train:
        raise ValueError(f"dataset {args.dataset!r} has zero usable training rows")
    if args.dataset == "synth":
        evals = {s: data.load("synth", s, limit=args.eval_n, level=args.level)
                 for s in ("test_id", "test_ood")}
    else:
        evals = {args.dataset: data.load(args.dataset, "test", limit=args.eval_n, data_dir=args.data_dir)}
    return train, evals


def build_dei(args, run, train):
    """Stage 1: D_EI from the training records (probes.py), kept in the run folder; the teacher's
    answers go to the cache shared by every run and probes.py (--teacher-cache)."""
    out = run.path / "dei.jsonl"
    teacher = teachers.from_args(args)
    dei, stats = probes.build_dei(train, teacher, rules=args.rules, tau_hard=args.tau_hard,
                                  student=args.difficulty_student, probe_writer=args.probe_writer,
                                  seed=args.seed)
    probes.save_dei(out, dei)
    runs.write_atomic(run.path / "dei.stats.json", json.dumps(stats, indent=2))
    print(probes.format_table(stats))
    return probes.load_dei(out)


# -----------------------------------------------------------------------------
# stage 2: SFT warm-up


def correct_reasoning(record, key="reasoning"):
    """Teacher reasoning that SFT may imitate: present, and not marked wrong by the answer checker
    (EI sets reasoning_correct on every record and probe; a dataset's own reasoning has none)."""
    return bool(record.get(key)) and record.get("reasoning_correct", True) is not False


def sft_examples(args, train, dei):
    """(user, assistant) dialogues: each question with the teacher's reasoning, plus up to
    --sft-probes probes of it with the teacher's answers, plus --sft-dialogues multi-turn ones
    (1..k RL probes, then Q); reasoning whose answer is wrong is skipped (and counted). Loss
    only on the teacher's tokens."""
    rng = random.Random(args.seed)
    pairs, wrong = [], 0
    for r in dei if dei is not None else train:
        if correct_reasoning(r):
            pairs.append([(data.user_message(r), r["reasoning"])])
        wrong += bool(r.get("reasoning")) and not correct_reasoning(r)
        ps = [p for p in r.get("probes", []) if p.get("kept") and p.get("teacher_reasoning")]
        wrong += sum(not correct_reasoning(p, "teacher_reasoning") for p in ps)
        ps = [p for p in ps if correct_reasoning(p, "teacher_reasoning")]
        for p in rng.sample(ps, min(args.sft_probes, len(ps))):
            pairs.append([(exgrpo.probe_message(p), p["teacher_reasoning"])])
        # stage 3's dialogue format: a student that never saw a history loses the thread in one
        ps = [p for p in probes.rl_probes(r) if correct_reasoning(p, "teacher_reasoning")]
        for _ in range(args.sft_dialogues if ps and correct_reasoning(r) else 0):
            drawn = rng.sample(ps, rng.randint(1, min(args.k, len(ps))))
            pairs.append([(exgrpo.probe_message(p), p["teacher_reasoning"]) for p in drawn]
                         + [(data.user_message(r), r["reasoning"])])
    if not pairs:
        raise ValueError("no SFT examples: the training records carry no correct teacher reasoning")
    print(f"SFT: {len(pairs)} examples; {wrong} teacher answers skipped as wrong")
    return pairs


def length_grouped_batches(lengths, batch_size, seed, window=8):
    """One epoch of batches: shuffle, sort each window of `window` batches by length, cut, then
    shuffle the batches. Each example once; rows of a batch have similar lengths, so less of the
    compute goes to padding (about 20% less on the default SFT set), and no batch is sorted.

    Tiny example: lengths [5, 50, 6, 49], batch_size 2 -> [[1, 3], [0, 2]] or [[0, 2], [1, 3]]
    (never a 5 padded up to 50)."""
    rng = random.Random(seed)
    order = rng.sample(range(len(lengths)), len(lengths))
    span = batch_size * window
    batches = []
    for s in range(0, len(order), span):
        chunk = sorted(order[s:s + span], key=lambda j: lengths[j])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def sft_step(args, model, tok, opt, tf, idx, tasks, weights):
    """One SFT optimizer step on the teacher-forced rows tf[idx]: the token mean of the NLL of the
    teacher's tokens over the batch (micro-batch exact; several processes: each its share of the
    rows, normalized by every process's tokens). Returns (loss, tokens, gradient norm)."""
    device = next(model.parameters()).device
    mine = dist.share(idx)   # this process's rows of the batch (all of them, alone)
    rows = [tf[j] for j in mine or idx[:1]]   # none left: one row, weight 0, for the collectives
    batch = sample.pack([[]] * len(rows), [r[0] for r in rows], tok.pad_token_id, [r[1] for r in rows])
    (n_tok,) = dist.total(batch.loss_mask.sum() if mine else 0)   # every process's tokens
    n_tok = int(n_tok)
    fused = getattr(opt, "fused", False)
    starts = list(range(0, len(rows), args.sft_micro)) if mine else []
    n_real = len(starts)   # several processes run as many micro-batches each (weight 0 beyond)
    starts += [0] * (dist.most(n_real) - n_real)
    loss_total = 0.0
    for m, s in enumerate(starts):
        sl = slice(s, s + args.sft_micro)
        part = (x[sl].to(device) for x in (batch.ids, batch.attn, batch.loss_mask))   # (b, T) each
        lp = sample.token_logprobs(model, *part, vocab_limit=sample.vocab_limit_of(model, tok),
                                   share_prefix=not fused)
        scale = baselines.sft_scale(opt, batch.loss_mask, tasks[mine or idx[:1]], weights, sl)   # (b,)
        lp = lp * scale[:, None].to(device)
        n_norm = int(batch.loss_mask[sl].sum()) if fused else n_tok   # fused: each micro-batch its own step
        loss = exgrpo.aggregate(exgrpo.aux_sft_nll(lp), batch.loss_mask[sl].to(device), "token",
                                num_tokens=n_norm)
        if m >= n_real:
            (loss * 0.0).backward()
            continue
        loss.backward()
        # fused: each micro-batch was normalized on its own -> weight it by its token share
        loss_total += loss.item() * (n_norm / max(n_tok, 1))
    (loss_total,) = dist.total(loss_total)
    return loss_total, n_tok, optim.finish_step(opt, model.parameters(), args.grad_clip)


def sft_stage(args, run, model, tok, train, dei):
    """Stage 2: --sft-epochs over the SFT data (sft_examples, or the method's tasks), length-grouped
    batches, cosine learning rate; checkpointed, resumable; <run>/sft/final at the end."""
    turns, tasks, weights = baselines.sft_data(args, train, dei, sft_examples, correct_reasoning)
    tf = [sample.teacher_forced(tok, t) for t in turns]
    lengths = [len(ids) for ids, _ in tf]
    steps_per_epoch = (len(tf) + args.sft_batch - 1) // args.sft_batch
    total = steps_per_epoch * args.sft_epochs
    opt = optim.make_optimizer(model, args.sft_lr, args.optimizer)
    start = runs.resume_trainer(run, "sft", model, opt)
    model.train()
    bar = tqdm(range(start, total), desc="SFT", initial=start, total=total, disable=not dist.is_main())
    for step in bar:
        epoch, i = divmod(step, steps_per_epoch)
        batches = length_grouped_batches(lengths, args.sft_batch, args.seed * 1000 + epoch)  # same on resume
        lr = optim.cosine_lr(step, total, args.sft_lr, args.sft_warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        t0 = time.time()
        loss, n_tok, gnorm = sft_step(args, model, tok, opt, tf, batches[i], tasks, weights)
        run.log({"stage": "sft", "step": step, "loss": loss, "lr": lr, "grad_norm": gnorm,
                 "tokens": n_tok, "step_seconds": round(time.time() - t0, 3)})
        bar.set_postfix(loss=f"{loss:.3f}")
        if runs.due(args, step, total):
            runs.save_trainer(run, "sft", model, tok, opt, step + 1)
    run.save_final("sft", model, tok)
    if hasattr(opt, "remove_hooks"):   # a fused optimizer steps inside backward until unhooked
        opt.remove_hooks()

# -----------------------------------------------------------------------------
# stage 3: ExGRPO


def rl_stage(args, run, model, ref, tok, pool, evals):
    """Stage 3: --rl-steps calls of exgrpo.exgrpo_step, each on --rl-questions questions drawn
    from D_EI; with --eval-every N, greedy accuracy on a fixed slice of each split every N steps."""
    opt = optim.make_optimizer(model, args.rl_lr, args.optimizer)
    start = runs.resume_trainer(run, "rl", model, opt)
    held = {n: r[:args.eval_every_n] for n, r in evals.items()}

    def held_out(step):
        accs = eval_all(args, run, f"rl/eval_step{step}", model, tok, held, quiet=True, resume=False)
        run.log({"stage": "rl_eval", "step": step, **accs})
        return accs

    bar = tqdm(range(start, args.rl_steps), desc="GRPO" if args.no_probes else baselines.LABELS[args.method],
               initial=start, total=args.rl_steps, disable=not dist.is_main())
    for step in bar:
        if args.eval_every and step % args.eval_every == 0:
            held_out(step)
        questions = random.Random(args.seed * 7 + step).sample(pool, min(args.rl_questions, len(pool)))
        row = (baselines.gkd_step if args.method == "gkd" else exgrpo.exgrpo_step)(args, model, ref, tok, opt,
                                                                                   questions, step)
        run.log({"stage": "rl", "step": step, **row})
        bar.set_postfix(reward=f"{row['reward']:.2f}", kl=f"{row.get('kl', 0):.4f}")
        if runs.due(args, step, args.rl_steps):
            runs.save_trainer(run, "rl", model, tok, opt, step + 1)
    if args.eval_every:
        held_out(args.rl_steps)
    run.save_final("rl", model, tok)

# -----------------------------------------------------------------------------
# main


def eval_all(args, run, stage, model, tok, evals, quiet=False, resume=True):
    """Greedy accuracy on each evaluation split. Several processes: each answers its share of the
    questions (its own predictions file), with the whole weights gathered; the counts add up.
    resume: the answers a killed attempt of this stage wrote are kept (the same weights wrote them:
    a stage's final model); the held-out evals inside RL start anew (their step is redone)."""
    res, part = {}, f".rank{dist.rank()}" if dist.on() else ""
    for name, records in evals.items():
        with dist.gathered(model):
            out = evaluate.evaluate(model, tok, dist.share(records), max_new_tokens=args.eval_max_new_tokens,
                                    predictions_path=run.path / stage / f"predictions_{name}{part}.jsonl",
                                    desc=f"{stage}/{name}", prompt=baselines.eval_prompt(args), resume=resume)
        correct, n = (int(x) for x in dist.total(out["correct"], out["n"]))
        res[name] = correct / n if n else 0.0
        if not quiet and dist.is_main():
            print(f"{stage:>10} {name:>10}: {100 * res[name]:5.1f}% ± "
                  f"{100 * evaluate.std_error(res[name], n):.1f} ({correct}/{n})")
    return res


def dry_run(args):
    """--dry-run, after the start-up block: what stage 1 will ask the teacher; then exit."""
    try:
        print(probes.ei_plan(args, lambda: load_data(args)))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    sys.exit(0)


def on_rank0(fn):
    """fn() on rank 0 alone (or the one process); when it exits, every process exits with it
    (under torchrun the others would otherwise wait for it forever)."""
    code = None
    if dist.is_main():
        try:
            fn()
        except SystemExit as e:
            code = 0 if e.code is None else e.code
            if not dist.on():
                raise
    code = dist.broadcast(code)
    if code is not None:
        sys.exit(code if dist.is_main() else int(code != 0))


def start_up(argv):
    """Flags, the run folder, the start-up block and memory check, the endpoint check: (args, path).
    Under torchrun, rank 0 decides and every process follows."""
    args = get_args(argv)
    anew = presets.GIVEN & runs.RESUME_MAY_CHANGE   # a resume may move its device or teacher address
    args, path = dist.broadcast(runs.resolve_run(args, anew) if dist.is_main() else None) if dist.on() \
        else runs.resolve_run(args, anew)
    if dist.on() and (problem := checks.several_processes(args)):   # on the run's own flags
        on_rank0(lambda: sys.exit(f"train.py: error: {problem}"))

    def checks_on_rank0():
        presets.start(args)   # the start-up block and the memory check (exits when the run will not fit)
        if args.dry_run:      # ... and what stage 1 will ask the teacher, then stop
            dry_run(args)
        state = path / "state.json"
        ei_done = "ei" in json.loads(state.read_text())["done"] if state.exists() else False
        if not ei_done and (problem := teachers.check_endpoint(args)):   # seconds, not after a model load
            sys.exit(f"error: {problem}")
    on_rank0(checks_on_rank0)
    return args, path


def load_models(args):
    """(model, tok, the GKD teacher or None); several processes: the model sharded (dist.shard)."""
    torch.manual_seed(args.seed)
    model, tok = models.load_student(args.student, "fp32" if dist.on() else args.dtype, args.device,
                                     seed=args.seed, random_init=args.random_init)
    lm_teacher = baselines.lm_teacher(args, tok)   # --method gkd: the teacher LM (same tokenizer), else None
    if args.grad_checkpointing:   # training only: generation runs in eval() and keeps its KV cache
        model.activation_checkpointing_enable({"use_reentrant": False})
    return dist.shard(model), tok, lm_teacher


def reference(args, ref_path):
    """pi_ref: the warm-up (or, from a cold start, the untouched student), frozen; None at beta 0."""
    if not args.beta:
        return None
    if args.no_sft:
        ref, _ = models.load_student(args.student, "fp32" if dist.on() else args.dtype, args.device,
                                     seed=args.seed, random_init=args.random_init)
    else:
        ref, _ = models.load_student(str(ref_path), "fp32" if dist.on() else args.dtype, args.device)
    return dist.shard(ref.eval().requires_grad_(False))


def main(argv=None):
    dist.init()   # under torchrun: join the process group (one process: nothing)
    args, path = start_up(argv)
    try:  # bad input fails here, before the run folder is touched
        train, evals = load_data(args)
        model, tok, lm_teacher = load_models(args)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    if args.optimizer == "bf16-fused" and dist.is_main():
        optim.fused_notes(args)
    run = runs.open_run(args, path) if dist.is_main() else None   # rank 0 writes the folder ...
    dist.barrier()
    run = run or runs.Run(path)                                     # ... the others read it
    device = next(model.parameters()).device
    decode.set_mode(device.type, args.decode)
    if dist.is_main():
        print(f"run folder {run.path}; student {args.student} on {device} x {dist.world()}; "
              f"{len(train)} training questions")
    timing = run.state.setdefault("timing", {})

    def stage(name, fn):
        if run.finished(name):
            return run.state["done"][name]
        run.start_clock()
        result = fn()
        timing[name] = round(run.seconds(), 1)   # with a resumed stage's earlier attempts (runs.py)
        run.finish(name, result)
        return result

    if not args.no_zero_shot:
        stage("zero_shot", lambda: eval_all(args, run, "zero_shot", model, tok, evals))
    dei = None
    if args.teacher != "none":   # --teacher none: no EI, SFT on the dataset's own reasoning
        def ei():   # rank 0 alone; a teacher that fails after its retries stops the run (the cache keeps
            try:    # what arrived)
                stage("ei", lambda: {"kept": len(build_dei(args, run, train))})
            except Exception as e:
                sys.exit(f"error in stage 1 (EI): {e}")
        on_rank0(ei)
        run.state["done"]["ei"] = dist.broadcast(run.state["done"].get("ei"))
        dei = probes.load_dei(run.path / "dei.jsonl")
        if not dei:
            sys.exit("error: no question survived the EI filters (see dei.stats.json)")
        if not args.no_rl and not args.no_probes and dist.is_main() \
                and (note := exgrpo.probe_coverage_note(dei, args.rules)):
            print(note)
    ref_path = Path(args.sft_from) if args.sft_from else run.path / "sft" / "final"
    if not args.no_sft:
        if not args.sft_from:
            if not run.finished("sft"):
                stage("sft", lambda: sft_stage(args, run, model, tok, train, dei) or {"done": True})
        runs.load_weights(model, ref_path)
        if not args.sft_from:
            stage("eval_sft", lambda: eval_all(args, run, "sft", model, tok, evals))
    if not args.no_rl:
        ref = lm_teacher if lm_teacher is not None else reference(args, ref_path)   # gkd: the teacher
        pool = dei if dei is not None else train
        if not run.finished("rl"):
            stage("rl", lambda: rl_stage(args, run, model, ref, tok, pool, evals) or {"done": True})
        runs.load_weights(model, run.path / "rl" / "final")
        del ref
        stage("eval_rl", lambda: eval_all(args, run, "rl", model, tok, evals))
    if dist.is_main():
        report(args, run, evals)
    run.close()
    dist.close()


def report(args, run, evals):
    done, timing = run.state["done"], run.state.get("timing", {})
    names = list(evals)
    rows = [("zero-shot", "zero_shot", "zero_shot"), (baselines.sft_label(args), "eval_sft", "sft"),
            ("GRPO" if args.no_probes else baselines.LABELS[args.method], "eval_rl", "rl")]
    table = []
    lines = ["| stage | " + " | ".join(names) + " | train time (s) | eval time (s) |",
             "|---|" + "---|" * (len(names) + 2)]
    for label, key, train_key in rows:
        if key not in done and not (key == "zero_shot" and "zero_shot" in done):
            continue
        accs = done[key]
        train_s = timing.get(train_key, 0.0) if train_key != "zero_shot" else 0.0
        if train_key == "sft":
            train_s += timing.get("ei", 0.0)
        lines.append(f"| {label} | " + " | ".join(f"{100 * accs[n]:.1f}" for n in names) +
                     f" | {train_s:.0f} | {timing.get(key, 0.0):.0f} |")
        table.append({"stage": label, **{n: accs[n] for n in names}})
    text = "\n".join(lines)
    print("\n" + text + f"\n\nEI took {timing.get('ei', 0):.0f}s; accuracy in % on {args.eval_n} questions "
          f"per split; run folder {run.path}")
    runs.write_atomic(run.path / "results.md", text + "\n")
    # last, and whole or not at all: its presence marks the run finished
    runs.write_atomic(run.path / "results.json", json.dumps({"table": table, "timing": timing}, indent=2))


if __name__ == "__main__":
    dist.run(main)   # under torchrun: an error on one process stops them all, in one line
