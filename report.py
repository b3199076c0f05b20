"""
Reports of finished work: the results tables evaluate.py writes, and the training curves
of train.py's metrics.jsonl. evaluate.py is the command line of both:

    python evaluate.py --table runs/eval/results.json runs/other/results.json   # one merged table
    python evaluate.py --plot runs/grpo-s0 runs/exgrpo-s0 --plot-out curves.png # overlaid curves

Tables: results.json holds {"rows": {name: {column: accuracy}}, "ei_rules": {name: {rule: acc}},
"details": {name: {column: {...}}}, "runs": {name: {...}}}; results.md renders it in the
paper's layout. Curves: one PNG, one colour per variant (its seeds, runs whose config.json differs
only in the seed and plumbing, share it; label = the run folder's name), panels
for the training reward (moving average), P_full and P_partial, the DSU firing rate, the KL to
the reference, and held-out accuracy at the RL checkpoints ("rl_eval" lines).
"""

import json
import math
import os
import re
import sys
from pathlib import Path

import data
import runs as runs_io   # (`runs` names lists of run folders in this file)
from data import real
from data.synth import TEST_SPLITS as SYNTH_SPLITS

# -----------------------------------------------------------------------------
# defaults

EI_COLUMN = "EI-Test"
ID_MEAN, OOD_MEAN = "ID mean", "OOD mean"
# the paper's column order: 8 ID datasets, their mean, 4 OOD datasets, their mean
PAPER_COLUMNS = [*(f"synth/{s}" for s in SYNTH_SPLITS), *real.ID_DATASETS, ID_MEAN,
                 *real.OOD_DATASETS, OOD_MEAN, EI_COLUMN]
SMOOTH = 10                # RL steps in the reward's moving average
PLOT_NAME = "curves.png"   # default PNG, inside the first run's folder

# -----------------------------------------------------------------------------
# tables


def slug(name):
    """A row name as a folder name: 'runs/default/rl/final' -> 'runs_default_rl_final'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


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
        raise ValueError(f"--datasets {spec}: unknown dataset {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(data.DATASETS)}, or all | id | ood | none")
    return list(dict.fromkeys(names))


def column(ds, split):
    """The key of a result in its row (the row is the run's --name): synth/<split>; a real
    dataset's test split under its bare name (the paper's columns), another split <name>/<split>."""
    return f"synth/{split}" if ds == "synth" else ds if split == "test" else f"{ds}/{split}"


def plan(args):
    """[(column, dataset, split)] the flags ask for; a split the dataset lacks is a ValueError."""
    out = []
    for ds in parse_datasets(args.datasets):
        have = list(SYNTH_SPLITS) if ds == "synth" else list(real.DATASETS[ds]["files"])
        for split in [args.split] if args.split else have if ds == "synth" else ["test"]:
            if split not in have:
                raise ValueError(f"--split {split}: {ds} has {', '.join(have)}")
            out.append((column(ds, split), ds, split))
    if args.ei_test:  # the EI probes of synthetic test questions (test_id unless --split names one)
        split = args.split if args.split in SYNTH_SPLITS else "test_id"
        out.append((EI_COLUMN if split == "test_id" else f"{EI_COLUMN}/{split}", "ei", split))
    if not out:
        raise ValueError("nothing to evaluate: --datasets none and no --ei-test")
    return out




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
    if isinstance(res, dict) and "rows" not in res and {"table", "timing"} <= res.keys():
        raise ValueError(f"{path} is train.py's results of one run (its stages), not evaluate.py's table; "
                         f"evaluate a run's model with --student {path.parent}/rl/final")
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
    for name, text in (("results.json", json.dumps(results, indent=1) + "\n"),
                       ("results.md", render(results))):
        runs_io.write_atomic(out / name, text)


def merge_tables(paths, out=None):
    """--table: the rows of several results.json files in one table."""
    results = empty_results()
    for p in paths:
        if not Path(p).is_file():
            sys.exit(f"evaluate.py: error: no results file at {Path(p).resolve()}")
        try:
            results = merge_results(results, read_results(p))
        except (ValueError, AttributeError, TypeError) as e:   # JSONDecodeError is a ValueError
            sys.exit(f"evaluate.py: error: {p} is not a results.json written by evaluate.py ({e})")
    if out is not None:
        write_results(out, results)
    print(render(results), end="")
    return results

# -----------------------------------------------------------------------------
# curves


def moving_average(values, window):
    """Trailing mean of the finite values among the last `window` steps (None skipped; NaN
    where there is none): moving_average([1, 3, None, 5], 3) -> [1.0, 2.0, 2.0, 4.0]."""
    vals = [float("nan") if v is None else float(v) for v in values]
    out = []
    for i in range(len(vals)):
        recent = [v for v in vals[max(0, i - window + 1):i + 1] if not math.isnan(v)]
        out.append(sum(recent) / len(recent) if recent else float("nan"))
    return out


def read_curves(run):
    """(RL step rows, rl_eval rows) of a run's metrics.jsonl; a line cut by a crash is skipped."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {Path(run).resolve()}")
    rows = runs_io.read_jsonl(path, "metrics")
    rl = [r for r in rows if isinstance(r, dict) and r.get("stage") == "rl"]
    evals = [r for r in rows if isinstance(r, dict) and r.get("stage") == "rl_eval"]
    if not rl and not evals:
        raise ValueError(f"{path} holds no RL step (stage 'rl') and no held-out evaluation ('rl_eval')")
    return rl, evals


