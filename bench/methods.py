"""
The paper's main table in its layout: every method of train.py --method (baselines.py) trained
from the same SFT data, scored on the same evaluation sets by the same checker, one table.

    python bench/methods.py                                     # micro student, its preset (hours on 2 cores)
    python bench/methods.py --table-only                        # re-print the table from the runs on disk
    python bench/methods.py --build-teacher                     # only GKD's teacher
    python bench/methods.py --out runs/methods-smoke --results /tmp/methods-smoke --seeds 0 \\
        --common "--student micro --train-n 64 --eval-n 16" --rl "--rl-steps 2 --eval-every 0" \\
        --teacher-flags "--train-n 64 --sft-epochs 1 --eval-n 16"   # the whole flow on tiny budgets

Runs, each a train.py subprocess in its own folder under --out (a finished run is skipped, a
killed one resumed, so the command can be run again until it completes):
    teacher/               GKD's teacher LM: a wider micro model (TEACHER_CONFIG, the micro
                           tokenizer, so the student shares its vocabulary) trained by SFT on the
                           oracle's solutions, longer than the students (TEACHER_FLAGS); its own row
    sft/                   --method sft: the shared warm-up; the zero-shot and SFT rows
    step-by-step/, revthink/   their own SFT stages on the same questions (no sampling: one run)
    seed<s>/{exgrpo,grpo,gkd}/  from the shared warm-up (--sft-from, as the paper does), one run a seed
Columns on the synthetic world: test_id, test_ood (train.py's evaluation) and EI-Test (every final
model on the oracle's probes of the first --eval-n, or --ei-n, test_id questions at the run's level;
step-by-step asked with its label prefix). On a real --dataset (in --common) the column is that
dataset's test split and there is no EI-Test. Cells: mean ± s.e. over seeds; last, each row's
per-question test_id difference to SFT (paired). The paper's ID means (its Table 1) sit
beside the rows they have. Writes <results>.md and <results>.json.
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import presets  # noqa: E402
from baselines import LABELS  # noqa: E402
from models import micro_model, micro_tokenizer  # noqa: E402
from bench.ablation import ei_scores, launch, mean_se, per_question, summarize  # noqa: E402

# -----------------------------------------------------------------------------
# defaults

OUT = "runs/methods"
RESULTS = "bench/results/methods"   # + .md / .json
SEEDS = "0,1,2"                     # RL and sampling methods; the SFT-type methods run once
SFT_METHODS = ("step-by-step", "revthink")   # their own SFT stage; "sft" is the shared warm-up
RL_METHODS = ("gkd", "grpo", "exgrpo")       # from the warm-up, one run per seed
# GKD's teacher: micro's tokenizer, twice micro's width, one layer more (about 5x its parameters)
TEACHER_CONFIG = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=2048)
TEACHER_FLAGS = "--sft-epochs 6"    # longer than the students' 3 (the micro preset), same questions
ROWS = ("Zero-shot",) + tuple(LABELS[m] for m in ("sft",) + SFT_METHODS + RL_METHODS)   # the paper's order
PAPER = {  # mean in-distribution accuracy, Gemma-7B-it / Qwen2.5-7B-Instruct (the paper's Table 1)
    "Zero-shot": (46.80, 77.99), LABELS["revthink"]: (61.17, 80.89), LABELS["gkd"]: (65.40, 81.60),
    LABELS["exgrpo"]: (67.19, 82.54)}
EI_COLUMN = "EI-Test"
PAIRED_COLUMN = "Δ test_id vs SFT, paired"

# -----------------------------------------------------------------------------
# runs


def teacher_args(common):
    """train.py flags of the teacher: the micro preset's data and SFT settings (a folder student
    gets no preset), then the --common flags (its student excepted), then TEACHER_FLAGS."""
    keep = ("level", "train_n", "eval_n", "sft_epochs", "sft_batch", "sft_micro", "sft_lr", "sft_warmup")
    flags = [x for k in keep for x in (f"--{k.replace('_', '-')}", str(presets.PRESETS["micro"][k]))]
    rest = list(common)
    if "--student" in rest:
        i = rest.index("--student")
        del rest[i:i + 2]
    return flags + rest


def build_teacher(out, common, extra, log):
    """GKD's teacher, once: a random TEACHER_CONFIG model with micro's tokenizer saved to
    <out>/teacher-init, then train.py --method sft on it. Returns the hf: spec of its SFT model."""
    init = out / "teacher-init"
    if not (init / "config.json").exists():
        tok = micro_tokenizer()
        micro_model(tok, seed=1, **TEACHER_CONFIG).save_pretrained(init)
        tok.save_pretrained(init)
    run = launch(out / "teacher", ["--student", str(init), "--method", "sft", "--no-zero-shot"]
                 + teacher_args(common) + extra, log)
    return f"hf:{run / 'sft' / 'final'}"


def run_all(args, out, common, sft, rl, log):
    teacher = args.gkd_teacher or build_teacher(out, common, shlex.split(args.teacher_flags), log)
    warm = launch(out / "sft", common + sft + ["--method", "sft", "--seed", "0"], log)
    for m in SFT_METHODS:
        launch(out / m, common + sft + ["--method", m, "--seed", "0", "--no-zero-shot"], log)
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        for m in RL_METHODS:
            extra = ["--gkd-teacher", teacher] if m == "gkd" else []
            launch(out / f"seed{seed}" / m, common + rl + ["--method", m, "--sft-from", str(warm / "sft" / "final"),
                                                          "--seed", str(seed), "--data-seed", "0", "--no-zero-shot"]
                   + extra, log)

# -----------------------------------------------------------------------------
# scores


def accuracies(path, stage):
    """{split: accuracy} from a finished run's predictions_<split>.jsonl of `stage`."""
    out = {}
    for f in sorted((path / stage).glob("predictions_*.jsonl")):
        rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if rows:
            out[f.stem[len("predictions_"):]] = sum(bool(r["correct"]) for r in rows) / len(rows)
    return out


