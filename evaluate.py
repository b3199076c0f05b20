"""
Greedy evaluation: the student answers each plain question once, no probes (as in the paper).

    python evaluate.py --student smollm2-135m --datasets all --limit 100          # the zero-shot row
    python evaluate.py --student runs/default/rl/final --name exgrpo --datasets all --limit 100
    python evaluate.py --student tiny --datasets strategyqa,boolq --limit 20 --resume
    python evaluate.py --student smollm2-135m --datasets synth --limit 200        # test_id + test_ood
    python evaluate.py --student smollm2-135m --datasets none --ei-test synth     # EI-Test only
    python evaluate.py --student X --ei-test runs/dei_synth_test_id.jsonl         # probes.py --split test_id
    python evaluate.py --table runs/eval/results.json runs/other/results.json     # merge tables

Everything lands under --out (default runs/eval):
    results.json, results.md     the paper's layout: one row per method/checkpoint (--name,
                                 default the student), one column per dataset, the ID and OOD
                                 means; a later run with another --name adds a row, the same
                                 --name updates its row (so --datasets id, then ood, fill one row)
    <name>/predictions_<dataset>.jsonl   one line per question: id, question, gold, generated
                                 text, extracted answer, correct
--resume skips every question whose prediction is already on disk (a crash costs at most
one batch). EI-Test (the paper's): the student answers the explanatory probes of *test*
questions, each asked on its own; accuracy per rule and overall, only probes that passed the
EI-consistency filter, gold = the probe's known answer, else the teacher's.
Also a library: evaluate(model, tok, records) -> {"accuracy", "n", "correct", ...}.
"""

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

from tqdm import tqdm

import data
import rewards
import sample
from data import real

# -----------------------------------------------------------------------------
# defaults

OUT = "runs/eval"          # results.json / results.md / <name>/predictions_*.jsonl
BATCH_SIZE = 16            # prompts per generate() call; smaller batches stop sooner when all rows end
MAX_NEW_TOKENS = 256       # the answer budget; a row cut here is scored on what it wrote
LIMIT = 100                # questions per dataset (0 = the whole split)
SYNTH_SPLITS = ("test_id", "test_ood")
EI_COLUMN = "EI-Test"
ID_MEAN, OOD_MEAN = "ID mean", "OOD mean"
# the paper's column order: 8 ID datasets, their mean, 4 OOD datasets, their mean
PAPER_COLUMNS = [*(f"synth/{s}" for s in SYNTH_SPLITS), *real.ID_DATASETS, ID_MEAN,
                 *real.OOD_DATASETS, OOD_MEAN, EI_COLUMN]

# -----------------------------------------------------------------------------
# scoring


def std_error(acc, n):
    """Standard error of an accuracy measured on n questions: sqrt(p (1 - p) / n)."""
    return math.sqrt(acc * (1 - acc) / n) if n else float("nan")


def _read_predictions(path):
    """{id: row} of a predictions file; a line cut by a crash is ignored (asked again)."""
    done = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row and isinstance(row.get("generated"), str):
            done[row["id"]] = row
    return done


def score_row(record, text, finished=None):
    """One predictions line: the record's question and gold, the student's text, its verdict."""
    q, gold, kind = record["question"], record["answer"], record["answer_type"]
    return {"id": record["id"], **({"rule": record["rule"]} if "rule" in record else {}),
            "question": q, "gold": gold, "answer_type": kind, "generated": text, "finished": finished,
            "extracted": rewards.extract_answer(text, kind, q), "correct": rewards.is_correct(text, gold, kind, q)}


