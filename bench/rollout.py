"""
Dialogue rollout throughput: the batched multi-turn sampler (sample.rollout_dialogues, all
dialogues and all G rollouts advance together, one generate() per turn) versus rolling the
same dialogues out one at a time.

    python bench/rollout.py                                   # tiny model, G = 4, 8, 16
    python bench/rollout.py --student smollm2-135m --max-new-tokens 24

The dialogues are the ones an ExGRPO step rolls out (train.rl_step_rollouts): per question,
Scenario A = k probes of the synthetic world then the question, Scenario B = the first probe
then the question, each G times. Tokens counted = tokens the student sampled (mask 1).
Both ways run in this one process, alternated, at temperature 1.0; the median of --reps.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import data      # noqa: E402
import probes    # noqa: E402
import sample    # noqa: E402

# -----------------------------------------------------------------------------
# defaults

STUDENT = "tiny"
GS = (4, 8, 16)
QUESTIONS = 1          # questions per step; each gives a Scenario A and a Scenario B dialogue
K = 2                  # probes in Scenario A (the CPU preset of train.py)
MAX_NEW_TOKENS = 32    # per student turn
REPS = 2
SEED = 0


def step_dialogues(n_questions, k, seed=SEED):
    """[Scenario A, Scenario B] user-turn lists for n synthetic questions, with oracle probes."""
    out = []
    for q in data.load("synth", "train", limit=n_questions, seed=seed):
        ps = [p for p in probes.make_probes(q, seed=seed) if not p.get("reveals_answer")][:k]
        msgs = [data.user_message({"question": p["question"], "answer_type": p["answer_type"]}) for p in ps]
        qmsg = data.user_message(q)
        out += [msgs + [qmsg], msgs[:1] + [qmsg]]
    return out


def timed(fn):
    t0 = time.perf_counter()
    tokens = fn()
    return tokens, time.perf_counter() - t0


def batched(model, tok, dialogues, G, max_new):
    roll = sample.rollout_dialogues(model, tok, dialogues, n=G, max_new_tokens=max_new, temperature=1.0,
                                    batch_size=len(dialogues) * G)
    return sum(map(sum, roll.student_mask))


def one_by_one(model, tok, dialogues, G, max_new):
    tokens = 0
    for d in dialogues:
        for _ in range(G):
            roll = sample.rollout_dialogues(model, tok, [d], n=1, max_new_tokens=max_new, temperature=1.0)
            tokens += sum(roll.student_mask[0])
    return tokens


def main():
    ap = argparse.ArgumentParser(description="batched vs one-by-one dialogue rollouts")
    ap.add_argument("--student", default=STUDENT)
    ap.add_argument("--G", type=int, nargs="+", default=list(GS))
    ap.add_argument("--questions", type=int, default=QUESTIONS)
    ap.add_argument("--k", type=int, default=K)
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    ap.add_argument("--reps", type=int, default=REPS)
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args()
    torch.manual_seed(SEED)
    model, tok = sample.load_student(args.student, dtype=args.dtype)
    dialogues = step_dialogues(args.questions, args.k)
    turns = sum(len(d) for d in dialogues)
    print(f"{args.student} on {next(model.parameters()).device}, {torch.get_num_threads()} threads; "
          f"{len(dialogues)} dialogues ({turns} student turns) x G, <= {args.max_new_tokens} tokens per turn")
    batched(model, tok, dialogues, 1, 4)  # warm-up
    print("| G | rollouts | batched tok/s | one-by-one tok/s | speed-up |\n|---:|---:|---:|---:|---:|")
    for G in args.G:
        rates = {"batched": [], "one": []}
        for _ in range(args.reps):   # A B A B: both see the same machine load
            for name, fn in (("batched", batched), ("one", one_by_one)):
                n, s = timed(lambda: fn(model, tok, dialogues, G, args.max_new_tokens))
                rates[name].append(n / s)
        b, o = statistics.median(rates["batched"]), statistics.median(rates["one"])
        print(f"| {G} | {len(dialogues) * G} | {b:,.0f} | {o:,.0f} | {b / o:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
