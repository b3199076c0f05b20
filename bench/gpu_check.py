"""
The GPU check (first run 2026-11-27 on an H200: bench/results/gpu/README.md; about 5 minutes):

    python bench/gpu_check.py                          # (a) + (b) + (c) for gemma-7b on CUDA
    python bench/gpu_check.py --student qwen2.5-7b
    python bench/gpu_check.py --device cpu --student tiny --G 2 --k 2 --max-new-tokens 4 --steps 1 \
        --skip-pipeline --out-dir /tmp/x              # its CPU-runnable parts (tests/test_presets.py)
    python bench/gpu_check.py --skip-pipeline --skip-step --decode     # (d) only: issue #31, about 5 minutes
    python bench/gpu_check.py --device cpu --student tiny --G 2 --k 2 --max-new-tokens 4 --skip-pipeline \
        --skip-step --decode --out-dir /tmp/x        # (d)'s CPU self-check

On the lent machine (device tool): carry .cache/smollm2-135m-tokenizer (the token ids of
--random-init and of tiny), and run `PYTHONUNBUFFERED=1 python bench/gpu_check.py --out-dir $OUT`.

(a) `python train.py --student tiny` end to end on the GPU (every stage), in a subprocess
(b) --random-init gemma-7b at the gpu-7b preset (train.get_args: the same G, k, turn length,
    memory scheme and flags a real run gets on this device): student and reference built on the
    GPU, optimizer and gradient checkpointing as train.main sets them, --steps full ExGRPO steps
    (exgrpo.exgrpo_step) on synthetic level-3 questions with the oracle's probes. A random model
    never ends a turn, so every turn runs to --max-new-tokens: the longest dialogues, the worst
    case the memory model budgets. Recorded: peak memory (torch.cuda.max_memory_allocated) in
    generation and in training, generation and training tokens/s, model FLOPs utilization
(c) the memory model's prediction (presets.estimate -> memory.py) beside the measurement
(d) --decode (issue #31): the --random-init student's rollouts of one ExGRPO step's dialogues at the
    preset (--rl-questions questions x 2 scenarios x G, k probes, --max-new-tokens a turn,
    temperature 1) with today's lean sampler and with decode.py's static step compiled (CUDA graphs),
    A B A B (--decode-reps): student tokens/s each, the compile time (decode.STATS, paid in a
    warm-up rollout first), and torch.profiler's ten costliest ops of one static rollout

MFU counts model FLOPs only (attention's T^2 term and checkpointing's recompute left out):
generation 2 P per dialogue token, training 8 P per token (policy forward + backward 6 P, the
reference's forward 2 P), against the card's dense bf16 peak. Results: bench/results/
gpu_check-<date>-<device>-<student>.{json,md}, or --out-dir ($OUT when set).
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import data  # noqa: E402
import decode  # noqa: E402
import exgrpo  # noqa: E402
import optim  # noqa: E402
import presets  # noqa: E402
import probes  # noqa: E402
import models
import sample  # noqa: E402
import train  # noqa: E402

STEPS = 2                 # ExGRPO steps in (b): the first warms up kernels and allocates optimizer state
PIPELINE_LIMIT = 240      # seconds for (a)
PEAK_BF16 = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12))  # dense, per card


def peak_flops(name):
    return next((f for key, f in PEAK_BF16 if key in name), None)


def pipeline(device, limit=PIPELINE_LIMIT):
    """(a): the tiny preset, every stage, in its own process; its result table and wall time."""
    out = Path(tempfile.mkdtemp()) / "tiny"
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, "train.py", "--student", "tiny", "--device", device, "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=limit)
        rc, tail = p.returncode, (p.stdout + p.stderr)[-1500:]
    except subprocess.TimeoutExpired:
        rc, tail = "timeout", f"stopped after {limit} s"
    table = (out / "results.md").read_text() if (out / "results.md").exists() else None
    return {"rc": rc, "seconds": round(time.time() - t0, 1), "results": table, "tail": None if rc == 0 else tail}


class Meter:
    """Wraps sample.rollout_dialogues (which exgrpo_step calls) to split each step into its
    generation and its training part: time, tokens and peak memory of each."""

    def __init__(self, device):
        self.cuda = device.startswith("cuda")
        self.gen_s = self.gen_peak = self.seq_tokens = self.student_tokens = 0
        self.real = sample.rollout_dialogues

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def peak(self):
        return torch.cuda.max_memory_allocated() if self.cuda else None

    def reset(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def __call__(self, *args, **kw):
        self.sync()
        self.reset()
        t0 = time.time()
        out = self.real(*args, **kw)
        self.sync()
        self.gen_s += time.time() - t0
        self.gen_peak = max(self.gen_peak, self.peak() or 0)
        self.seq_tokens += sum(len(x) for x in out.ids)
        self.student_tokens += sum(sum(m) for m in out.student_mask)
        self.reset()
        return out


class MemoryTrace:
    """--trace-memory: where the training peak comes from. Per backward(): allocated bytes before,
    the peak inside, after; per optimizer update of one tensor: how many parameters still hold a
    gradient (a fused optimizer should leave almost none alive) and the bytes allocated then."""

    def __init__(self, model):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.backwards, self.updates = [], {"max_alive": 0, "max_alive_bytes": 0, "bytes_at_max_alive": 0, "calls": 0}
        self.real_backward, self.real_update = torch.autograd.backward, optim.BF16AdamW._update
        self.outside = 0   # the highest peak seen between backward() calls (the peak statistics are reset in them)

    def on(self):
        trace = self

        def backward(*a, **kw):
            before = torch.cuda.memory_allocated()
            trace.outside = max(trace.outside, torch.cuda.max_memory_allocated())   # the forward's peak
            torch.cuda.reset_peak_memory_stats()
            out = trace.real_backward(*a, **kw)
            trace.backwards.append((before, torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()))
            return out

        def update(opt, i, p, grad):
            alive = [q for q in trace.params if q.grad is not None]
            u = trace.updates
            u["calls"] += 1
            if len(alive) > u["max_alive"]:
                u.update(max_alive=len(alive), max_alive_bytes=sum(q.grad.numel() * q.grad.element_size() for q in alive),
                         bytes_at_max_alive=torch.cuda.memory_allocated())
            return trace.real_update(opt, i, p, grad)
        torch.autograd.backward, optim.BF16AdamW._update = backward, update

    def off(self):
        torch.autograd.backward, optim.BF16AdamW._update = self.real_backward, self.real_update

    def summary(self):
        b = self.backwards
        return {"backward_calls": len(b), "params": len(self.params), **self.updates,
                "backward_before_bytes_max": max((x[0] for x in b), default=None),
                "backward_peak_bytes_max": max((x[1] for x in b), default=None),
                "backward_after_bytes_max": max((x[2] for x in b), default=None),
                "backward_first": b[0] if b else None, "peak_outside_backward_bytes": self.outside}


def one_step(args, device, steps, trace_memory=False):
    """(b): --steps ExGRPO steps of a --random-init student at the preset; the measurements."""
    t0 = time.time()
    model, tok = models.load_student(args.student, args.dtype, device, seed=0, random_init=True)
    ref, _ = models.load_student(args.student, args.dtype, device, seed=0, random_init=True)
    ref.eval().requires_grad_(False)
    if args.grad_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    opt = optim.make_optimizer(model, args.rl_lr, args.optimizer)
    records = data.load("synth", "train", limit=steps * args.rl_questions, level=args.level)
    dei, _ = probes.build_dei(records, "oracle", progress=False)
    build_s = time.time() - t0
    meter = Meter(device)
    sample.rollout_dialogues = meter
    rows, step_s = [], []
    trace = MemoryTrace(model) if trace_memory and device.startswith("cuda") else None
    if trace:
        trace.on()
    try:
        for step in range(steps):
            if step == steps - 1:   # measure the last step only (after warm-up)
                meter.gen_s = meter.seq_tokens = meter.student_tokens = 0
                meter.gen_peak, train_peak = 0, 0
            meter.sync()
            t = time.time()
            rows.append(exgrpo.exgrpo_step(args, model, ref, tok, opt, dei[step * args.rl_questions:
                                                                          (step + 1) * args.rl_questions], step))
            meter.sync()
            step_s.append(time.time() - t)
        train_peak = meter.peak()
    finally:
        sample.rollout_dialogues = meter.real
        if trace:
            trace.off()
    P = sum(p.numel() for p in model.parameters())
    train_s = step_s[-1] - meter.gen_s
    out = {"parameters": P, "build_seconds": round(build_s, 1), "step_seconds": [round(s, 1) for s in step_s],
           "gen_seconds": round(meter.gen_s, 2), "train_seconds": round(train_s, 2),
           "dialogue_tokens": meter.seq_tokens, "student_tokens": meter.student_tokens,
           "gen_tokens_per_s": round(meter.student_tokens / meter.gen_s, 1),
           "train_tokens_per_s": round(meter.seq_tokens / max(train_s, 1e-9), 1),
           "peak_generation_bytes": meter.gen_peak or None, "peak_training_bytes": train_peak,
           "peak_bytes": max(meter.gen_peak or 0, train_peak or 0) or None, "last_row": rows[-1]}
    if trace:   # the trace resets the peak statistics per backward(): its own maximum is the training peak
        out["memory_trace"] = trace.summary()
        t = out["memory_trace"]
        out["peak_training_bytes"] = max(train_peak or 0, t["backward_peak_bytes_max"] or 0, t["peak_outside_backward_bytes"])
        out["peak_bytes"] = max(out["peak_generation_bytes"] or 0, out["peak_training_bytes"])
    flops = peak_flops(torch.cuda.get_device_name(device) if device.startswith("cuda") else "")
    if flops:
        out["mfu_generation"] = round(2 * P * meter.seq_tokens / meter.gen_s / flops, 4)
        out["mfu_training"] = round(8 * P * meter.seq_tokens / max(train_s, 1e-9) / flops, 4)
    return out


def decode_check(args, device, reps):
    """(d): the preset's dialogues rolled out by the lean sampler and by the compiled static step."""
    model, tok = models.load_student(args.student, args.dtype, device, seed=0, random_init=True)
    model.eval()
    records = data.load("synth", "train", limit=args.rl_questions, level=args.level)
    dei, _ = probes.build_dei(records, "oracle", progress=False)
    dialogues, _, _ = exgrpo.build_scenarios(dei, args.k, None, random.Random(0))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    dev = torch.device(device).type

    def rollout(static):
        decode.STATIC[dev], decode.COMPILE[dev] = static, static
        torch.manual_seed(0)
        sync()
        t0 = time.time()
        roll = sample.rollout_dialogues(model, tok, dialogues, n=args.G, max_new_tokens=args.max_new_tokens,
                                        temperature=1.0, batch_size=args.rollout_batch or len(dialogues) * args.G)
        sync()
        return time.time() - t0, sum(map(sum, roll.student_mask))

    saved = dict(decode.STATIC), dict(decode.COMPILE)
    out = {"dialogues": len(dialogues), "G": args.G, "max_new_tokens": args.max_new_tokens}
    try:
        first_s, _ = rollout(True)                      # the warm-up: compiles every shape bucket it meets
        out.update(first_rollout_seconds=round(first_s, 1), compile=dict(decode.STATS))
        print(json.dumps({"decode_warmup": out}), flush=True)
        runs = {"lean": [], "static-compile": []}
        for _ in range(reps):
            for name, static in (("lean", False), ("static-compile", True)):
                runs[name].append(rollout(static))
                print(json.dumps({"decode": name, "seconds": round(runs[name][-1][0], 2),
                                  "student_tokens": runs[name][-1][1]}), flush=True)
        for name, r in runs.items():
            sec, tokens = min(r)
            out[name] = {"seconds": round(sec, 2), "student_tokens": tokens, "tokens_per_s": round(tokens / sec, 1)}
        out["speedup"] = round(out["static-compile"]["tokens_per_s"] / out["lean"]["tokens_per_s"], 2)
        out["compile"] = dict(decode.STATS)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
        with profile(activities=acts) as prof:
            rollout(True)
        key = "self_cuda_time_total" if dev == "cuda" else "self_cpu_time_total"
        out["profile_top10"] = prof.key_averages().table(sort_by=key, row_limit=10)
    finally:
        decode.STATIC.update(saved[0])
        decode.COMPILE.update(saved[1])
    return out