def evaluate(model, tok, records, batch_size=BATCH_SIZE, max_new_tokens=MAX_NEW_TOKENS,
             predictions_path=None, desc="eval", resume=False, prompt=data.messages):
    """Greedy answers to uniform `records`; returns {"accuracy", "n", "correct", "stderr",
    "seconds", "generated"} (+ "per_rule" when the records carry a "rule", as EI probes do).

    prompt(record) -> chat messages (default: the question + its answer-format line).
    Prompts are sorted by length so a batch wastes little on padding; each finished batch is
    appended to predictions_path at once, so a crash loses at most one batch. resume=True
    reuses the texts already there (same id and same question) and scores them again;
    resume=False starts the file anew."""
    if not records:
        raise ValueError(f"{desc}: no questions to evaluate")
    done = {}
    if predictions_path is not None:
        predictions_path = Path(predictions_path)
        predictions_path.parent.mkdir(parents=True, exist_ok=True)
        if resume and predictions_path.exists():
            done = _read_predictions(predictions_path)
    by_id = {r["id"]: r for r in records}
    # a stale row (same id, another question: e.g. another seed) is not a prediction of this one
    done = {i: row for i, row in done.items() if i not in by_id or row.get("question") == by_id[i]["question"]}
    # scoring is pure and cheap: a resumed row is scored again, so a fix of rewards.py needs no new generation
    done = {i: score_row(by_id[i], row["generated"], row.get("finished")) if i in by_id else row
            for i, row in done.items()}
    if predictions_path is not None:  # rewritten clean: a line cut by a crash would glue onto the next
        tmp = predictions_path.with_name(predictions_path.name + ".tmp")
        tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in done.values()), encoding="utf-8")
        os.replace(tmp, predictions_path)
    todo = [r for r in records if r["id"] not in done]
    prompts = {r["id"]: sample.chat_ids(tok, prompt(r)) for r in todo}
    todo.sort(key=lambda r: len(prompts[r["id"]]))
    t0 = time.time()
    out = open(predictions_path, "a", encoding="utf-8") if predictions_path is not None else None
    try:
        with tqdm(total=len(records), initial=len(records) - len(todo), desc=desc, unit="q",
                  disable=not todo, dynamic_ncols=True) as bar:
            for s in range(0, len(todo), batch_size):
                chunk = todo[s:s + batch_size]
                gen = sample.generate(model, tok, [prompts[r["id"]] for r in chunk], n=1,
                                      max_new_tokens=max_new_tokens, temperature=0, batch_size=batch_size)
                for r, text, finished in zip(chunk, gen.texts, gen.finished):
                    row = done[r["id"]] = score_row(r, text, finished)
                    if out:
                        out.write(json.dumps(row, ensure_ascii=False) + "\n")
                if out:
                    out.flush()
                bar.update(len(chunk))
    finally:
        if out:
            out.close()
    correct = sum(bool(done[r["id"]]["correct"]) for r in records)
    acc = correct / len(records)
    res = {"accuracy": acc, "n": len(records), "correct": correct, "stderr": std_error(acc, len(records)),
           "seconds": round(time.time() - t0, 1), "generated": len(todo)}
    if any("rule" in r for r in records):
        per_rule = {}
        for r in records:
            s = per_rule.setdefault(r.get("rule", "?"), {"n": 0, "correct": 0})
            s["n"] += 1
            s["correct"] += bool(done[r["id"]]["correct"])
        for s in per_rule.values():
            s["accuracy"] = s["correct"] / s["n"]
        res["per_rule"] = per_rule
    return res

# -----------------------------------------------------------------------------
# EI-Test: the explanatory probes of test questions, each answered on its own


def ei_probe_records(dei):
    """D_EI records (probes.py) -> one uniform record per consistent probe with a gold answer.

    Gold: the probe's own answer (every synthetic probe has one), else the teacher's answer,
    which passed the EI-consistency filter. Example: a D_EI record {"id": "synth-test_id-0-0",
    "probes": [{"rule": "reverse", "question": "...", "answer": "7", "kept": True, ...}]}
    -> [{"id": "synth-test_id-0-0/0", "rule": "reverse", "question": "...", "answer": "7", ...}]"""
    out = []
    for i, d in enumerate(dei):
        for j, p in enumerate(d.get("probes") or []):
            gold = p.get("answer") if p.get("answer") is not None else p.get("teacher_answer")
            if not p.get("kept") or gold is None or not str(gold).strip():
                continue
            out.append({"id": f"{d.get('id') or i}/{j}", "rule": p["rule"], "question": p["question"],
                        "answer": str(gold).strip(), "answer_type": p["answer_type"], "reasoning": ""})
    return out


