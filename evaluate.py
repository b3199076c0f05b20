"""
Greedy evaluation: the student answers each plain question once, no probes (as in the paper).

    python evaluate.py --student runs/default/rl/final --split test_id --limit 100
    python evaluate.py --student smollm2-135m --datasets all --limit 100 --out runs/eval-smollm2
    python evaluate.py --student tiny --datasets strategyqa,boolq --limit 20 --resume

Writes, under --out: predictions_<dataset>.jsonl (question, gold, generated text, extracted
answer, correct), results.json and results.md (the paper's layout: one row per checkpoint,
one column per dataset, the in-distribution and out-of-distribution means). --resume skips
questions whose prediction is already on disk. Also a library: train.py calls evaluate().
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm

import data
import rewards
import sample

# -----------------------------------------------------------------------------
# defaults

BATCH_SIZE = 32
MAX_NEW_TOKENS = 256
SYNTH_SPLITS = ("test_id", "test_ood")

# -----------------------------------------------------------------------------
# scoring


def std_error(acc, n):
    """Standard error of an accuracy measured on n questions: sqrt(p (1 - p) / n)."""
    return math.sqrt(acc * (1 - acc) / n) if n else float("nan")


def evaluate(model, tok, records, batch_size=BATCH_SIZE, max_new_tokens=MAX_NEW_TOKENS,
             predictions_path=None, desc="eval", resume=False):
    """Greedy answers to `records`; returns {"accuracy", "n", "correct", "stderr", "seconds"}.

    Prompts are sorted by length so a batch wastes little on padding; each finished batch is
    appended to predictions_path at once, so a crash loses at most one batch (and --resume
    picks up from there)."""
    if not records:
        raise ValueError(f"{desc}: no questions to evaluate")
    done = {}
    if predictions_path is not None and resume and Path(predictions_path).exists():
        for line in Path(predictions_path).read_text().splitlines():
            try:
                row = json.loads(line)
                done[row["id"]] = row
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a crash: that question is simply asked again
    elif predictions_path is not None:
        Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
        Path(predictions_path).write_text("")
    todo = [r for r in records if r["id"] not in done]
    prompts = {r["id"]: sample.chat_ids(tok, data.messages(r)) for r in todo}
    todo.sort(key=lambda r: len(prompts[r["id"]]))
    t0 = time.time()
    out = open(predictions_path, "a") if predictions_path is not None else None
    try:
        for s in tqdm(range(0, len(todo), batch_size), desc=desc, leave=False, disable=not todo):
            chunk = todo[s:s + batch_size]
            gen = sample.generate(model, tok, [prompts[r["id"]] for r in chunk], n=1,
                                  max_new_tokens=max_new_tokens, temperature=0, batch_size=batch_size)
            for r, text in zip(chunk, gen.texts):
                row = {"id": r["id"], "question": r["question"], "gold": r["answer"], "generated": text,
                       "extracted": rewards.extract_answer(text, r["answer_type"], r["question"]),
                       "correct": rewards.is_correct(text, r["answer"], r["answer_type"], r["question"])}
                done[r["id"]] = row
                if out:
                    out.write(json.dumps(row) + "\n")
            if out:
                out.flush()
    finally:
        if out:
            out.close()
    correct = sum(bool(done[r["id"]]["correct"]) for r in records)
    acc = correct / len(records)
    return {"accuracy": acc, "n": len(records), "correct": correct,
            "stderr": std_error(acc, len(records)), "seconds": time.time() - t0}

# -----------------------------------------------------------------------------
# tables


def markdown_table(rows, columns):
    """rows: {name: {column: accuracy}} -> a markdown table in percent, '-' where missing."""
    head = "| method | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns) + "\n"
    body = ""
    for name, vals in rows.items():
        cells = [f"{100 * vals[c]:.1f}" if isinstance(vals.get(c), (int, float)) else "-" for c in columns]
        body += f"| {name} | " + " | ".join(cells) + " |\n"
    return head + body


def with_means(scores):
    """Add 'ID mean' and 'OOD mean' over the real datasets present in `scores`."""
    from data import real
    out = dict(scores)
    for label, names in (("ID mean", real.ID_DATASETS), ("OOD mean", real.OOD_DATASETS)):
        vals = [scores[n] for n in names if n in scores]
        if vals:
            out[label] = sum(vals) / len(vals)
    return out


def parse_datasets(spec):
    from data import real
    if spec == "all":
        return list(real.ID_DATASETS + real.OOD_DATASETS)
    if spec in ("id", "ood"):
        return list(real.ID_DATASETS if spec == "id" else real.OOD_DATASETS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in data.DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(data.DATASETS)}, "
                         "or all | id | ood")
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", default="smollm2-135m", help="alias, local folder or hub id")
    ap.add_argument("--datasets", default="synth", help="synth | all | id | ood | comma-separated names")
    ap.add_argument("--split", default=None, help="synth: test_id|test_ood (default both); real: test")
    ap.add_argument("--limit", type=int, default=100, help="questions per dataset (0 = all)")
    ap.add_argument("--data-dir", default=None, help="real datasets (default $EXGRPO_DATA_DIR or ../shared/data)")
    ap.add_argument("--out", default=None, help="folder for predictions and tables (default runs/eval-<student>)")
    ap.add_argument("--name", default=None, help="row name in the results table (default: the student)")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    ap.add_argument("--resume", action="store_true", help="skip questions already scored under --out")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--plot", default=None, metavar="RUN", help="write PNG curves of a training run and exit")
    args = ap.parse_args(argv)
    if args.plot:
        return plot_run(args.plot)
    try:
        names = parse_datasets(args.datasets)
        model, tok = sample.load_student(args.student, args.dtype, args.device)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    out = Path(args.out or f"runs/eval-{Path(args.student).name}")
    limit = args.limit or None
    scores, details = {}, {}
    t0 = time.time()
    for name in names:
        splits = ([args.split] if args.split else list(SYNTH_SPLITS)) if name == "synth" else [args.split or "test"]
        for split in splits:
            key = f"synth/{split}" if name == "synth" else name
            try:
                records = data.load(name, split, limit=limit, data_dir=args.data_dir)
            except (FileNotFoundError, ValueError) as e:
                sys.exit(f"error: {e}")
            res = evaluate(model, tok, records, args.batch_size, args.max_new_tokens,
                           out / f"predictions_{key.replace('/', '_')}.jsonl", desc=key, resume=args.resume)
            scores[key], details[key] = res["accuracy"], res
            print(f"{key:>16}: {100 * res['accuracy']:5.1f}% ± {100 * res['stderr']:.1f} "
                  f"({res['correct']}/{res['n']}, {res['seconds']:.0f}s)")
    row = with_means(scores)
    name = args.name or args.student
    (out / "results.json").write_text(json.dumps({"name": name, "scores": row, "details": details,
                                                  "seconds": time.time() - t0}, indent=2))
    table = markdown_table({name: row}, list(row))
    (out / "results.md").write_text(table)
    print(table)
    print(f"wall time {time.time() - t0:.0f}s; predictions and tables in {out}/")


def plot_run(run):
    """PNG curves of a training run (needs matplotlib): reward and DSU firing over steps."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: --plot needs matplotlib: pip install matplotlib")
    run = Path(run)
    path = run / "metrics.jsonl"
    if not path.exists():
        sys.exit(f"error: no metrics.jsonl in {run}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rl = [r for r in rows if r.get("stage") == "rl"]
    if not rl:
        sys.exit(f"error: {path} holds no RL steps")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [r["step"] for r in rl]
    for key in ("reward", "P_full", "P_partial"):
        if key in rl[0]:
            axes[0].plot(steps, [r[key] for r in rl], label=key)
    axes[0].set_xlabel("RL step"); axes[0].set_title("outcome reward"); axes[0].legend()
    if "dsu_rate" in rl[0]:
        axes[1].plot(steps, [r["dsu_rate"] for r in rl], color="C3")
    axes[1].set_xlabel("RL step"); axes[1].set_title("DSU bonus firing rate")
    fig.tight_layout()
    fig.savefig(run / "curves.png", dpi=120)
    results = run / "results.json"
    if results.exists():
        res = json.loads(results.read_text())
        stages = [s for s in res["table"] if s.get("test_id") is not None]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for split in ("test_id", "test_ood"):
            ax.plot([s["stage"] for s in stages], [100 * s[split] for s in stages], marker="o", label=split)
        ax.set_ylabel("accuracy (%)"); ax.legend(); fig.tight_layout()
        fig.savefig(run / "accuracy.png", dpi=120)
    print(f"wrote {run}/curves.png" + (f" and {run}/accuracy.png" if results.exists() else ""))


if __name__ == "__main__":
    main()
