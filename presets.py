"""
Presets by student and device, the start-up block, the memory check and --dry-run: plumbing
that train.py calls before it loads anything (the method is not here).

    python train.py --dry-run                            # the CPU preset: what would run, then exit
    python train.py --student gemma-7b --dry-run         # the GPU recipe + the memory model's estimate
    python train.py --student gemma-7b --G 32 --dry-run  # a flag beats the preset (this one does not fit)
    python train.py --student google/gemma-7b-it --dry-run   # a hub id or a folder: planned from
                                                               its config.json

Presets (a flag written on the command line always wins over them):
  cpu     train.py's own defaults: the synthetic world, SmolLM2-135M, about 11 minutes on 2 cores
  tiny    --student tiny: every stage end to end in under a minute (smoke tests)
  gpu-7b  a student of GPU_PARAMS or more parameters by its config.json (gemma-7b, qwen2.5-7b,
          google/gemma-7b-it, a folder of 7B weights): the paper's recipe on one GPU (k = 5, G = 8,
          SFT 3 epochs, 300 ExGRPO steps, bf16) on the synthetic world at level 3 with its oracle,
          and the first memory scheme of SCHEMES that the memory model (memory.py) says fits
A student whose architecture nothing describes (not an alias, no config.json, a hub id not in
the local hub cache and no network) gets the cpu preset, and the start-up block says why.
A configuration it says will not fit stops with one line naming the largest G, turn length or
SFT micro-batch that fits (--force runs it anyway). Without a GPU a 7B student stops at once.
"""

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

import data
import dist
import memory
import models

ROOT = Path(__file__).resolve().parent

# -----------------------------------------------------------------------------
# presets

GPU_PARAMS = 2e9         # a student this large (by its architecture) gets the gpu-7b preset
RL_QUESTIONS_CAP = 32    # the most questions a step the gpu-7b preset rolls out, memory allowing: on the
                         # synthetic world (the micro preset) 1-8 questions a step were too noisy to
                         # learn, 32 learned
PRESETS = {
    "cpu": {},
    "tiny": dict(train_n=16, eval_n=8, eval_max_new_tokens=16, sft_batch=8, rl_steps=2,
                 max_new_tokens=24, save_every=1),
    # the synthetic world's own 0.4M student, sized for the ablation on 2 CPU cores (bench/ablation.py);
    # RL: 32 questions a step (with 4 held-out accuracy fell, with 8 it did not move), 300 steps;
    # micro-batches of 32 length-sorted rollouts (a GRPO step 5.6 s -> 4.2 s, ExGRPO's update 12 -> 7 s);
    # rollouts generated 64 at a time, not all at once: smaller KV caches to reindex as rows finish
    # (an ExGRPO step from the dialogue warm-up: 1.16x fewer CPU seconds, generation 1.4x, one repeat;
    # 1.04x in a wall-clock A/B beside other runs: bench/results/step-ab-2026-12-07/)
    "micro": dict(level=1, train_n=4000, eval_n=500, sft_epochs=3, sft_batch=32, sft_micro=32, sft_lr=2e-3,
                  sft_warmup=20, rl_steps=300, rl_questions=32, G=8, k=3, max_new_tokens=64, rl_lr=1e-4,
                  rl_micro=32, rollout_batch=64, eval_every=25, eval_every_n=200),
    # rl_questions=1 is the floor: questions_that_fit sizes it (up to RL_QUESTIONS_CAP) to the device
    "gpu-7b": dict(level=3, train_n=2000, eval_n=200, eval_max_new_tokens=256, dtype="bf16",
                   sft_epochs=3, sft_batch=32, sft_micro=8, sft_lr=1e-5, sft_warmup=20,
                   rl_steps=300, rl_questions=1, G=8, k=5, max_new_tokens=128, rl_lr=1e-6,
                   eval_every=50, eval_every_n=100, save_minutes=15.0),
}
# memory schemes of the gpu-7b preset, best first (fp32 master weights, then one optimizer step per
# rollout batch); the first that the memory model says fits within SCHEME_MARGIN wins (none: the last).
# "G": rollout_batch = the run's G
SCHEMES = [
    ("fp32 master weights", dict(optimizer="master", grad_checkpointing=True, rl_micro=4, rollout_batch=0)),
    ("bf16 AdamW", dict(optimizer="bf16", grad_checkpointing=True, rl_micro=4, rollout_batch=0)),
    ("bf16 AdamW fused into backward", dict(optimizer="bf16-fused", grad_checkpointing=True, rl_micro=1,
                                            rollout_batch=0)),
    ("bf16 AdamW fused, rollouts by G", dict(optimizer="bf16-fused", grad_checkpointing=True, rl_micro=1,
                                             rollout_batch="G")),
]
SCHEME_MARGIN = 0.95     # a preset's scheme leaves 5% for allocator fragmentation (the start-up check
                         # uses 100%)