def ei_prompt(record):
    """A probe is put to the student as probes.py puts it in the difficulty filter."""
    import probes
    return [{"role": "user", "content": probes.format_question(record["question"], record["answer_type"])}]


def load_ei_test(spec, split="test_id", limit=None, rules=None, seed=0, out=None):
    """EI-Test probe records: spec = a D_EI JSONL file (probes.py --split test_id ...), or
    'synth' = build the probes of `limit` synthetic test questions now, with the oracle teacher
    (exact, a second or two); their D_EI is saved to `out` for inspection."""
    import probes
    if spec == "synth":
        if split not in SYNTH_SPLITS:
            raise ValueError(f"--ei-test synth needs a test split ({' or '.join(SYNTH_SPLITS)}), got {split!r}")
        records = data.load("synth", split, limit=limit, seed=seed)
        dei, _ = probes.build_dei(records, "oracle", rules=rules, student=None, seed=seed, progress=False)
        if out is not None:
            probes.save_dei(out, dei)
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"--ei-test: no D_EI file at {path.resolve()}; write one with "
                                    f"`python probes.py --split test_id --out {spec}` or pass --ei-test synth")
        try:
            dei = probes.load_dei(path, kept_only=False)  # a test split: no difficulty filter applies
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"--ei-test: {path} is not a D_EI JSONL file written by probes.py ({e})") from None
        dei = dei[:limit] if limit else dei
    recs = ei_probe_records(dei)
    if rules is not None:
        keep = set(probes.parse_rules(rules))
        recs = [r for r in recs if r["rule"] in keep]
    if not recs:
        raise ValueError(f"--ei-test {spec}: no consistent probe with a gold answer in {len(dei)} D_EI records")
    return recs

# -----------------------------------------------------------------------------
# tables: results.json holds {"rows": {name: {column: accuracy}}, "ei_rules": {name: {rule: acc}},
# "details": {name: {column: {...}}}, "runs": {name: {...}}}


def with_means(scores):
    """Add 'ID mean' / 'OOD mean' when all 8 / all 4 datasets are present (the paper's means)."""
    out = {k: v for k, v in scores.items() if k not in (ID_MEAN, OOD_MEAN)}
    for label, names in ((ID_MEAN, real.ID_DATASETS), (OOD_MEAN, real.OOD_DATASETS)):
        if all(n in out for n in names):
            out[label] = sum(out[n] for n in names) / len(names)
    return out


def ordered_columns(rows):
    """Every column used by some row, the paper's columns first in the paper's order."""
    used = {c for vals in rows.values() for c in vals}
    return [c for c in PAPER_COLUMNS if c in used] + sorted(used - set(PAPER_COLUMNS))


def markdown_table(rows, columns=None, first="method"):
    """rows: {name: {column: accuracy}} -> a markdown table in percent, '-' where missing."""
    columns = columns or ordered_columns(rows)
    head = f"| {first} | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns) + "\n"
    body = ""
    for name, vals in rows.items():
        cells = [f"{100 * vals[c]:.1f}" if isinstance(vals.get(c), (int, float)) else "-" for c in columns]
        body += f"| {name} | " + " | ".join(cells) + " |\n"
    return head + body


def empty_results():
    return {"rows": {}, "ei_rules": {}, "details": {}, "runs": {}}


def read_results(path):
    """A results.json (a missing one is empty); old single-row files are read as one row."""
    path = Path(path)
    if not path.exists():
        return empty_results()
    res = json.loads(path.read_text(encoding="utf-8"))
    if "rows" not in res and "name" in res:  # the first version's {"name", "scores", "details"}
        res = {"rows": {res["name"]: res["scores"]}, "details": {res["name"]: res.get("details", {})}}
    for k, v in empty_results().items():
        res.setdefault(k, v)
    return res