def predicted(args):
    """(c): the memory model for the same configuration, in bytes."""
    est = presets.estimate(args)
    if est is None:
        return None
    rl = est["rl"]
    return {"peak_bytes": rl["_peak"], "generation_bytes": rl["_persistent"] + rl["_generation"],
            "training_bytes": rl["_persistent"] + rl["_training"], "persistent_bytes": rl["_persistent"],
            "dialogue_tokens_budgeted": est["dialogue_tokens"], "rollouts": est["rows"]}


def report(res):
    """The markdown summary: measured beside modelled."""
    gb = lambda b: "-" if b is None else f"{b / 1e9:.1f}"
    s, p = res.get("step") or {}, res.get("predicted") or {}
    lines = [f"# GPU check {res['date']} on {res['device_name']}", "", f"command: `{res['command']}`", "",
             f"(a) tiny pipeline: rc {res['pipeline']['rc']}, {res['pipeline']['seconds']} s" if res.get("pipeline")
             else "(a) tiny pipeline: skipped", "",
             f"(b) {res['args']['student']} --random-init, preset {res['args']['preset']} ({res['args']['scheme']}): "
             f"G = {res['args']['G']}, k = {res['args']['k']}, --max-new-tokens {res['args']['max_new_tokens']}, "
             f"--rl-micro {res['args']['rl_micro']}, --rollout-batch {res['args']['rollout_batch']}", "",
             "| | measured | memory model |", "|---|---:|---:|",
             f"| peak in generation (GB) | {gb(s.get('peak_generation_bytes'))} | {gb(p.get('generation_bytes'))} |",
             f"| peak in training (GB) | {gb(s.get('peak_training_bytes'))} | {gb(p.get('training_bytes'))} |",
             f"| peak (GB) | {gb(s.get('peak_bytes'))} | {gb(p.get('peak_bytes'))} |",
             f"| dialogue tokens in the step | {s.get('dialogue_tokens')} | <= {p.get('rollouts')} x "
             f"{p.get('dialogue_tokens_budgeted')} |", "",
             f"step {s.get('step_seconds')} s; generation {s.get('gen_seconds')} s, {s.get('gen_tokens_per_s')} "
             f"student tokens/s; training {s.get('train_seconds')} s, {s.get('train_tokens_per_s')} tokens/s; "
             f"MFU generation {s.get('mfu_generation')}, training {s.get('mfu_training')}"]
    if s.get("error"):
        lines += ["", f"(b) stopped: {s['error']}"]
    d = res.get("decode")
    if d and d.get("error"):
        lines += ["", f"(d) stopped: {d['error']}"]
    elif d:
        lines += ["", f"(d) decode, {d['dialogues']} dialogues x G = {d['G']}, <= {d['max_new_tokens']} tokens a turn: "
                  f"lean {d['lean']['tokens_per_s']} student tokens/s ({d['lean']['seconds']} s), static compiled "
                  f"{d['static-compile']['tokens_per_s']} ({d['static-compile']['seconds']} s), x{d['speedup']}; "
                  f"compile {d['compile']['compile_s']:.0f} s in {d['compile']['compiles']} shapes "
                  f"(first rollout {d['first_rollout_seconds']} s)", "", "```", d["profile_top10"], "```"]
    return "\n".join(lines) + "\n"


