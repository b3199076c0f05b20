"""
Presets by student and device, the start-up block, the memory check and --dry-run: plumbing
that train.py calls before it loads anything (the method is not here).

    python train.py --dry-run                            # the CPU preset: what would run, then exit
    python train.py --student gemma-7b --dry-run         # the GPU recipe + the memory model's estimate
    python train.py --student gemma-7b --G 32 --dry-run  # a flag beats the preset (this one does not fit)
    python presets.py --student qwen2.5-7b               # the same block and plan, from here

Presets (a flag written on the command line always wins over them):
  cpu     train.py's own defaults: the synthetic world, SmolLM2-135M, about 20 minutes on 2 cores
  tiny    --student tiny: every stage end to end in about two minutes (smoke tests)
  gpu-7b  a 7B student (gemma-7b, qwen2.5-7b): the paper's recipe on one GPU (k = 5, G = 8, SFT
          3 epochs, 300 ExGRPO steps, bf16) on the synthetic world at level 3 with its oracle,
          and the first memory scheme of SCHEMES that bench/memory.py says fits the device
The memory model is bench/memory.py, loaded from its file (one model of the step, one place).
A configuration it says will not fit stops with one line naming the largest G, turn length or
SFT micro-batch that fits (--force runs it anyway). Without a GPU a 7B student stops at once.
"""

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# -----------------------------------------------------------------------------
# presets