SMALL_BYTES = 50e6       # more questions a step that add at most this to the peak are free (the held
                         # log-probs of 32 questions: 5.9 MB)
USER_TURN_TOKENS = 112   # one user turn with the template's glue (synthetic level 3: mean 100, max 142)
SFT_TOKENS = 384         # the longest SFT example budgeted (question + teacher answer: about 200)
CPU_RESERVE = 2e9        # Python, torch and transformers themselves, on a CPU run

LAYOUT = []              # (group title, [dests]) of train.py's parser, recorded by apply()
GIVEN = set()            # the flags written on the command line, recorded by apply()


def choose(student):
    """(the preset's name, why) for a student: its own preset for tiny and micro; gpu-7b for a
    student of GPU_PARAMS or more by its architecture (alias, config.json of a folder or a hub
    id), on any device (on a CPU it is only ever shown, by --dry-run); cpu otherwise."""
    if student in ("tiny", "micro"):
        return student, "its own"
    arch = models.architecture(student)
    if arch is None:
        return "cpu", (f"no architecture known for {student}: not an alias, no config.json in a folder, "
                       f"not in the local hub cache")
    n = memory.param_count(arch)
    return ("gpu-7b" if n >= GPU_PARAMS else "cpu"), (f"{n / 1e9:.2f}B parameters ({arch['arch']}, "
                                                      f"{arch['layers']} layers)")


def given(ap, argv=None):
    """The dests of the flags written on the command line, whatever their values."""
    saved = [(a, a.default) for a in ap._actions], dict(ap._defaults)
    try:
        for a in ap._actions:
            a.default = argparse.SUPPRESS
        ap._defaults.clear()
        ns, _ = ap.parse_known_args(argv)
    finally:
        for a, d in saved[0]:
            a.default = d
        ap._defaults.update(saved[1])
    return set(vars(ns))


def apply(ap, argv=None, read_data=False):
    """Make the preset of the student the parser's defaults; returns its name. Flags on the
    command line still win, and the memory scheme is chosen with them in place. read_data (once
    the flags are checked): with a real --dataset, the budgets from its rationales too."""
    argv = sys.argv[1:] if argv is None else list(argv)
    argv = [a for a in argv if a not in ("-h", "--help")]   # so that --help prints the preset's values
    pre, _ = ap.parse_known_args(argv)
    name, why = choose(pre.student)
    ap.epilog = f"The defaults shown are the {name} preset's, for --student {pre.student} ({why})."
    LAYOUT[:] = [(g.title, [a.dest for a in g._group_actions if a.dest != "help"]) for g in ap._action_groups]
    GIVEN.clear()
    GIVEN.update(given(ap, argv))
    ap.set_defaults(preset=name, preset_why=why, scheme=None, budget_why=None, questions_why=None,
                    **PRESETS[name])
    if read_data and pre.dataset != "synth":
        budgets = data_budgets(pre.student, pre.dataset, pre.data_dir)
        if budgets is not None:   # the teacher's budget for every preset (it keys the shared cache) ...
            turn, teacher, words = budgets
            ap.set_defaults(teacher_max_tokens=teacher, budget_why=words)
            if name in ("cpu", "gpu-7b"):   # ... the turn's not for tiny and micro (smoke tests, their own)
                ap.set_defaults(max_new_tokens=turn,
                                eval_max_new_tokens=max(turn, ap.get_default("eval_max_new_tokens")))
    if name == "gpu-7b" and (getattr(pre, "gpus", 0) or dist.world()) > 1:   # several GPUs: FSDP2
        n = getattr(pre, "gpus", 0) or dist.world()
        ap.set_defaults(scheme=f"FSDP2 over {n} GPUs (sharded fp32 weights and AdamW, bf16 compute)",
                        optimizer="master", grad_checkpointing=True, rl_micro=4, rollout_batch=0)
    elif name == "gpu-7b":
        budget = device_budget(device_of(pre.device), name)[0]
        G = ap.parse_known_args(argv)[0].G
        for label, values in SCHEMES:
            ap.set_defaults(scheme=label, **{k: G if v == "G" else v for k, v in values.items()})
            est = estimate(bounded(ap.parse_known_args(argv)[0]))
            if est is None or est["peak"] <= SCHEME_MARGIN * budget:
                break
        a = ap.parse_known_args(argv)[0]
        if est is not None and est["peak"] > budget and "G" not in GIVEN:
            # not even the leanest scheme fits these dialogues (a real dataset's longer turns): fewer
            # rollouts per scenario, the largest G under the budget the start-up check applies
            fits = [g for g in range(a.G - 1, 1, -1)
                    if estimate(argparse.Namespace(**{**vars(a), "G": g, "rollout_batch": g if a.rollout_batch
                                                      else 0}))["peak"] <= budget]
            if fits:
                ap.set_defaults(G=fits[0], rollout_batch=fits[0] if a.rollout_batch else 0,
                                scheme=f"{a.scheme}, G {a.G} -> {fits[0]} to fit")
    if name == "gpu-7b":   # questions a step: the flag, else as many as fit (up to RL_QUESTIONS_CAP)
        a = ap.parse_known_args(argv)[0]
        if "rl_questions" in GIVEN:
            q, why = a.rl_questions, "--rl-questions, written on the command line"
        else:
            q, why = questions_that_fit(a, device_budget(device_of(pre.device), name)[0])
        a.rl_questions = q
        ap.set_defaults(rl_questions=q, questions_why=why, rollout_batch=bounded(a).rollout_batch)
    return name