def save(res, folder, slug):
    """Write the json and the markdown now: each part is saved as it ends, so a run stopped by the
    device's time limit (or an out-of-memory step) still leaves what it measured."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_check-{res['date']}-{slug}"
    text = report(res)
    (folder / f"{stem}.json").write_text(json.dumps(res, indent=2, default=str))
    (folder / f"{stem}.md").write_text(text)
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description="GPU check: tiny pipeline, one 7B ExGRPO step, memory model")
    ap.add_argument("--student", default="gemma-7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--skip-step", action="store_true", help="(a) and (c) only")
    ap.add_argument("--trace-memory", action="store_true", help="(b): per-backward peaks, live gradients")
    ap.add_argument("--decode", action="store_true", help="(d): lean vs static compiled rollouts (issue #31)")
    ap.add_argument("--decode-reps", type=int, default=1, help="(d): A B repetitions")
    ap.add_argument("--tag", default="", help="appended to the file names (runs of one day side by side)")
    ap.add_argument("--memory-cap", type=float, default=0, help="GB (1e9 bytes) the allocator may use: a smaller "
                    "card on this one (80 = an 80 GB H100 on an H200); CUDA only")
    ap.add_argument("--pipeline-limit", type=int, default=PIPELINE_LIMIT, help="seconds for (a)")
    ap.add_argument("--out-dir", default=os.environ.get("OUT") or None, help="write here, not bench/results")
    own, rest = ap.parse_known_args(argv)   # the rest: train.py flags (--G, --k, --max-new-tokens, ...)
    if own.memory_cap:
        if not own.device.startswith("cuda"):
            ap.error("--memory-cap needs a CUDA --device")
        total = torch.cuda.get_device_properties(own.device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, own.memory_cap * 1e9 / total), own.device)
    if not any(r.split("=")[0] == "--rl-questions" for r in rest):   # one question a step unless asked:
        rest = ["--rl-questions", "1", *rest]   # the preset may take 32 on a big card, past the check's minutes
    args = train.get_args(["--student", own.student, "--random-init", "--device", own.device, *rest])
    name = torch.cuda.get_device_name(own.device) if own.device.startswith("cuda") else "cpu"
    res = {"date": time.strftime("%Y-%m-%d"), "device_name": name,
           "command": " ".join(["python bench/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
           "args": vars(args), "predicted": predicted(args)}
    folder = Path(own.out_dir) if own.out_dir else ROOT / "bench" / "results"
    slug = "-".join(re.sub(r"[^a-z0-9.]+", "-", x.lower()).strip("-") for x in (name, own.student, own.tag) if x)
    print(json.dumps({"predicted": res["predicted"]}), flush=True)
    if not own.skip_pipeline:
        res["pipeline"] = pipeline(own.device, own.pipeline_limit)
        print(json.dumps({"pipeline": res["pipeline"]}), flush=True)
        save(res, folder, slug)
    if not own.skip_step:
        try:
            res["step"] = one_step(args, own.device, own.steps, own.trace_memory)
        except Exception as e:   # out of memory above all: record it with the peak reached, keep (a) and (c)
            peak = torch.cuda.max_memory_allocated() if own.device.startswith("cuda") else None
            res["step"] = {"error": f"{type(e).__name__}: {str(e)[:400]}", "peak_bytes": peak}
            print(traceback.format_exc(), flush=True)
    if own.decode:
        try:
            res["decode"] = decode_check(args, own.device, own.decode_reps)
        except Exception as e:
            res["decode"] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
            print(traceback.format_exc(), flush=True)
    text = save(res, folder, slug)
    print(text, flush=True)
    return res


if __name__ == "__main__":
    res = main()   # a failed step or decode section is a failed check
    sys.exit(1 if (res.get("step") or {}).get("error") or (res.get("decode") or {}).get("error") else 0)