def merge_results(base, new):
    """Rows of `new` into `base`: a new name adds a row, a known name updates its cells."""
    for key in ("rows", "ei_rules", "details", "runs"):
        for name, vals in new.get(key, {}).items():
            base[key].setdefault(name, {}).update(vals)
    base["rows"] = {n: with_means(v) for n, v in base["rows"].items()}
    return base


def render(results):
    """results.md: the main table, then EI-Test accuracy per rule when some row has it."""
    md = markdown_table(results["rows"])
    if any(results["ei_rules"].values()):
        md += f"\n{EI_COLUMN}, accuracy per probe rule:\n\n" + markdown_table(results["ei_rules"])
    return md


def write_results(out, results):
    """results.json + results.md under out, atomically (another run may read them)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("results.json", json.dumps(results, indent=1) + "\n"), ("results.md", render(results))):
        tmp = out / f".{name}.tmp{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)

# -----------------------------------------------------------------------------
# command line


def parse_datasets(spec):
    """'all' | 'id' | 'ood' | 'none' | 'synth' | 'strategyqa,boolq' -> dataset names."""
    if spec in ("all", "id", "ood"):
        return list({"all": real.ID_DATASETS + real.OOD_DATASETS, "id": real.ID_DATASETS,
                     "ood": real.OOD_DATASETS}[spec])
    if spec == "none":
        return []
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in data.DATASETS]
    if unknown or not names:
        raise ValueError(f"unknown dataset {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(data.DATASETS)}, or all | id | ood | none")
    return list(dict.fromkeys(names))


def slug(name):
    """A row name as a folder name: 'runs/default/rl/final' -> 'runs_default_rl_final'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("what to evaluate")
    g.add_argument("--student", default="smollm2-135m", help="alias (smollm2-135m, tiny, ...), local folder or hub id")
    g.add_argument("--name", default=None, help="the row in the results table (default: --student)")
    g.add_argument("--datasets", default="all", help="all | id | ood | none | synth | comma-separated names")
    g.add_argument("--split", default=None, help="synth: test_id|test_ood (default both); real: test (default)")
    g.add_argument("--limit", type=int, default=LIMIT, help="questions per dataset (0 = the whole split)")
    g.add_argument("--data-dir", default=None, help="real datasets (default $EXGRPO_DATA_DIR or ../shared/data)")
    g.add_argument("--ei-test", default=None, metavar="D_EI|synth",
                   help="also score the EI probes of test questions: a D_EI JSONL of probes.py, or synth (oracle, now)")
    g.add_argument("--rules", default=None, help="EI-Test: only these probe rules (comma-separated)")
    g = ap.add_argument_group("generation")
    g.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    g.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    g.add_argument("--device", default=None)
    g.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: bf16 on GPU, fp32 on CPU)")
    g = ap.add_argument_group("output")
    g.add_argument("--out", default=OUT, help="folder of results.json / results.md / <name>/predictions_*.jsonl")
    g.add_argument("--resume", action="store_true", help="skip questions already scored under --out")
    g.add_argument("--table", nargs="+", default=None, metavar="RESULTS_JSON",
                   help="merge these results.json files into one table (printed; written under --out "
                        "only when --out is given explicitly) and exit")
    g.add_argument("--plot", default=None, metavar="RUN", help="write PNG curves of a training run and exit")
    args = ap.parse_args(argv)
    if args.plot:
        return plot_run(args.plot)
    if args.table:
        return merge_tables(args.table, args.out if args.out != OUT else None)

    # every dataset is read before the model loads, so a wrong path fails in a second, not a minute
    name = args.name or args.student
    out = Path(args.out)
    preds = out / slug(name)
    limit = args.limit or None
    jobs = []  # (column, records, prompt)
    try:
        names = parse_datasets(args.datasets)
        if args.split and args.split not in SYNTH_SPLITS and "synth" in names:
            raise ValueError(f"synth has splits {', '.join(SYNTH_SPLITS)}, not {args.split!r}")
        for ds in names:
            splits = ([args.split] if args.split else list(SYNTH_SPLITS)) if ds == "synth" else [args.split or "test"]
            for split in splits:
                records = data.load(ds, split, limit=limit, data_dir=args.data_dir)
                if not records:
                    raise ValueError(f"{ds} {split}: no usable question (every row malformed?)")
                jobs.append((f"synth/{split}" if ds == "synth" else ds, records, data.messages))
        if args.ei_test:
            split = args.split if args.split in SYNTH_SPLITS else "test_id"
            recs = load_ei_test(args.ei_test, split, limit, args.rules, out=preds / f"dei_{split}.jsonl")
            jobs.append((EI_COLUMN, recs, ei_prompt))
        if not jobs:
            raise ValueError("nothing to evaluate: --datasets none and no --ei-test")
        model, tok = sample.load_student(args.student, args.dtype, args.device)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        sys.exit(f"evaluate.py: error: {e}")

    t0 = time.time()
    new = {"rows": {name: {}}, "ei_rules": {}, "details": {name: {}}, "runs": {}}
    for col, records, prompt in jobs:
        res = evaluate(model, tok, records, args.batch_size, args.max_new_tokens,
                       preds / f"predictions_{slug(col)}.jsonl", desc=col, resume=args.resume, prompt=prompt)
        res["max_new_tokens"] = args.max_new_tokens
        new["rows"][name][col], new["details"][name][col] = res["accuracy"], res
        if "per_rule" in res:
            new["ei_rules"][name] = {r: s["accuracy"] for r, s in res["per_rule"].items()}
        print(f"{col:>20}: {100 * res['accuracy']:5.1f}% ± {100 * res['stderr']:.1f} "
              f"({res['correct']}/{res['n']}; {res['generated']} generated in {res['seconds']:.0f}s)", flush=True)
    wall = time.time() - t0
    new["runs"][name] = {"student": args.student, "limit": args.limit, "max_new_tokens": args.max_new_tokens,
                         "batch_size": args.batch_size, "seconds": round(wall, 1),
                         "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    results = merge_results(read_results(out / "results.json"), new)
    write_results(out, results)
    print(render(results))
    print(f"wall time {wall:.0f}s; predictions in {preds}/, tables in {out}/results.md and results.json")


def merge_tables(paths, out=None):
    """--table: the rows of several results.json files in one table."""
    results = empty_results()
    for p in paths:
        if not Path(p).is_file():
            sys.exit(f"evaluate.py: error: no results file at {Path(p).resolve()}")
        try:
            results = merge_results(results, read_results(p))
        except (json.JSONDecodeError, AttributeError, TypeError) as e:
            sys.exit(f"evaluate.py: error: {p} is not a results.json written by evaluate.py ({e})")
    if out is not None:
        write_results(out, results)
    print(render(results), end="")
    return results


def plot_run(run):
    """PNG curves of a training run (needs matplotlib): reward and DSU firing over steps."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("evaluate.py: error: --plot needs matplotlib: pip install matplotlib")
    run = Path(run)
    path = run / "metrics.jsonl"
    if not path.exists():
        sys.exit(f"evaluate.py: error: no metrics.jsonl in {run}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rl = [r for r in rows if r.get("stage") == "rl"]
    if not rl:
        sys.exit(f"evaluate.py: error: {path} holds no RL steps")
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
    results = run / "results.json"  # train.py's per-stage table
    if results.exists():
        res = json.loads(results.read_text())
        stages = [s for s in res.get("table", []) if s.get("test_id") is not None]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for split in ("test_id", "test_ood"):
            ax.plot([s["stage"] for s in stages], [100 * s[split] for s in stages], marker="o", label=split)
        ax.set_ylabel("accuracy (%)"); ax.legend(); fig.tight_layout()
        fig.savefig(run / "accuracy.png", dpi=120)
    print(f"wrote {run}/curves.png" + (f" and {run}/accuracy.png" if results.exists() else ""))


if __name__ == "__main__":
    main()
