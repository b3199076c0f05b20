"""
Decoding against the machine's limit: ms per decode step and tokens/s of each student at
batch 1/4/16/64, beside a roofline estimate from the memory bandwidth and FLOP/s that this
same run measures, for sample.py's lean sampler and for transformers' generate.

    python bench/rollout.py                                  # tiny, micro, smollm2-135m: lean vs hf
    python bench/rollout.py --students smollm2-135m --batches 1 16 \
        --backends lean hf hf-static hf-compile --new-tokens 16
    python bench/rollout.py --out bench/results/rollout-2026-11-26.md
    python bench/rollout.py --students smollm2-135m --batches 1 16 --backends lean --profile
    python bench/rollout.py --dialogues --students micro runs/ablation4/sft/sft/final   # turn-to-turn cache

Backends (all sample at temperature 1.0 with no top-k, the way rollouts do, and ignore EOS so
every row decodes the full budget):
    lean        sample.sample_ids: the project's KV-cached sampler
    lean-linear the same with its large Linear layers as plain F.linear (no _skinny_linear)
    hf          transformers generate with its default dynamic cache
    hf-static   generate with cache_implementation="static"
    hf-compile  generate with the static cache and its decoding forward torch.compile'd
    static      sample.sample_ids(static=True, compile=False): decode.py's static-shape step, eager
    static-compile  the same step torch.compile'd (inductor on the CPU); its compile is paid in the
                warm-up and reported (decode.STATS)
A decode step = the median time between two forward calls of the model while it decodes
(a pre-hook timestamps each call; for the static backends decode.TRACE timestamps each step
instead, outside the compiled region): one forward + picking the token, without the prefill.
Every backend runs once per repetition, in turn (A B A B), so all see the same machine load;
the best repetition's median is reported (on a shared machine the others measure the neighbours).
Roofline per step: max(bytes read / bandwidth, FLOPs / FLOP/s), with bytes = every weight
of the body and the lm_head once + the KV cache read by attention, FLOPs = 2 per weight per
row + attention; bandwidth = a 256 MB fp32 reduction, FLOP/s = a 1024^3 matmul in --dtype, both
at the thread count of the run. The header also gives the rate at which a Linear reads its
weights at a decode step's shape (batch 1, 4 and 16 rows, 1536 x 576 matrices, 512 MB in all), as
F.linear and in the order the lean sampler uses (sample._skinny_linear): the matmul kernel's share
of the bandwidth, which bounds the sampler from below. Gemma 3 270M
is included when its weights are in the hub cache.

--dialogues times instead one ExGRPO rollout (sample.rollout_dialogues: --questions synthetic
questions x 2 scenarios x G, k = 3 probes, --new-tokens per turn) with each turn continuing from
the cache the last turn left (reuse) against prefilling the whole history every turn (fresh),
A B A B, and counts the ids each way feeds through the model.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

import decode  # noqa: E402
import exgrpo  # noqa: E402
import models  # noqa: E402
import probes  # noqa: E402
import sample  # noqa: E402
from data import synth  # noqa: E402
from tee import Tee  # noqa: E402

# -----------------------------------------------------------------------------
# defaults

STUDENTS = ["tiny", "micro", "smollm2-135m", "google/gemma-3-270m-it"]   # absent ones are skipped
BATCHES = [1, 4, 16, 64]
BACKENDS = ["lean", "lean-linear", "hf"]
NEW_TOKENS = 16          # decode steps per timed generation
REPS = 3                 # A B A B repetitions; the best (least disturbed) is reported
PROMPT = ("A farmer has 12 apples. She buys 30 more and gives 7 to her neighbour. Then she splits "
          "the rest equally between 5 baskets. How many apples are in each basket? Think step by "
          "step and end with 'The answer is N.'")   # 68 tokens in SmolLM2's chat template


def best_of(fn, reps=5):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine_limits(dtype=torch.float32):
    """(bytes/s read from memory, FLOP/s of a matmul in dtype), measured here and now."""
    x = torch.ones(64 * 2 ** 20)                        # 256 MB: far beyond every cache
    bandwidth = x.numel() * 4 / best_of(lambda: x.sum())
    a = torch.randn(1024, 1024, dtype=dtype)
    flops = 2 * 1024 ** 3 / best_of(lambda: a @ a)
    return bandwidth, flops


def linear_read_rate(batch, dtype=torch.float32, shape=(1536, 576), total=512 * 2 ** 20, skinny=False):
    """Bytes/s at which F.linear reads its weights at a decode step's shape: `batch` rows times
    many (out, in) matrices, `total` bytes in all (SmolLM2's MLP shape, far beyond every cache).
    Set beside machine_limits' bandwidth, it says how much of the memory's rate the matmul
    kernel itself reaches when the weights come from DRAM, as they do in a decode step.
    skinny=True: the same product in the order the lean sampler uses (sample._skinny_linear)."""
    count = total // (shape[0] * shape[1] * torch.tensor([], dtype=dtype).element_size())
    layers = [SimpleNamespace(weight=torch.randn(shape).to(dtype), bias=None) for _ in range(count)]
    x = torch.randn(batch, shape[1]).to(dtype)
    f = sample._skinny_linear if skinny else lambda m, x: torch.nn.functional.linear(x, m.weight)
    seconds = best_of(lambda: [f(m, x) for m in layers], reps=3)
    return sum(m.weight.numel() * m.weight.element_size() for m in layers) / seconds


def step_cost(model, batch, context):
    """(bytes, FLOPs) of one decode step of `batch` rows that attend to `context` positions."""
    cfg = model.config.get_text_config()
    params = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    read = params - embed + (head if tied else 0)        # the embedding lookup reads B rows only
    width = next(model.parameters()).element_size()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv = batch * context * cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim
    attn_flops = 4 * batch * context * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim
    return read * width + kv * width, 2 * batch * read + attn_flops


def hf_runner(model, tok, rows, new, **kwargs):
    cfg = sample.generation_config(tok, new, 1.0)
    cfg.eos_token_id, cfg.min_new_tokens = None, new
    if kwargs.pop("compile", False):
        from transformers import CompileConfig
        cfg.compile_config = CompileConfig(fullgraph=False)
        cfg.compile_config._compile_all_devices = True     # transformers compiles on GPUs only by default
    ids, attn = sample.left_pad(rows, tok.pad_token_id)
    model.generate(input_ids=ids, attention_mask=attn, generation_config=cfg, **kwargs)


def lean_with_plain_linears(m, tok, rows, new):
    """The lean sampler with every Linear as F.linear (before sample._skinny_linear)."""
    keep, sample.SKINNY_ROWS = sample.SKINNY_ROWS, 0
    try:
        BACKEND_FNS["lean"](m, tok, rows, new)
    finally:
        sample.SKINNY_ROWS = keep


BACKEND_FNS = {
    "lean": lambda m, tok, rows, new: sample.sample_ids(m, rows, new, 1.0, eos=[], pad_id=tok.pad_token_id,
                                                         vocab_limit=sample.vocab_limit_of(m, tok)),
    "lean-linear": lambda m, tok, rows, new: lean_with_plain_linears(m, tok, rows, new),
    "static": lambda m, tok, rows, new: sample.sample_ids(m, rows, new, 1.0, eos=[], pad_id=tok.pad_token_id,
                                                           vocab_limit=sample.vocab_limit_of(m, tok), static=True,
                                                           compile=False),
    "static-compile": lambda m, tok, rows, new: sample.sample_ids(m, rows, new, 1.0, eos=[], pad_id=tok.pad_token_id,
                                                                   vocab_limit=sample.vocab_limit_of(m, tok),
                                                                   static=True, compile=True),
    "hf": lambda m, tok, rows, new: hf_runner(m, tok, rows, new),
    "hf-static": lambda m, tok, rows, new: hf_runner(m, tok, rows, new, cache_implementation="static"),
    "hf-compile": lambda m, tok, rows, new: hf_runner(m, tok, rows, new, cache_implementation="static",
                                                       compile=True),
}


def load(name, dtype):
    if name in models.STUDENTS or Path(name).exists():
        return models.load_student(name, dtype, "cpu")
    try:
        return models.load_student(name, dtype, "cpu")
    except (RuntimeError, ValueError, OSError):
        return None, None                                 # not installed here: skipped


def bench_student(name, args, limits, out):
    model, tok = load(name, args.dtype)
    if model is None:
        out(f"\n{name}: not installed here, skipped")
        return
    model.eval()
    calls = []    # perf_counter at every forward call: one per decode step, in every backend
    hook = lambda *a: calls.append(time.perf_counter())
    prompt = sample.chat_ids(tok, [{"role": "user", "content": PROMPT}])
    params = sum(p.numel() for p in model.parameters())
    out(f"\n### {name}: {params / 1e6:.1f}M parameters, {args.dtype}, prompt {len(prompt)} tokens, "
        f"{args.new_tokens} new tokens\n")
    out("| batch | backend | ms / decode step | tokens/s | roofline ms (bound) | ms / roofline |")
    out("|---:|---|---:|---:|---:|---:|")
    for B in args.batches:
        rows = [prompt] * B
        compiled = {}
        for b in args.backends:   # warm-up (and compile) outside the timing
            s0, t0 = decode.STATS["compile_s"], time.perf_counter()
            BACKEND_FNS[b](model, tok, rows, 3)
            if decode.STATS["compile_s"] > s0:
                compiled[b] = (decode.STATS["compile_s"] - s0, time.perf_counter() - t0)
        steps = {b: [] for b in args.backends}
        for _ in range(args.reps):
            for b in args.backends:
                calls.clear()
                if b.startswith("static"):   # timestamps from the token loop (a hook would be compiled in)
                    decode.TRACE = calls
                    BACKEND_FNS[b](model, tok, rows, args.new_tokens)
                    decode.TRACE = None
                    calls.insert(0, None)    # no prefill call in the trace: line it up with the hooks' list
                else:
                    handle = model.register_forward_pre_hook(hook)
                    BACKEND_FNS[b](model, tok, rows, args.new_tokens)
                    handle.remove()
                gaps = [t1 - t0 for t0, t1 in zip(calls[1:], calls[2:])]   # calls[0] is the prefill
                steps[b].append(statistics.median(gaps))
        if args.profile:   # where a lean generation's time goes: matmuls vs everything else
            from torch.profiler import profile
            with profile() as prof:
                BACKEND_FNS["lean"](model, tok, rows, args.new_tokens)
            out("```\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8) + "```")
        nbytes, flops = step_cost(model, B, len(prompt) + args.new_tokens // 2)
        t_mem, t_flop = nbytes / limits[0], flops / limits[1]
        roof = max(t_mem, t_flop)
        bound = "memory" if t_mem >= t_flop else "compute"
        for b in args.backends:
            s = min(steps[b])
            out(f"| {B} | {b} | {s * 1e3:.1f} | {B / s:,.0f} | {roof * 1e3:.1f} ({bound}) | {s / roof:.1f}x |")
        for b, (c, first) in compiled.items():
            out(f"\n{b}: compiled at batch {B} in {c:.1f} s (first call {first:.1f} s, paid once per model and "
                f"shape bucket; decode.STATS {decode.STATS})")


def bench_dialogues(name, args, out):
    """One ExGRPO rollout, reuse_cache on and off, same seed (the same dialogues come out)."""
    model, tok = load(name, args.dtype)
    if model is None:
        out(f"\n{name}: not installed here, skipped")
        return
    dei, _ = probes.build_dei(synth.generate("train", args.questions, seed=0), "oracle", progress=False)
    dialogues, _, _ = exgrpo.build_scenarios(dei, 3, None, random.Random(0))
    fed = []
    model.register_forward_pre_hook(lambda m, a, kw: fed.append(kw["input_ids"].numel()), with_kwargs=True)
    times, ids = {True: [], False: []}, {}
    for _ in range(args.reps):
        for reuse in (True, False):
            torch.manual_seed(0)
            fed.clear()
            t0 = time.perf_counter()
            roll = sample.rollout_dialogues(model, tok, dialogues, n=args.G, max_new_tokens=args.new_tokens,
                                            temperature=1.0, batch_size=len(dialogues) * args.G, reuse_cache=reuse)
            times[reuse].append(time.perf_counter() - t0)
            ids[reuse] = (sum(fed), sum(map(sum, roll.student_mask)), sum(map(len, roll.ids)))
    out(f"\n### {name}: {len(dialogues)} dialogues x G = {args.G}, up to {args.new_tokens} tokens a turn\n")
    out("| turns | seconds (best of %d) | ids fed to the model | student tokens | dialogue tokens |" % args.reps)
    out("|---|---:|---:|---:|---:|")
    for reuse, label in ((True, "continue from the cache"), (False, "prefill the history every turn")):
        out(f"| {label} | {min(times[reuse]):.2f} | {ids[reuse][0]:,} | {ids[reuse][1]:,} | {ids[reuse][2]:,} |")
    out(f"\nratio continue / prefill: {min(times[True]) / min(times[False]):.2f}")


def main():
    ap = argparse.ArgumentParser(description="decode speed against the roofline")
    ap.add_argument("--students", nargs="+", default=STUDENTS)
    ap.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    ap.add_argument("--backends", nargs="+", default=BACKENDS, choices=list(BACKEND_FNS))
    ap.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    ap.add_argument("--reps", type=int, default=REPS)
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--profile", action="store_true", help="also print a torch.profiler table per batch")
    ap.add_argument("--out", default=None, help="also write the report here (markdown)")
    ap.add_argument("--dialogues", action="store_true", help="time one ExGRPO rollout, turn-to-turn cache on/off")
    ap.add_argument("--questions", type=int, default=8, help="--dialogues: synthetic questions")
    ap.add_argument("--G", type=int, default=8, help="--dialogues: rollouts per dialogue")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Tee()
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    torch.manual_seed(0)
    dtype = models.default_device_dtype("cpu", args.dtype)[1]
    limits = machine_limits(dtype)
    out(f"# bench/rollout.py {' '.join(sys.argv[1:])}\n\nload at start: {uptime()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; measured read bandwidth {limits[0] / 1e9:.1f} GB/s, "
        f"{args.dtype} matmul {limits[1] / 1e9:.0f} GFLOP/s; at a decode step's shape the weights are read at "
        + ", ".join(f"{linear_read_rate(b, dtype) / 1e9:.1f} GB/s by F.linear and "
                    f"{linear_read_rate(b, dtype, skinny=True) / 1e9:.1f} by (W @ x.T).T (batch {b})" for b in (1, 4, 16)))
    for name in args.students:
        if name == "micro" and "micro" not in models.STUDENTS:
            continue
        (bench_dialogues(name, args, out) if args.dialogues else bench_student(name, args, limits, out))
    limits = machine_limits(dtype)
    out(f"\nload at end: {uptime()}; bandwidth {limits[0] / 1e9:.1f} GB/s, {limits[1] / 1e9:.0f} GFLOP/s")
    out.save(args.out)


if __name__ == "__main__":
    main()
