"""
Paired differences between evaluations of the same questions (or EI-Test probes): predictions
files of evaluate.py or train.py (`predictions_<split>.jsonl`, one row per question with its `id`
and `correct`), every pair of files compared on the ids all of them hold.

    python bench/paired.py runs/ei/sft/predictions_EI-Test.jsonl runs/ei/grpo/predictions_EI-Test.jsonl
    python bench/paired.py --names SFT,GRPO,ExGRPO A.jsonl B.jsonl C.jsonl --out paired.md

For each pair (a, b): the mean over the shared ids of correct_b - correct_a, in points, ± its
standard error over those ids (the sample s.e., n - 1). One run per file: the s.e. holds the
question-to-question noise only, not the seed-to-seed one (bench/ablation.py has that).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import mean_se  # noqa: E402   (tested by hand in tests/test_ablation.py)

import runs  # noqa: E402


def scores(path):
    """{id: 0.0 or 1.0} of one predictions file (a line a crash cut is skipped)."""
    rows = runs.read_jsonl(path)
    if any("id" not in r or "correct" not in r for r in rows):
        raise SystemExit(f"bench/paired.py: {path} is not a predictions file (rows need 'id' and 'correct')")
    return {r["id"]: float(bool(r["correct"])) for r in rows}


def default_names(files):
    """A name per file: its folder's; where two would be the same (train.py's RUN/rl/...), the
    folder above it too. Example: [a/rl/p.jsonl, b/rl/p.jsonl] -> ['a/rl', 'b/rl']."""
    names = [f.parent.name for f in files]
    if len(set(names)) < len(names):
        names = [f"{f.parent.parent.name}/{f.parent.name}" for f in files]
    return names


def paired(a, b):
    """Mean of b - a over questions, and its standard error, in points: a, b are 0/1 (or share)
    lists in one question order. Example: a 1 0 0 1, b 1 1 0 1 -> (25.0, 25.0)."""
    mean, se = mean_se([y - x for x, y in zip(a, b)])
    return 100 * mean, 100 * se


def paired_table(named):
    """named: [(name, {id: score})]. Markdown lines: each file's accuracy on the ids all share, then
    each pair's b - a in points ± its s.e. Example, ids q1 q2 q3 q4: a 1 0 0 1, b 1 1 0 1 ->
    a 50.0, b 75.0, b - a +25.0 ± 25.0."""
    ids = sorted(set.intersection(*(set(s) for _, s in named)))
    if not ids:
        raise SystemExit("bench/paired.py: the files share no question id")
    lines = [f"{len(ids)} shared ids", "", "| model | accuracy (%) |", "|---|---:|"]
    lines += [f"| {name} | {100 * sum(s[i] for i in ids) / len(ids):.1f} |" for name, s in named]
    lines += ["", "| difference | mean (points) | s.e. |", "|---|---:|---:|"]
    for j, (nb, sb) in enumerate(named):
        for na, sa in named[:j]:
            m, se = paired([sa[i] for i in ids], [sb[i] for i in ids])
            lines.append(f"| {nb} − {na} | {m:+.1f} | {se:.1f} |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="predictions .jsonl files; the first is the reference")
    ap.add_argument("--names", default=None, help="comma-separated names, one per file (default: the folder names)")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = ap.parse_args(argv)
    names = args.names.split(",") if args.names else default_names(args.files)
    if len(names) != len(args.files):
        ap.error(f"--names gives {len(names)} names for {len(args.files)} files")
    for f in args.files:
        if not f.is_file():
            ap.error(f"no predictions file {f}")
    text = "\n".join(paired_table([(n, scores(f)) for n, f in zip(names, args.files)])) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