def data_budgets(student, dataset, data_dir=None, q=0.9):
    """(turn budget, teacher answer budget, why) from a real dataset's own reasoning: the turn
    budget is the q-quantile (p90) of its training rationales in the student's tokens; the
    teacher's, their 99th percentile in SmolLM2's tokens (a fixed yardstick: the teacher's budget
    is part of its cache key, so train.py and probes.py, any student, must agree on it). Each is
    rounded up to 16 tokens. None when the dataset ships no reasoning or its files are not here.
    Example: StrategyQA's 1,995 Gemini rationales in SmolLM2 tokens: p90 250 -> 256, p99 424 -> 432."""
    try:
        texts = [r["reasoning"] for r in data.load(dataset, "train", data_dir=data_dir) if r.get("reasoning")]
    except (ValueError, FileNotFoundError, KeyError):
        return None
    if len(texts) < 20:
        return None
    up16 = lambda n: -(-n // 16) * 16

    def quantile(tok, p):
        lengths = sorted(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
        return lengths[min(len(lengths) - 1, int(p * len(lengths)))]
    yardstick = models.smollm2_tokenizer()
    tok, whose = models.load_tokenizer(student), f"{student}'s tokens"
    if tok is None:   # e.g. a gated hub id, offline: SmolLM2's tokens are a close stand-in
        tok, whose = yardstick, f"SmolLM2's tokens ({student}'s tokenizer is not at hand)"
    n_turn, n_teacher = quantile(tok, q), quantile(yardstick, 0.99)
    turn, teacher = up16(n_turn), up16(n_teacher)
    return turn, teacher, (f"turn budget {turn} = p{round(100 * q)} ({n_turn}) in {whose}, teacher "
                           f"budget {teacher} = p99 ({n_teacher}) in SmolLM2's, of {len(texts)} {dataset} "
                           f"rationales")


def device_of(device=None):
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def device_budget(device, preset):
    """(usable bytes, total bytes, words) of the device the memory check compares against: the
    GPU; a CPU's RAM; for the gpu-7b preset without a GPU, the target: one 80 GB GPU."""
    if device.startswith("cuda") and torch.cuda.is_available():   # (no CUDA: checks.py refuses --device)
        p = torch.cuda.get_device_properties(torch.device(device))
        return p.total_memory - memory.GPU_RESERVE, p.total_memory, f"{p.name}, {p.total_memory / 1e9:.1f} GB"
    if preset == "gpu-7b":
        return (memory.GPU_BYTES - memory.GPU_RESERVE, memory.GPU_BYTES,
                f"no GPU here: the target, one {memory.GPU_BYTES / 1e9:.0f} GB GPU")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ram - CPU_RESERVE, ram, f"{ram / 1e9:.1f} GB of RAM"


def per_process(a):
    """Questions the busiest process rolls out: dist.share deals them round-robin, rank 0 first.
    Example: 32 questions over 3 GPUs -> 11, 11, 10: 11."""
    return -(-a.rl_questions // gpus(a))


def group_rows(a):
    """Rollouts of one question: G per scenario, Scenario A and B (one plain dialogue, --no-probes)."""
    return (1 if a.no_probes else 2) * a.G


def bounded(a):
    """a, with a scheme's --rollout-batch 0 (all of a step's rows in one generate) replaced by one
    question's group (2 G rows) when a process rolls out more than one question, unless the flag was
    written: so that more questions cost generate() calls, not KV cache (exgrpo.rollout_and_score)."""
    if a.rollout_batch or "rollout_batch" in GIVEN or per_process(a) <= 1:
        return a
    return argparse.Namespace(**{**vars(a), "rollout_batch": group_rows(a)})


def questions_that_fit(a, budget, cap=RL_QUESTIONS_CAP):
    """(questions a step, why): the most, up to cap and at least one a process, whose peak (memory.py,
    per GPU, rollouts generated as bounded() says) stays within SCHEME_MARGIN of budget, or does not
    grow past the floor's by more than SMALL_BYTES; else the floor (the leanest scheme on 80 GB). What
    grows with questions is in memory.py's docstring ("What grows with Q"): the aux batch, one teacher
    dialogue a question on the first micro-batch; the rollouts are generated and updated in batches.
    Example: gemma-7b on 80 GB (bf16 AdamW fused, rollouts by G): 75.3 GB at 1 question, +1.76 GB
    each (training), already over 95% of 78.5 GB: 1. On 4 GPUs (FSDP2): 73.8 GB per GPU at 1 to 8
    questions a GPU (generation, with the gathered weights, stays above training): the cap, 32."""
    n, limit = gpus(a), SCHEME_MARGIN * budget
    at = lambda q: bounded(argparse.Namespace(**{**vars(a), "rl_questions": q}))
    est = lambda q: estimate(at(q))
    floor, cap = n, max(cap, n)
    lo, hi = est(floor), est(cap)
    flat = hi["peak"] - lo["peak"] <= SMALL_BYTES
    q = cap if flat else next((q for q in range(cap, floor, -1) if est(q)["peak"] <= limit), floor)
    b, rl = at(q), lo["rl"]
    how = (f"rollouts generated {b.rollout_batch or group_rows(b) * per_process(b)} at a time, "
           f"updated {a.rl_micro} at a time")
    grow = f"training {_gb(rl['_training'])} -> {_gb(hi['rl']['_training'])} from {floor} to {cap} questions"
    aux = ("" if a.no_aux or a.no_probes else
           ", the aux batch (a teacher dialogue a question on micro-batch 0)")
    if flat:
        top = ("the SFT step" if lo["sft"]["_peak"] >= lo["rl"]["_peak"] else
               "generation" if rl["_generation"] >= rl["_training"] else "training")
        return q, (f"memory: the cap, {cap}: the peak stays {_gb(hi['peak'])} ({top}); {grow}{aux}; {how}")
    margin = f"{_gb(limit)} ({SCHEME_MARGIN:.0%} of {_gb(budget)})"
    if q == cap:
        return q, f"memory: the cap, {cap}: {_gb(hi['peak'])} <= {margin}; {grow}{aux}; {how}"
    nxt = (per_process(b) + 1) * n
    over = f"{floor} already needs {_gb(lo['peak'])} and " if q == floor and lo["peak"] > limit else ""
    return q, (f"memory: {over}{nxt} would need {_gb(est(nxt)['peak'])}, > {margin}; "
               f"{grow}{aux}; {how}; {RL_QUESTIONS_CAP} learned on the synthetic world")


def dialogue_tokens(a):
    """Tokens of one rolled-out dialogue at its longest: every turn uses --max-new-tokens."""
    return (1 if a.no_probes else a.k + 1) * (USER_TURN_TOKENS + a.max_new_tokens)


def estimate(a):
    """The memory model's peak bytes of this run's RL step and SFT step (None: no config)."""
    c = models.architecture(a.student)
    if c is None:
        return None
    mem = memory
    dtype = a.dtype or ("bf16" if device_of(a.device).startswith("cuda") else "fp32")
    # per process (the busiest): its questions' rollouts, and their aux dialogues
    T, aux = dialogue_tokens(a), 0 if (a.no_aux or a.no_probes) else per_process(a)
    rows = group_rows(a) * per_process(a)
    n = gpus(a)
    scheme = "fsdp" if n > 1 else "master" if a.optimizer == "master" else "bf16"
    rl = mem.Setup(dtype_bytes=4 if dtype == "fp32" else 2, optimizer=scheme, shards=n,
                   fused=a.optimizer == "bf16-fused" and n == 1, ckpt=a.grad_checkpointing, ref=a.beta > 0,
                   micro_seqs=min(a.rl_micro, rows) + aux, seq_len=T, gen_rows=rows,
                   gen_batch=a.rollout_batch,
                   gen_prompt=T - a.max_new_tokens, gen_len=T)
    # a micro-batch never holds more rows than its batch: --rl-micro 1000 on 8 rollouts holds 8
    sft = replace(rl, ref=False, micro_seqs=min(a.sft_micro, a.sft_batch), seq_len=SFT_TOKENS, gen_rows=0)
    out = {"rl": mem.estimate(c, rl), "sft": mem.estimate(c, sft), "dialogue_tokens": T, "rows": rows}
    out["peak"] = max(0 if a.no_rl else out["rl"]["_peak"], 0 if a.no_sft else out["sft"]["_peak"])
    return out


def gpus(a):
    """The processes the memory model plans for: --gpus, else torchrun's world size (1 alone)."""
    return getattr(a, "gpus", 0) or dist.world()


def cards_for_plain(a, budget, choices=(1, 2, 4, 8)):
    """The fewest GPUs of this budget on which the plain algorithm (fp32 weights and AdamW, one
    optimizer step per batch, gradient clipping on: FSDP2 over N, or one GPU's master weights)
    fits this run, or None beyond 8."""
    for n in choices:
        b = argparse.Namespace(**{**vars(a), "gpus": n, "optimizer": "master",   # one group at a time
                                  "rollout_batch": group_rows(a)})
        est = estimate(b)
        if est is not None and est["peak"] <= budget:
            return n
    return None


def largest_fit(a, budget):
    """What fits, one knob changed: the largest G, --max-new-tokens (by 16), --sft-micro, --rl-questions."""
    found = []
    for flag, key, values in (("--G", "G", range(a.G - 1, 1, -1)),
                              ("--rl-questions", "rl_questions", range(a.rl_questions - 1, gpus(a) - 1, -1)),
                              ("--max-new-tokens", "max_new_tokens", range(a.max_new_tokens - 16, 15, -16)),
                              ("--sft-micro", "sft_micro", range(a.sft_micro - 1, 0, -1))):
        for v in values:
            tied = {"rollout_batch": v} if key == "G" and a.rollout_batch == a.G else {}  # rollouts by G
            if estimate(argparse.Namespace(**{**vars(a), key: v, **tied}))["peak"] <= budget:
                found.append(f"{flag} {v}")
                break
    return found

# -----------------------------------------------------------------------------
# the start-up block, the checks, --dry-run


def _gb(b):
    return f"{b / 1e9:.1f} GB"


def block(a, device, words, budget, est):
    """What this run will do, in one block: student, device, dtype, preset, every flag by group
    (* = written on the command line), the stage plan, the memory estimate against the device."""
    dtype = a.dtype or ("bf16" if device.startswith("cuda") else "fp32")
    how = "random weights, --random-init" if getattr(a, "random_init", False) else sample_source(a.student)
    lines = ["=" * 100, f"student  {a.student} ({how})", f"device   {device} ({words})", f"dtype    {dtype}",
             f"preset   {a.preset} ({a.preset_why})" + (f"; memory scheme: {a.scheme}" if a.scheme else "")]
    if getattr(a, "budget_why", None):
        lines.append(f"budgets  {a.budget_why}")
    for title, dests in LAYOUT:
        items = [f"{d}={getattr(a, d)!r}" + ("*" if d in GIVEN else "") for d in dests
                 if hasattr(a, d) and d not in ("dry_run", "force")]
        text, line = [], ""
        for it in items:
            if line and len(line) + len(it) > 88:
                text.append(line)
                line = ""
            line += ("  " if line else "") + it
        text += [line] if line else []
        lines += [f"{title}:"] + [f"    {t}" for t in text] if text else []
    if getattr(a, "questions_why", None):
        lines.append(f"rl       {a.rl_questions} question{'s' * (a.rl_questions != 1)} a step x G {a.G} "
                     f"({group_rows(a) * a.rl_questions} rollouts; {a.questions_why})")
    lines.append("plan     " + " -> ".join(plan(a)))
    if est is None:
        lines.append(f"memory   no estimate: no architecture known for {a.student} (models.architecture)")
    else:
        rl, sft = est["rl"], est["sft"]
        fits = "fits" if est["peak"] <= budget else "DOES NOT FIT"
        lines += [f"memory   peak {_gb(est['peak'])} of {_gb(budget)} usable ({words}): {fits} (memory.py)",
                  f"         RL step {_gb(rl['_peak'])}: {est['rows']} rollouts of "
                  f"<= {est['dialogue_tokens']} tokens; "
                  f"weights {_gb(rl['parameters'])}, reference {_gb(rl['reference model'])}, optimizer "
                  f"{_gb(rl['optimizer state (m, v)'] + rl['master weights'])},",
                  f"         + max(generation {_gb(rl['_generation'])}, training {_gb(rl['_training'])}); "
                  f"SFT step {_gb(sft['_peak'])}"
                  + (f"; per GPU, {gpus(a)} GPUs (FSDP2)" if gpus(a) > 1 else "")]
        if a.preset == "gpu-7b":
            n = cards_for_plain(a, budget)
            lines.append("plain    fp32 weights and AdamW, one step per batch, clipping on (FSDP2 past one "
                         "GPU): " + (f"{n} GPU(s) like this one" if n else "more than 8 GPUs like this one"))
        if a.optimizer == "bf16-fused" and gpus(a) == 1:
            lines.append("update   CHANGED by the memory scheme: each micro-batch of rollouts is its own "
                         "optimizer step, and --grad-clip is not applied (optim.fused_notes)")
    return "\n".join(lines + ["=" * 100])


def sample_source(student):
    return models.STUDENTS.get(student, "a folder or hub id").split(" (")[0]


def plan(a):
    """The stages this run goes through, with their sizes."""
    out = [] if a.no_zero_shot else [f"zero-shot eval ({a.eval_n}/split)"]
    if a.teacher != "none":
        out.append(f"EI (teacher {a.teacher_model or ''} at {a.teacher_url})" if a.teacher_url
                   else f"EI ({a.teacher})")
    if a.sft_from:
        out.append(f"SFT reused ({a.sft_from})")
    elif not a.no_sft:
        out += [f"SFT ({a.sft_epochs} epochs, batch {a.sft_batch})", "eval"]
    if not a.no_rl:
        rows = (1 if a.no_probes else 2) * a.G * a.rl_questions
        out += [f"{'GRPO' if a.no_probes else 'ExGRPO'} ({a.rl_steps} steps x {rows} rollouts)", "eval"]
    return out


def start(a):
    """Before anything loads: refuse a 7B student on a CPU, print the block, stop a run that
    will not fit. (With --dry-run, train.py then prints what EI will ask and exits.)"""
    # a resumed run's config holds False for both
    a.dry_run, a.force = a.dry_run or "dry_run" in GIVEN, a.force or "force" in GIVEN
    device = device_of(a.device)
    budget, _, words = device_budget(device, a.preset)
    est = estimate(a)
    need = f"about {_gb(est['peak'])} of GPU memory" if est else "a GPU"
    if a.preset == "gpu-7b" and not device.startswith("cuda") and not (a.dry_run or a.force):
        sys.exit(f"error: {a.student} on the CPU: no CUDA device here, and this run needs {need} "
                 f"(memory.py) and days of compute; run it on a GPU, --dry-run shows the plan, "
                 f"--force starts it here anyway")
    print(block(a, device, words, budget, est), flush=True)
    if est is not None and est["peak"] > budget and not a.force:
        fits = largest_fit(a, budget)
        sys.exit(f"error: this run needs about {_gb(est['peak'])} ({a.student}, G = {a.G}, dialogues of "
                 f"<= {est['dialogue_tokens']} tokens) but {_gb(budget)} are usable ({words}); what fits: "
                 f"{' or '.join(fits) if fits else 'none of G, --max-new-tokens, --sft-micro alone'}; "
                 f"--force runs it anyway")


def add_flags(ap):
    """train.py's start-up flags; returns the parser."""
    g = ap.add_argument_group("start-up (presets.py)")
    g.add_argument("--dry-run", action="store_true", help="print the plan and the memory estimate, then exit")
    g.add_argument("--force", action="store_true", help="start even if the memory model says it will not fit")
    g.add_argument("--gpus", type=int, default=0,
                   help="plan for N GPUs (FSDP2; default: torchrun's processes, else 1)")
    g.add_argument("--random-init", action="store_true",
                   help="the student's architecture, random weights, no download")
    return ap