SEVEN_B = ("gemma-7b", "qwen2.5-7b")   # the paper's students: the gpu-7b preset
PRESETS = {
    "cpu": {},
    "tiny": dict(train_n=16, eval_n=8, eval_max_new_tokens=16, sft_batch=8, rl_steps=2,
                 max_new_tokens=24, save_every=1),
    # the synthetic world's own 0.4M student, sized for the ablation on 2 CPU cores (bench/ablation.py);
    # RL: 32 questions a step (with 4 held-out accuracy fell, with 8 it did not move), 300 steps;
    # micro-batches of 32 length-sorted rollouts (a GRPO step 5.6 s -> 4.2 s, ExGRPO's update 12 -> 7 s)
    "micro": dict(level=1, train_n=4000, eval_n=500, sft_epochs=3, sft_batch=32, sft_micro=32, sft_lr=2e-3,
                  sft_warmup=20, rl_steps=300, rl_questions=32, G=8, k=3, max_new_tokens=64, rl_lr=1e-4,
                  rl_micro=32, eval_every=25, eval_every_n=200),
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
SCHEME_MARGIN = 0.95     # a preset's scheme leaves 5% for allocator fragmentation (the start-up check uses 100%)
USER_TURN_TOKENS = 112   # one user turn with the template's glue (synthetic level 3: mean 100, max 142)
SFT_TOKENS = 384         # the longest SFT example budgeted (question + teacher answer: about 200)
CPU_RESERVE = 2e9        # Python, torch and transformers themselves, on a CPU run

LAYOUT = []              # (group title, [dests]) of train.py's parser, recorded by apply()
GIVEN = set()            # the flags written on the command line, recorded by apply()


def _memory():
    """bench/memory.py, loaded from its file (bench/ is not a package)."""
    if "exgrpo_bench_memory" not in sys.modules:
        spec = importlib.util.spec_from_file_location("exgrpo_bench_memory", ROOT / "bench" / "memory.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["exgrpo_bench_memory"]


def choose(student):
    """The preset's name for a student (a 7B student gets the GPU recipe on any device: on a
    CPU it is only ever shown, by --dry-run)."""
    return student if student in ("tiny", "micro") else "gpu-7b" if student in SEVEN_B else "cpu"


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


def apply(ap, argv=None):
    """Make the preset of the student the parser's defaults; returns its name. Flags on the
    command line still win, and the memory scheme is chosen with them in place."""
    pre, _ = ap.parse_known_args(argv)
    name = choose(pre.student)
    LAYOUT[:] = [(g.title, [a.dest for a in g._group_actions if a.dest != "help"]) for g in ap._action_groups]
    GIVEN.clear()
    GIVEN.update(given(ap, argv))
    ap.set_defaults(preset=name, scheme=None, **PRESETS[name])
    if name == "gpu-7b":
        budget = device_budget(device_of(pre.device), pre.student)[0]
        G = ap.parse_known_args(argv)[0].G
        for label, values in SCHEMES:
            ap.set_defaults(scheme=label, **{k: G if v == "G" else v for k, v in values.items()})
            est = estimate(ap.parse_known_args(argv)[0])
            if est is None or est["peak"] <= SCHEME_MARGIN * budget:
                break
    return name

# -----------------------------------------------------------------------------
# the device and the memory model


def device_of(device=None):
    import torch
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def device_budget(device, student):
    """(usable bytes, total bytes, words) of the device the memory check compares against: the
    GPU; a CPU's RAM; for a 7B student without a GPU, the target: one 80 GB GPU."""
    mem = _memory()
    if device.startswith("cuda"):
        import torch
        p = torch.cuda.get_device_properties(torch.device(device))
        return p.total_memory - mem.GPU_RESERVE, p.total_memory, f"{p.name}, {p.total_memory / 1e9:.1f} GB"
    if student in SEVEN_B:
        return (mem.GPU_BYTES - mem.GPU_RESERVE, mem.GPU_BYTES,
                f"no GPU here: the target, one {mem.GPU_BYTES / 1e9:.0f} GB GPU")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ram - CPU_RESERVE, ram, f"{ram / 1e9:.1f} GB of RAM"


def compact(hf):
    """bench/memory.py's config dict from a transformers config.json dict."""
    heads, arch = hf["num_attention_heads"], hf.get("model_type", "llama")
    return dict(arch="gemma" if arch.startswith("gemma") else arch, vocab=hf["vocab_size"],
                hidden=hf["hidden_size"], layers=hf["num_hidden_layers"], heads=heads,
                kv_heads=hf.get("num_key_value_heads") or heads,
                head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
                intermediate=hf["intermediate_size"], tied=hf.get("tie_word_embeddings", True),
                qkv_bias=arch == "qwen2")


def model_config(student):
    """The student's architecture for the memory model, or None (unknown without loading it)."""
    import sample
    if student in _memory().CONFIGS:
        return _memory().CONFIGS[student]
    if student in sample.RANDOM_INIT_CONFIGS:
        return compact(sample.RANDOM_INIT_CONFIGS[student])
    if student == "small":
        return compact(dict(sample.SMALL_CONFIG, vocab_size=49152))
    if (Path(student) / "config.json").exists():
        hf = json.loads((Path(student) / "config.json").read_text())
        return compact(hf.get("text_config", hf))
    return None


def dialogue_tokens(a):
    """Tokens of one rolled-out dialogue at its longest: every turn uses --max-new-tokens."""
    return (1 if a.no_probes else a.k + 1) * (USER_TURN_TOKENS + a.max_new_tokens)


def estimate(a):
    """The memory model's peak bytes of this run's RL step and SFT step (None: no config)."""
    c = model_config(a.student)
    if c is None:
        return None
    mem = _memory()
    dtype = a.dtype or ("bf16" if device_of(a.device).startswith("cuda") else "fp32")
    T, aux = dialogue_tokens(a), 0 if (a.no_aux or a.no_probes) else a.rl_questions
    rows = (1 if a.no_probes else 2) * a.G * a.rl_questions
    rl = mem.Setup(dtype_bytes=4 if dtype == "fp32" else 2, optimizer="master" if a.optimizer == "master" else "bf16",
                   fused=a.optimizer == "bf16-fused", ckpt=a.grad_checkpointing, ref=a.beta > 0,
                   micro_seqs=a.rl_micro + aux, seq_len=T, gen_rows=rows, gen_batch=a.rollout_batch,
                   gen_prompt=T - a.max_new_tokens, gen_len=T)
    sft = replace(rl, ref=False, micro_seqs=a.sft_micro, seq_len=SFT_TOKENS, gen_rows=0)
    out = {"rl": mem.estimate(c, rl), "sft": mem.estimate(c, sft), "dialogue_tokens": T, "rows": rows}
    out["peak"] = max(0 if a.no_rl else out["rl"]["_peak"], 0 if a.no_sft else out["sft"]["_peak"])
    return out


def largest_fit(a, budget):
    """What fits, one knob changed: the largest G, --max-new-tokens (by 16) and --sft-micro."""
    found = []
    for flag, key, values in (("--G", "G", range(a.G - 1, 1, -1)),
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
             f"preset   {a.preset}" + (f"; memory scheme: {a.scheme}" if a.scheme else "")]
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
    lines.append("plan     " + " -> ".join(plan(a)))
    if est is None:
        lines.append(f"memory   no estimate: {a.student} has no stored config (bench/memory.py)")
    else:
        rl, sft = est["rl"], est["sft"]
        fits = "fits" if est["peak"] <= budget else "DOES NOT FIT"
        lines += [f"memory   peak {_gb(est['peak'])} of {_gb(budget)} usable ({words}): {fits} (bench/memory.py)",
                  f"         RL step {_gb(rl['_peak'])}: {est['rows']} rollouts of <= {est['dialogue_tokens']} tokens; "
                  f"weights {_gb(rl['parameters'])}, reference {_gb(rl['reference model'])}, optimizer "
                  f"{_gb(rl['optimizer state (m, v)'] + rl['master weights'])},",
                  f"         + max(generation {_gb(rl['_generation'])}, training {_gb(rl['_training'])}); "
                  f"SFT step {_gb(sft['_peak'])}"]
    return "\n".join(lines + ["=" * 100])


def sample_source(student):
    import sample
    return sample.STUDENTS.get(student, "a folder or hub id").split(" (")[0]


def plan(a):
    """The stages this run goes through, with their sizes."""
    out = [] if a.no_zero_shot else [f"zero-shot eval ({a.eval_n}/split)"]
    if a.teacher != "none":
        out.append(f"EI (teacher {a.teacher_model or ''} at {a.teacher_url})" if a.teacher_url else f"EI ({a.teacher})")
    if a.sft_from:
        out.append(f"SFT reused ({a.sft_from})")
    elif not a.no_sft:
        out += [f"SFT ({a.sft_epochs} epochs, batch {a.sft_batch})", "eval"]
    if not a.no_rl:
        rows = (1 if a.no_probes else 2) * a.G * a.rl_questions
        out += [f"{'GRPO' if a.no_probes else 'ExGRPO'} ({a.rl_steps} steps x {rows} rollouts)", "eval"]
    return out


def ei_plan(a, path, load):
    """What stage 1 will ask: questions, probes, teacher calls, and how many are cached."""
    import probes
    import teachers
    if a.teacher == "none":
        return "EI: skipped (--teacher none): SFT on the dataset's own reasoning"
    train, _ = load()
    rules = probes.parse_rules(a.rules)
    good = [dict(r, answer=str(r["answer"]).strip()) for r in train if probes._usable(r)]
    made = [p for r in good for p in probes.make_probes(r, rules, a.seed)]
    head = f"EI: {len(good)} questions, {len(rules)} rules"
    n_reason = sum(not r.get("reasoning") for r in good)
    if a.teacher == "oracle" and not a.teacher_url:
        return (f"{head} -> {len(made)} probes; teacher: the oracle, a program (no model or API calls: "
                f"it answers {n_reason + 2 * len(made)} prompts exactly, probes and their consistency checks; "
                f"nothing to cache)")
    teacher = teachers.from_args(a, cache=False)   # no file opened: only its id and sampling are needed
    asks = [probes.format_question(r["question"], r["answer_type"]) for r in good if not r.get("reasoning")]
    if a.probe_writer == "teacher":   # one written probe per question and rule, then its answer
        n_write = n_probe = len(good) * len(rules)
        note = f"{n_write} probe-writing calls, up to {n_probe} probe answers"
    else:
        asks += [probes.format_question(p["question"], p["answer_type"]) for p in made]
        n_write, n_probe = 0, len(made)
        note = f"{n_probe} template probes answered"
    cache = teachers.cache_path(a, teacher)   # the shared cache of this teacher (teachers.py)
    have = set()
    if cache is not None and Path(cache).exists():
        for line in cache.read_text(errors="replace").splitlines():
            try:
                have.add(json.loads(line)["key"])
            except (ValueError, KeyError, TypeError):
                pass
    keys = {teachers.cache_key(teacher.id, teachers.user(p), teacher.sampling) for p in asks}
    return (f"{head}; teacher {teacher.id}: up to {n_reason + n_write + n_probe} calls ({n_reason} for questions the dataset "
            f"gives no reasoning, {note}) + up to {n_probe} consistency checks; {len(keys & have)} of the "
            f"{len(keys)} prompts known now are already cached; "
            + (f"cache {cache} ({len(have)} answers)" if cache else "no cache (--teacher-cache none)"))


def start(a, path, load):
    """Before anything loads: refuse a 7B student on a CPU, print the block, stop a run that
    will not fit; with --dry-run, print what EI will ask and exit 0."""
    a.dry_run, a.force = a.dry_run or "dry_run" in GIVEN, a.force or "force" in GIVEN   # a resumed run's config
    device = device_of(a.device)                                                       # holds False for both
    budget, _, words = device_budget(device, a.student)
    est = estimate(a)
    need = f"about {_gb(est['peak'])} of GPU memory" if est else "a GPU"
    if a.student in SEVEN_B and not device.startswith("cuda") and not (a.dry_run or a.force):
        sys.exit(f"error: {a.student} on the CPU: no CUDA device here, and this run needs {need} "
                 f"(bench/memory.py) and days of compute; run it on a GPU, --dry-run shows the plan, "
                 f"--force starts it here anyway")
    print(block(a, device, words, budget, est), flush=True)
    if est is not None and est["peak"] > budget and not a.force:
        fits = largest_fit(a, budget)
        sys.exit(f"error: this run needs about {_gb(est['peak'])} ({a.student}, G = {a.G}, dialogues of "
                 f"<= {est['dialogue_tokens']} tokens) but {_gb(budget)} are usable ({words}); what fits: "
                 f"{' or '.join(fits) if fits else 'none of G, --max-new-tokens, --sft-micro alone'}; "
                 f"--force runs it anyway")
    if a.dry_run:
        print(ei_plan(a, path, load))
        sys.exit(0)


def add_flags(ap):
    """train.py's start-up flags; returns the parser."""
    g = ap.add_argument_group("start-up (presets.py)")
    g.add_argument("--dry-run", action="store_true", help="print the plan and the memory estimate, then exit")
    g.add_argument("--force", action="store_true", help="start even if the memory model says it will not fit")
    g.add_argument("--random-init", action="store_true",
                   help="the student's architecture with random weights, no download (memory/throughput checks)")
    return ap


if __name__ == "__main__":
    import train
    train.main(sys.argv[1:] + ["--dry-run"])
