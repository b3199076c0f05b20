"""
Where does RL help? Greedy accuracy on the same test_id questions asked two ways: plainly (how
every table scores a student) and as the last turn of a Scenario A dialogue, after k probes the
student answers itself (how ExGRPO trains). Each checkpoint against the first, paired by question.

    python bench/dialogue_accuracy.py runs/ablation4/sft/sft/final runs/ablation5/seed0/*/rl/final
    python bench/dialogue_accuracy.py --n 500 --k 3 --out bench/results/dialogue-accuracy.md CKPT [CKPT ...]

The probes are the oracle teacher's leak-free RL probes of each test question (the same draw for
every checkpoint, exgrpo.build_scenarios with k' = k), the world is the synthetic one at --level.
"""

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402

from paired import paired  # noqa: E402   (bench/paired.py: tested by hand in tests/test_ablation.py)

import data  # noqa: E402
import exgrpo  # noqa: E402
import probes  # noqa: E402
import rewards  # noqa: E402
import models  # noqa: E402
import sample  # noqa: E402


def scores(model, tok, conditions, max_new_tokens):
    """{condition: [0/1 per question]}, greedy, the answer of the last turn."""
    out = {}
    for name, (dialogues, questions) in conditions.items():
        roll = sample.rollout_dialogues(model, tok, dialogues, n=1, max_new_tokens=max_new_tokens,
                                        temperature=0, batch_size=256)
        out[name] = [rewards.reward(t[-1], q["answer"], q["answer_type"], q["question"])
                     for t, q in zip(roll.turns, questions)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="model folders; the first is the reference of the paired column")
    ap.add_argument("--n", type=int, default=500, help="test_id questions")
    ap.add_argument("--k", type=int, default=3, help="probes before the question")
    ap.add_argument("--level", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = ap.parse_args()
    torch.manual_seed(0)
    dei, _ = probes.build_dei(data.load("synth", "test_id", limit=args.n, level=args.level), "oracle", progress=False)
    dialogues, meta, _ = exgrpo.build_scenarios(dei, args.k, args.k, random.Random(0), use_aux=False)
    full = [(d, dei[qi]) for d, (qi, kind) in zip(dialogues, meta) if kind == "full"]
    conditions = {"plain question": ([[data.user_message(q)] for q in dei], dei),
                  f"after {args.k} probes": ([d for d, _ in full], [q for _, q in full])}
    lines = [f"# bench/dialogue_accuracy.py: greedy test_id accuracy (%), {args.n} questions (level {args.level}); "
             f"{len(full)} have >= 2 leak-free probes and get the dialogue\n",
             "| checkpoint | " + " | ".join(f"{c} | Δ paired" for c in conditions) + " |",
             "|---|" + "---:|---:|" * len(conditions)]
    first = None
    for path in args.checkpoints:
        model, tok = models.load_student(path)
        s = scores(model, tok, conditions, args.max_new_tokens)
        first = first or s
        cells = []
        for c in conditions:
            d, se = paired(first[c], s[c])
            cells.append(f"{100 * sum(s[c]) / len(s[c]):.1f} | " + ("–" if s is first else f"{d:+.1f} ± {se:.1f}"))
        lines.append(f"| {path} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
