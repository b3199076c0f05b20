"""
Where a decode step's time goes: torch.profiler over one batched generation, split into the parts
issue #31 names (the model's body, the lm_head's logits over the whole vocabulary, sampling, the
cache reindexing when rows finish, everything else in the token loop: the attention-mask
concatenation, the EOS checks and the host syncs that read them).

    python bench/decode_profile.py --students smollm2-135m micro --batches 1 16 --threads 1
    python bench/decode_profile.py --backend static --students smollm2-135m --batches 1 16 --threads 1

The lean sampler (sample.sample_ids) runs at temperature 1.0 with '.' counted as an end of turn
as well, so that rows finish at different steps and leave the batch the way they do in a rollout
(a random or greedy run would decode the full budget and never reindex the cache). --backend
static runs decode.py's static step (eager) instead, with the same stop rule. Regions are
torch.profiler.record_function wrappers around the model's forward, its lm_head, sample._pick /
decode.pick and DynamicCache.batch_select_indices; "loop" is what the generation spends outside
them (prefill included, given apart). Host syncs: the count of aten::item / is_nonzero /
_local_scalar_dense calls, each a wait for the device on a GPU (free on the CPU).
"""

import argparse
import functools
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402
from torch.profiler import profile, record_function  # noqa: E402
from transformers import DynamicCache  # noqa: E402

import decode  # noqa: E402
import models  # noqa: E402
import sample  # noqa: E402
from tee import Tee  # noqa: E402

# -----------------------------------------------------------------------------
# defaults

STUDENTS = ["smollm2-135m", "micro"]
BATCHES = [1, 16]
NEW_TOKENS = 32
PROMPT = "Write three short sentences about apples, each ending with a full stop."
SYNC_OPS = ("aten::item", "aten::is_nonzero", "aten::_local_scalar_dense")


def labelled(name, fn):
    @functools.wraps(fn)
    def run(*a, **k):
        with record_function(name):
            return fn(*a, **k)
    return run


def region_ms(prof, name):
    """Total CPU ms of the record_function region `name` (all its calls)."""
    return sum(e.cpu_time_total for e in prof.key_averages() if e.key == name) / 1e3


def profile_one(model, tok, B, args, out):
    prompt = sample.chat_ids(tok, [{"role": "user", "content": PROMPT}])
    stops = sample.eos_ids(tok) + [i for t, i in tok.get_vocab().items() if t in (".", "Ġ.")]
    limit = sample.vocab_limit_of(model, tok)
    kw = {"static": True} if args.backend == "static" else {}   # the lean sampler: sample_ids' own default
    run = lambda: sample.sample_ids(model, [prompt] * B, args.new_tokens, 1.0, stops, tok.pad_token_id, limit, **kw)
    run()   # warm-up
    calls = []
    hook = model.register_forward_pre_hook(lambda *a: calls.append(1))
    torch.manual_seed(0)
    with profile() as prof:
        with record_function("generation"):
            comps, _ = run()
    hook.remove()
    steps = len(calls) - 1                                    # the first forward is the prefill
    total = region_ms(prof, "generation")
    fwd, head = region_ms(prof, "forward"), region_ms(prof, "lm_head")
    pick, reindex, prefill = region_ms(prof, "pick"), region_ms(prof, "reindex"), region_ms(prof, "prefill")
    ops = {e.key: e for e in prof.key_averages()}
    linear = sum(ops[k].self_cpu_time_total for k in ("aten::mm", "aten::addmm", "aten::bmm") if k in ops) / 1e3
    syncs = sum(ops[k].count for k in SYNC_OPS if k in ops)
    cats = ops["aten::cat"].count if "aten::cat" in ops else 0
    decode_ms = total - prefill
    body = fwd - prefill - head
    loop = decode_ms - (fwd - prefill) - pick - reindex
    lens = [len(c) for c in comps]
    out(f"\n### {args.student_name}, batch {B}: {steps} decode steps, completions {min(lens)}-{max(lens)} tokens "
        f"(mean {sum(lens) / len(lens):.1f})\n")
    out("| part | ms / decode step | share |")
    out("|---|---:|---:|")
    per = lambda ms: f"| {ms / max(steps, 1):.2f} | {100 * ms / decode_ms:.0f}% |"
    out("| model body (30 layers' Linear, attention, norms)".replace("30", str(model.config.num_hidden_layers))
        + f" {per(body)}")
    out(f"| lm_head: logits over the whole vocabulary ({model.get_output_embeddings().weight.shape[0]:,}) {per(head)}")
    out(f"| sampling (_pick: inverse CDF) {per(pick)}")
    out(f"| cache reindexing when rows finish (batch_select_indices) {per(reindex)}")
    out(f"| the rest of the token loop (mask cat, EOS checks, indexing, syncs) {per(loop)}")
    out(f"| **decode step** | **{decode_ms / max(steps, 1):.2f}** | 100% |")
    out(f"\nprefill {prefill:.1f} ms once; all matmuls (aten::mm/addmm/bmm self time, body and head) "
        f"{linear / max(steps, 1):.2f} ms a step = {100 * linear / decode_ms:.0f}%; host syncs {syncs} "
        f"({syncs / max(steps, 1):.1f} a step); aten::cat {cats} calls\n")
    out("```\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10) + "```")


def main():
    ap = argparse.ArgumentParser(description="profile a decode step")
    ap.add_argument("--students", nargs="+", default=STUDENTS)
    ap.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    ap.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    ap.add_argument("--backend", default="lean", choices=["lean", "static"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="also write the report here (markdown)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Tee()
    out(f"# bench/decode_profile.py {' '.join(sys.argv[1:])}\n\ntorch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    sample._pick = labelled("pick", sample._pick)
    decode.pick = labelled("pick", decode.pick)
    DynamicCache.batch_select_indices = labelled("reindex", DynamicCache.batch_select_indices)
    for name in args.students:
        model, tok = models.load_student(name, "fp32", "cpu")
        model.eval()
        forward = model.forward

        def fwd(*a, **k):
            first = k.get("input_ids") is not None and k["input_ids"].shape[1] > 1
            with record_function("forward"), record_function("prefill") if first else _null():
                return forward(*a, **k)
        model.forward = fwd
        head = model.get_output_embeddings()
        head.forward = labelled("lm_head", head.forward)
        args.student_name = name
        for B in args.batches:
            profile_one(model, tok, B, args, out)
    out.save(args.out)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


if __name__ == "__main__":
    main()