def run_labels(runs):
    """Run folder names as labels; parent/name where two runs share a name. A symlinked run keeps
    the name it is given (abspath, not resolve: runs/ablation/seed0/x may point at a sweep run)."""
    paths = [Path(os.path.abspath(r)) for r in runs]
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


# config.json keys in which the seeds of one variant may differ: the seed, where the run lives, and
# plumbing that does not change the method (device, checkpoints, logging, the teacher client)
NOT_THE_VARIANT = {"seed", "out", "resume", "save_every", "save_minutes", "report_to", "device", "gpus",
                   "force", "dry_run", "grad_checkpointing", "rollout_batch", "eval_every", "eval_every_n",
                   "teacher_concurrency", "teacher_timeout", "teacher_retries", "teacher_backoff",
                   "teacher_deadline", "teacher_cache"}


def variant_key(run):
    """What makes runs "seeds of one variant": the same folder name and the same config.json but for
    NOT_THE_VARIANT and the *_why notes (a run without one: its folder name alone). grpo/s0 and
    exgrpo/s0 differ in config: two variants."""
    path = Path(os.path.abspath(run))
    cfg = path / "config.json"
    if not cfg.is_file():
        return path.name, None
    rest = {k: v for k, v in json.loads(cfg.read_text()).items()
            if k not in NOT_THE_VARIANT and not k.endswith("_why")}
    return path.name, json.dumps(rest, sort_keys=True)


def run_styles(runs):
    """(color index, legend label or None) for each run: the seeds of one variant (variant_key) share
    a color and one legend entry, "x (2 runs)"; other runs get the next colors. A run alone keeps its
    run_labels label; two variants of several runs that share a folder name are told apart by number,
    "x [1] (2 runs)", "x [2] (3 runs)". runs = [seed0/x, seed1/x (x's config but the seed), seed0/y, z]
    -> [(0, "x (2 runs)"), (0, None), (1, "y"), (2, "z")]"""
    keys = [variant_key(r) for r in runs]
    order = list(dict.fromkeys(keys))   # distinct variants, first seen first
    labels = run_labels(runs)
    out = []
    for i, key in enumerate(keys):
        n = keys.count(key)
        if keys.index(key) != i:   # only a variant's first run gets a legend entry
            out.append((order.index(key), None))
            continue
        same_name = [o for o in order if o[0] == key[0]]
        if n == 1:
            label = labels[i]
        else:
            label = key[0] if len(same_name) == 1 else f"{key[0]} [{same_name.index(key) + 1}]"
            label += f" ({n} runs)"
        out.append((order.index(key), label))
    return out


PANELS = (  # (title, [(metrics key, line style, smoothed?)], source)
    ("training reward (moving average)", [("reward", "-", True)], "rl"),
    ("P_full (solid), P_partial (dashed)", [("P_full", "-", True), ("P_partial", "--", True)], "rl"),
    ("DSU firing rate (moving average)", [("dsu_rate", "-", True)], "rl"),
    ("KL to the reference", [("kl", "-", False)], "rl"),
    ("held-out accuracy: test_id", [("test_id", "-o", False)], "rl_eval"),
    ("held-out accuracy: test_ood", [("test_ood", "-o", False)], "rl_eval"),
)


def plot_runs(runs, out=None, smooth=SMOOTH):
    """One PNG overlaying the curves of several runs (needs matplotlib); returns its path."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("evaluate.py: error: --plot needs matplotlib: pip install matplotlib")
    try:
        curves = [read_curves(r) for r in runs]
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"evaluate.py: error: {e}")
    out = Path(out) if out else Path(runs[0]) / PLOT_NAME
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for ax, (title, lines, source) in zip(axes.flat, PANELS):
        for (c, label), (rl, evals) in zip(run_styles(runs), curves):
            rows = rl if source == "rl" else evals
            for key, style, smoothed in lines:
                if not any(r.get(key) is not None for r in rows):
                    continue
                ys = [r.get(key) for r in rows]
                ys = (moving_average(ys, smooth) if smoothed
                      else [float("nan") if y is None else y for y in ys])
                ax.plot([r["step"] for r in rows], ys, style, color=f"C{c % 10}", markersize=3,
                        label=label if key == lines[0][0] else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"wrote {out}")
    return out