def ei_test(run, stage, model_name, label_prefix=False, n=None):
    """EI-Test accuracy of run/<stage>/final (bench/ablation.py's ei_scores, averaged); None off
    the synthetic world."""
    scores = ei_scores(run, stage, n or 0, model_name, label_prefix)
    return None if scores is None else sum(scores.values()) / max(1, len(scores))


def collect(out, seeds, student, ei_n=None):
    """({row: [ {column: accuracy} per seed ]}, {row: (mean, s.e.)}) of every finished run; the
    second: the per-question test_id difference to the SFT row on the questions both scored, seeds
    averaged first, with its s.e. over the questions (bench/ablation.py's paired difference)."""
    done = lambda p: (p / "results.json").exists()
    sft = out / "sft"
    runs = {}
    if done(sft):
        runs["Zero-shot"] = [(sft, "zero_shot", student, False)]
        runs[LABELS["sft"]] = [(sft, "sft", None, False)]
    for m in SFT_METHODS:
        if done(out / m):
            runs[LABELS[m]] = [(out / m, "sft", None, m == "step-by-step")]   # step-by-step: its label prefix
    for m in RL_METHODS:
        got = [(out / f"seed{s}" / m, "rl", None, False) for s in seeds if done(out / f"seed{s}" / m)]
        if got:
            runs[LABELS[m]] = got
    if done(out / "teacher"):
        runs["GKD's teacher (wider micro, not a method)"] = [(out / "teacher", "sft", None, False)]
    table, paired = {}, {}
    sft_q = per_question(sft, "sft") if done(sft) else {}
    for row, items in runs.items():
        table[row] = []
        for run, stage, model, prefix in items:
            accs = accuracies(run, stage)
            ei = ei_test(run, stage, model, prefix, ei_n)
            table[row].append({**accs, **({EI_COLUMN: ei} if ei is not None else {})})
        d = summarize([per_question(r, st) for r, st, _, _ in items], sft_q).get("test_id", {})
        if "paired_diff" in d and row != LABELS["sft"]:
            paired[row] = (d["paired_diff"], d["paired_se"])
    return table, paired


