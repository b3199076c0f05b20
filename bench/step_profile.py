"""
Where one RL step's time goes: a few exgrpo_step calls on a warm-up's own D_EI, timed by phase
(generation, reference scoring, policy forward, backward, optimizer), with the top torch ops.

    # the micro ExGRPO step at 32 questions a step, from a finished warm-up run folder
    python bench/step_profile.py --run runs/eq/sft -- --student micro --level 1 --rl-questions 32 \
        --G 8 --k 3 --max-new-tokens 64 --rl-micro 32
    python bench/step_profile.py --run runs/eq/sft --steps 3 --ops 15 -- ...   # more steps, more ops
    python bench/step_profile.py --run runs/eq/sft --decode compiled -- ...  # decode.py's sampler

Everything after `--` is train.py's flags (the RL ones matter: questions a step, G, k, micro-batch);
the student's weights come from <run>/sft/final and the questions from <run>/dei.jsonl, drawn as
train.py draws them. The phases are torch.profiler record_function ranges put around the step's
parts by patching (nothing in the product is changed): generation = exgrpo.rollout_and_score,
the forwards = every sample.token_logprobs call (with and without grad), backward = the
autograd engine, optimizer = optim.finish_step. Step 0 is a warm-up and not counted.
"""

import argparse
import functools
import random
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import decode  # noqa: E402
import exgrpo  # noqa: E402
import models  # noqa: E402
import optim  # noqa: E402
import probes  # noqa: E402
import sample  # noqa: E402
import train  # noqa: E402

PHASES = {}   # name -> [wall seconds, CPU seconds of this process], added up over the counted steps
PEAK_MB = {}  # name -> the process's peak RSS (MB) when that phase first ended (the peak so far, so a
#               phase that raises it is one that needs more memory than everything before it)