def render(table, paired=None):
    """The paper's layout: method rows, the evaluation columns, mean ± s.e. over seeds (%); with
    `paired` ({row: (mean, s.e.)} from collect), a last column of the paired difference to SFT."""
    columns = [c for c in ("test_id", "test_ood") if any(c in v for vs in table.values() for v in vs)]
    columns += sorted({c for vs in table.values() for v in vs for c in v} - set(columns) - {EI_COLUMN})
    columns += [EI_COLUMN] if any(EI_COLUMN in v for vs in table.values() for v in vs) else []
    paired = paired or {}
    extra = [PAIRED_COLUMN] if paired else []
    summary = {}
    lines = ["| method | seeds | " + " | ".join(columns + extra) + " | paper, Gemma-7B ID mean | paper, Qwen2.5-7B ID mean |",
             "|---|---:|" + "---:|" * (len(columns + extra) + 2)]
    for row in [r for r in ROWS if r in table] + [r for r in table if r not in ROWS]:
        cells, summary[row] = [], {}
        for c in columns:
            xs = [v[c] for v in table[row] if c in v]
            if not xs:
                cells.append("-")
                continue
            m, se = mean_se(xs)
            summary[row][c] = {"mean": m, "se": se, "values": xs}
            cells.append(f"{100 * m:.1f} ± {100 * se:.1f}" if len(xs) > 1 else f"{100 * m:.1f}")
        if extra:
            m, se = paired.get(row, (None, None))
            cells.append("-" if m is None else f"{100 * m:+.1f} ± {100 * se:.1f}")
            if m is not None:
                summary[row][PAIRED_COLUMN] = {"mean": m, "se_questions": se}
        paper = [f"{x:.2f}" for x in PAPER[row]] if row in PAPER else ["-", "-"]
        lines.append(f"| {row} | {len(table[row])} | " + " | ".join(cells) + f" | {paper[0]} | {paper[1]} |")
    return "\n".join(lines) + "\n", summary

# -----------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    ap.add_argument("--out", default=OUT, help="the runs' folder")
    ap.add_argument("--results", default=RESULTS, help="the table: <results>.md and <results>.json")
    ap.add_argument("--seeds", default=SEEDS, help="seeds of the RL / sampling methods")
    ap.add_argument("--common", default="--student micro", help="train.py flags of every run")
    ap.add_argument("--sft", default="", help="train.py flags of the SFT-type runs (sft, step-by-step, revthink)")
    ap.add_argument("--rl", default="", help="train.py flags of the RL-stage runs (exgrpo, grpo, gkd)")
    ap.add_argument("--gkd-teacher", default=None, metavar="hf:FOLDER", help="a teacher LM (default: build one)")
    ap.add_argument("--teacher-flags", default=TEACHER_FLAGS, help="train.py flags of the teacher's SFT run")
    ap.add_argument("--build-teacher", action="store_true", help="build GKD's teacher and stop")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--ei-n", type=int, default=None, help="EI-Test on the probes of the first N test_id questions "
                    "(default: each run's --eval-n; about 9 probes a question)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common, sft, rl = (shlex.split(x) for x in (args.common, args.sft, args.rl))
    seeds = [int(s) for s in args.seeds.split(",") if s]
    log, t0 = out / "methods.log", time.time()
    if args.build_teacher:
        return print(build_teacher(out, common, shlex.split(args.teacher_flags), log))
    if not args.table_only:
        run_all(args, out, common, sft, rl, log)
    student = common[common.index("--student") + 1] if "--student" in common else "smollm2-135m"
    text, summary = render(*collect(out, seeds, student, args.ei_n))
    wall = time.time() - t0
    note = (f"\naccuracy (%) on the same questions per column; mean ± s.e. over seeds where seeds > 1; runs under "
            f"{out}/; train.py flags: common `{args.common}`, SFT `{args.sft}`, RL `{args.rl}`, teacher "
            f"`{args.teacher_flags}`; EI-Test on the probes of the first {args.ei_n or 'eval_n'} test_id questions; "
            f"this command's wall time {wall:.0f}s\n")
    print(text + note)
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.with_suffix(".md").write_text(text + note)
    results.with_suffix(".json").write_text(json.dumps({"rows": summary, "seeds": seeds, "common": args.common,
                                                        "sft": args.sft, "rl": args.rl, "wall_seconds": round(wall, 1),
                                                        "date": time.strftime("%Y-%m-%d %H:%M")}, indent=2))


if __name__ == "__main__":
    main()