def peak_rss_mb():
    """The process's peak resident memory so far, in MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(name, fn):
    """fn, with its wall time added to PHASES[name] (not counting a call made inside another timed
    one); name may be a function of nothing, read at the call (e.g. of the grad mode)."""
    depth = [0]

    @functools.wraps(fn)
    def run(*args, **kwargs):
        label = name() if callable(name) else name
        depth[0] += 1
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            with torch.profiler.record_function(f"## {label}"):
                return fn(*args, **kwargs)
        finally:
            depth[0] -= 1
            PEAK_MB.setdefault(label, peak_rss_mb())
            if depth[0] == 0:
                acc = PHASES.setdefault(label, [0.0, 0.0])
                acc[0] += time.perf_counter() - t0
                acc[1] += time.process_time() - c0
    return run


def phase_ops(prof):
    """{phase: {op: self CPU microseconds}} under each '## phase' range (the outermost one)."""
    out = {}

    def walk(e, into):
        for c in e.cpu_children:
            if not c.name.startswith("## "):
                into[c.name] = into.get(c.name, 0.0) + c.self_cpu_time_total
            walk(c, into)

    for e in prof.events():
        if e.name.startswith("## ") and not (e.cpu_parent and _in_phase(e.cpu_parent)):
            walk(e, out.setdefault(e.name[3:], {}))
    return out


def _in_phase(e):
    while e is not None:
        if e.name.startswith("## "):
            return True
        e = e.cpu_parent
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished warm-up run folder (sft/final, dei.jsonl)")
    ap.add_argument("--steps", type=int, default=2, help="steps timed after one warm-up step")
    ap.add_argument("--ops", type=int, default=12, help="top ops by self CPU time (0 = no torch profile)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decode", choices=["auto"] + list(decode.MODES), default="auto",
                    help="the decode loop on the CPU, as train.py --decode")
    ap.add_argument("train_flags", nargs=argparse.REMAINDER, help="-- then train.py's flags")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    decode.set_mode("cpu", a.decode)
    flags = [f for f in a.train_flags if f != "--"]
    args = train.get_args(flags + ["--sft-from", str(Path(a.run) / "sft" / "final"), "--no-zero-shot"])
    # the weights as train.py would load them: --dtype and --device among the flags after --
    model, tok = models.load_student(str(Path(a.run) / "sft" / "final"), args.dtype, args.device)
    ref, _ = models.load_student(str(Path(a.run) / "sft" / "final"), args.dtype, args.device)
    ref.eval().requires_grad_(False)
    pool = probes.load_dei(Path(a.run) / "dei.jsonl")
    opt = optim.make_optimizer(model, args.rl_lr, args.optimizer)
    PEAK_MB["loaded (models, D_EI)"] = peak_rss_mb()
    exgrpo.rollout_and_score = timed("generation", exgrpo.rollout_and_score)
    sample.token_logprobs = timed(lambda: "policy forward" if torch.is_grad_enabled() else
                                  "reference / old forward (no grad)", sample.token_logprobs)
    optim.finish_step = timed("optimizer step", optim.finish_step)
    backward = torch.Tensor.backward
    torch.Tensor.backward = timed("backward", backward)
    rows = []
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if a.ops else None
    for step in range(a.steps + 1):
        if step == 1:
            PHASES.clear()
            if prof:
                prof.__enter__()
        questions = random.Random(args.seed * 7 + step).sample(pool, min(args.rl_questions, len(pool)))
        t0, c0 = time.perf_counter(), time.process_time()
        row = exgrpo.exgrpo_step(args, model, ref, tok, opt, questions, step)
        rows.append((time.perf_counter() - t0, time.process_time() - c0, row))
        print(f"step {step}: {rows[-1][0]:.1f} s, {rows[-1][1]:.1f} CPU s (generation {row['gen_seconds']:.1f} s), "
              f"reward {row['reward']:.3f}, {row['student_tokens']} student tokens", flush=True)
    if prof:
        prof.__exit__(None, None, None)
    torch.Tensor.backward = backward
    total, cpu = sum(r[0] for r in rows[1:]), sum(r[1] for r in rows[1:])
    print(f"\n{a.steps} steps after the first: {total:.1f} s, {total / a.steps:.1f} s a step, "
          f"{cpu / a.steps:.1f} CPU s a step "
          f"({args.rl_questions} questions x G {args.G}, k {args.k}, micro-batch {args.rl_micro}, "
          f"{a.threads} thread(s), sampler {a.decode or 'default'}; decode.STATS {decode.STATS})")
    # CPU seconds: what this process computed, whatever the neighbours do (one thread: the work)
    print("| phase | s a step | CPU s a step | share of CPU |\n|---|---:|---:|---:|")
    for name, (w, c) in sorted(PHASES.items(), key=lambda kv: -kv[1][1]):
        print(f"| {name} | {w / a.steps:.1f} | {c / a.steps:.1f} | {100 * c / cpu:.0f}% |")
    rw, rc = total - sum(w for w, _ in PHASES.values()), cpu - sum(c for _, c in PHASES.values())
    print(f"| everything else | {rw / a.steps:.1f} | {rc / a.steps:.1f} | {100 * rc / cpu:.0f}% |")
    # memory: the high-water mark after each phase ended for the first time (step 0 runs them in order)
    print("\n| peak RSS when first ended | MB |\n|---|---:|")
    for name, mb in sorted(PEAK_MB.items(), key=lambda kv: kv[1]):
        print(f"| {name} | {mb:.0f} |")
    print(f"| the whole run | {peak_rss_mb():.0f} |")
    if prof:
        print(f"\ntop {a.ops} ops of each phase, by self CPU time (ms a step):")
        for name, ops in phase_ops(prof).items():
            top = sorted(ops.items(), key=lambda kv: -kv[1])[:a.ops]
            print(f"  {name}: " + ", ".join(f"{op} {us / 1e3 / a.steps:.0f}" for op, us in top))


if __name__ == "__main__":
    main()
