"""
The paper's ablation on the synthetic world, from one shared SFT warm-up, several seeds, one table.

    python bench/ablation.py --sft "--student micro ..." --rl "--rl-steps 150 ..."   # everything
    python bench/ablation.py --table-only --out runs/ablation                         # re-print the table
    python bench/ablation.py --variants "SFT + GRPO" --seeds 0,1,2                    # a subset
    python bench/ablation.py --jobs 2 ...          # after the warm-up, two runs at a time, one core each

Variants (each a train.py flag, docs/design.md; the paper's Qwen ablation in brackets):
    SFT only                         the shared warm-up's own evaluation       [79.17]
    SFT + GRPO                       --no-probes: plain GRPO on the questions
    SFT + ExGRPO (outcome only)      --no-aux --no-dsu: dialogues, R_base only   [80.13]
    SFT + ExGRPO + aux               --no-dsu                                    [81.23]
    SFT + ExGRPO + aux + DSU         the full method                             [82.54]
    RL from cold start               --no-sft: the full method without warm-up
    SFT + GKD (reference)            --method gkd --gkd-teacher ...: on-policy distillation, only when
                                     named in --variants (a reference row, not the paper's ablation)
and the sample-efficiency runs: the whole pipeline (SFT + ExGRPO) on 10/25/50/100% of the
training questions (--data-fraction), against SFT on 100%.

Every RL variant starts from the same warm-up (train.py --sft-from) and trains on the same
questions (--data-seed 0); the seed varies the RL stage only (probe draws, rollouts); the evaluation questions are fixed (data/synth.py EVAL_SEED), so every row is scored on
the same questions and rows can be compared question by question (paired). Each run is a
subprocess with its own folder under --out; a finished run is skipped, a killed one resumed.
Writes <out>/ablation.md and <out>/ablation.json (the rows, and the flags given):
    mean ± s.e. over seeds; the mean binomial s.e. of one run; and for each variant, the paired
    difference to "SFT only" on the shared questions: mean over questions of (accuracy of the
    variant, averaged over its seeds) - (accuracy of SFT only), with its s.e. over the seeds
    (each seed's mean difference: the one a "beats SFT" claim must clear) and over the questions;
    then every other RL row against SFT + GRPO (difference of the means, the two rows' seed s.e.s
    combined, and over the questions): does the method beat the RL it extends?
Columns: test_id and test_ood greedy, and "test_id, T=1", the share of --samples answers per
question sampled at T = 1 that are right (pass@1, what the RL reward measures). --eval-n N
scores every final model again on the first N fixed questions (cached in its run folder), and
--ei-n N adds the EI-Test column (the oracle's probes of the first N test_id questions, the column
bench/methods.py shows):

    python bench/ablation.py --out runs/ablation2 --table-only --seeds 0,1,2,3,4 --eval-n 2000 --ei-n 200
"""

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import baselines  # noqa: E402
import data  # noqa: E402
import evaluate  # noqa: E402
import models  # noqa: E402

# -----------------------------------------------------------------------------
# defaults

SFT_ONLY = "SFT only"
VARIANTS = {  # name -> train.py flags of the RL run
    "SFT + GRPO": ["--no-probes"],
    "SFT + ExGRPO (outcome only)": ["--no-aux", "--no-dsu"],
    "SFT + ExGRPO + aux": ["--no-dsu"],
    "SFT + ExGRPO + aux + DSU": [],
    "RL from cold start": ["--no-sft"],
}
GKD = "SFT + GKD (reference)"   # on-policy distillation from the same warm-up: a reference row, not the
                                # paper's ablation; needs --gkd-teacher (bench/methods.py --build-teacher)
VARIANTS[GKD] = ["--method", "gkd"]
DEFAULT_VARIANTS = [v for v in VARIANTS if v != GKD]
VERSUS = "SFT + GRPO"   # the table's second part: every other RL row against it
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
SPLITS = ("test_id", "test_ood")
SAMPLED = "test_id, T=1"   # the extra column: share of SAMPLES answers at T = 1 that are right (pass@1)
SAMPLES = 8                # answers per test_id question for it (--samples; 0 = no column)
EI = "EI-Test"             # the oracle's probes of the first --ei-n test_id questions, greedy (--ei-n; 0 = none)
RESCORE_BATCH = 256        # rows per generate call when scoring again (a small student is per-step bound)


def slug(name):
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def launch(path, flags, log, threads=None):
    """Run train.py into `path` (resume it if it started, skip it if it finished), with
    OMP_NUM_THREADS=threads when given."""
    if (path / "results.json").exists():
        return path
    resume = (path / "config.json").exists()   # a resumed run keeps the flags it started with
    cmd = [sys.executable, "train.py"] + (["--resume", str(path)] if resume else flags + ["--out", str(path)])
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(shlex.quote(c) for c in cmd[1:])}", flush=True)
    t0 = time.time()
    Path(log).parent.mkdir(parents=True, exist_ok=True)   # with --jobs, a run's log sits beside its folder
    with open(log, "a") as f:
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        sys.exit(f"error: {path} failed with exit code {rc}; see {log}")   # SystemExit, also from a --jobs thread
    print(f"    {path}: done in {time.time() - t0:.0f}s", flush=True)
    return path

# -----------------------------------------------------------------------------
# reading results


def per_question(path, stage):
    """{split: {question id: 0/1}} from a finished run's predictions of `stage` (sft or rl)."""
    out = {}
    for s in SPLITS:
        f = path / stage / f"predictions_{s}.jsonl"
        if f.exists():
            out[s] = {r["id"]: float(bool(r["correct"])) for r in map(json.loads, f.read_text().splitlines())}
    return out


def rescore(path, stage, split, samples=0, n=0):
    """{question id: score} of a finished run's final model on the first n questions of `split`
    (n = 0: the run's own --eval-n), cached in its folder. samples = 0: greedy, 0/1 per question;
    samples > 0: the share of `samples` answers at T = 1 that are right (pass@1). Greedy accuracy
    moves only where RL flips the mode of an answer; the sampled share is what RL optimizes."""
    cfg = json.loads((path / "config.json").read_text())
    n = n or cfg["eval_n"]
    cache = path / stage / (f"sampled_{split}_{samples}_{n}.json" if samples else f"greedy_{split}_{n}.json")
    if not cache.exists():
        model, tok = models.load_student(str(path / stage / "final"))
        records = data.load("synth", split, limit=n, level=cfg["level"])
        kw = dict(max_new_tokens=cfg["eval_max_new_tokens"], desc=f"{path.name} {split}", batch_size=RESCORE_BATCH)
        if samples:
            torch.manual_seed(0)
            counts = evaluate.sample_accuracy(model, tok, records, samples, **kw)["counts"]
            scores = [c / samples for c in counts]
        else:
            evaluate.evaluate(model, tok, records, predictions_path=cache.with_suffix(".jsonl"), **kw)
            right = {r["id"]: r["correct"] for r in map(json.loads, cache.with_suffix(".jsonl").open())}
            scores = [float(bool(right[r["id"]])) for r in records]
        cache.write_text(json.dumps({r["id"]: x for r, x in zip(records, scores)}))
    return json.loads(cache.read_text())


def ei_scores(path, stage, n=0, model_name=None, label_prefix=False):
    """{probe id: 0/1} of path/<stage>/final (or of the student alias `model_name`) on the EI-Test:
    the oracle's probes of the first n (0: the run's --eval-n) test_id questions at the run's level,
    asked as plain questions, greedy; cached in the run per n. None on a real --dataset (no oracle)."""
    cfg = json.loads((path / "config.json").read_text())
    if cfg["dataset"] != "synth":
        return None
    n = n or cfg["eval_n"]
    cache = path / stage / f"ei_test_{n}.json"
    if not cache.exists():
        recs = evaluate.load_ei_test("synth", "test_id", limit=n, level=cfg["level"])
        prefix = baselines.LABEL_PREFIX if label_prefix else ""   # step-by-step asks with its label prefix
        prompt = lambda r: [{"role": "user", "content": prefix + data.user_message(r)}]   # as evaluate.ei_prompt
        model, tok = models.load_student(model_name or str(path / stage / "final"), seed=cfg["seed"])
        preds = path / stage / f"ei_test_{n}.jsonl"
        preds.unlink(missing_ok=True)
        evaluate.evaluate(model, tok, recs, max_new_tokens=cfg["eval_max_new_tokens"], desc=f"EI-Test {path.name}",
                          predictions_path=preds, prompt=prompt, batch_size=RESCORE_BATCH)
        right = {r["id"]: float(bool(r["correct"])) for r in map(json.loads, preds.open())}
        cache.write_text(json.dumps({r["id"]: right[r["id"]] for r in recs}))
    return json.loads(cache.read_text())


def mean_se(xs):
    m = sum(xs) / len(xs)
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) if len(xs) > 1 else 0.0
    return m, se


def summarize(runs, reference):
    """runs: [{split: {qid: score}}] of one variant's seeds; reference: the same for SFT only.
    Per split: mean ± s.e. over seeds, one run's s.e. over its questions, and the paired
    difference to the reference on the questions all hold, with two standard errors:
        paired_se        over the questions, of (mean over seeds - reference): question noise only
        paired_se_seeds  over the seeds, of each seed's mean paired difference: seed-to-seed
                         noise too (what "the variant beats SFT" must clear; 0 with one seed)"""
    row = {}
    for s in SPLITS + (SAMPLED, EI):
        have = [r for r in runs if s in r]
        if not have:
            continue
        accs = [sum(r[s].values()) / len(r[s]) for r in have]
        m, se = mean_se(accs)
        row[s] = {"mean": m, "se_seeds": se, "seeds": len(accs), "values": accs, "n": len(have[0][s]),
                  # one run's s.e. over its questions: the sample s.e. of its scores, so also right for
                  # shares; for 0/1 scores sqrt(p (1 - p) / (n - 1)), evaluate.std_error's with n - 1
                  "se_binomial": sum(mean_se(list(r[s].values()))[1] for r in have) / len(have)}
        if reference and s in reference:
            ids = [q for q in reference[s] if all(q in r[s] for r in have)]
            diffs = [sum(r[s][q] for r in have) / len(have) - reference[s][q] for q in ids]
            per_seed = [sum(r[s][q] - reference[s][q] for q in ids) / len(ids) for r in have]
            row[s]["paired_diff"], row[s]["paired_se"] = mean_se(diffs)
            row[s]["paired_per_seed"], row[s]["paired_se_seeds"] = per_seed, mean_se(per_seed)[1]
    return row


def versus(runs, base):
    """One row against another (each a list of seeds' {split: {qid: score}}): per split the
    difference of the means and two standard errors,
        se_seeds      sqrt(se_a^2 + se_b^2) of the two means over seeds (independent runs: the
                      seeds of two variants share nothing but their number); 0 when neither has
                      two seeds
        se_questions  over the shared questions, of (a's mean over seeds - b's) per question
    Example: a = seeds 0.50, 0.75 (se 0.125), b = seeds 0.25, 0.25 (se 0) -> diff 0.375, se 0.125."""
    out = {}
    for s in SPLITS + (SAMPLED, EI):
        a, b = [r for r in runs if s in r], [r for r in base if s in r]
        if not a or not b:
            continue
        (ma, sa), (mb, sb) = (mean_se([sum(r[s].values()) / len(r[s]) for r in rs]) for rs in (a, b))
        ids = [q for q in a[0][s] if all(q in r[s] for r in a + b)]
        per_q = [sum(r[s][q] for r in a) / len(a) - sum(r[s][q] for r in b) / len(b) for q in ids]
        out[s] = {"diff": ma - mb, "se_seeds": math.hypot(sa, sb), "se_questions": mean_se(per_q)[1],
                  "seeds": [len(a), len(b)]}
    return out


def table(out, seeds, fractions, samples=SAMPLES, eval_n=0, ei_n=0, flags=None):
    """The table of the finished runs under `out`: ablation.md, and ablation.json = {"flags": this
    command's arguments (the common, warm-up and RL flags of the runs among them; each run's own
    are in its config.json), "rows": {row: {column: cell}}, "versus": {"SFT + GRPO": {row: {column:
    difference}}}} (see versus)."""
    out = Path(out)
    sft = out / "sft"
    rows = {}

    def results(path, stage):   # {column: {question id: score}} of a finished run, {} if none
        if not (path / "results.json").exists():
            return {}
        res = {s: rescore(path, stage, s, n=eval_n) for s in SPLITS} if eval_n else per_question(path, stage)
        if samples:
            res[SAMPLED] = rescore(path, stage, "test_id", samples, eval_n)
        ei = ei_scores(path, stage, ei_n) if ei_n else None
        return {**res, **({EI: ei} if ei is not None else {})}

    ref = results(sft, "sft") if (sft / "results.json").exists() else None
    if ref:
        rows[SFT_ONLY] = summarize([ref], None)
    seeds_of = {}   # variant -> its finished seeds' scores
    for name in VARIANTS:
        runs = [results(out / f"seed{s}" / slug(name), "rl") for s in seeds]
        runs = [r for r in runs if r]
        if runs:
            rows[name] = summarize(runs, ref)
            seeds_of[name] = runs
    # every other RL row against plain GRPO: does the method beat the RL it extends?
    vs = {name: versus(runs, seeds_of[VERSUS]) for name, runs in seeds_of.items()
          if name != VERSUS and VERSUS in seeds_of}
    for f in fractions:   # each fraction's own warm-up, then its ExGRPO: what the RL adds to it
        pct = f"{100 * f:g}%"
        for stage, name in (("sft", f"SFT on {pct} of the data"), ("rl", f"SFT + ExGRPO on {pct} of the data")):
            runs = [results(out / f"seed{s}" / f"fraction_{f}", stage) for s in seeds]   # scored like the variants
            runs = [r for r in runs if r]
            if runs:
                rows[name] = summarize(runs, ref)
    cell = lambda c: (f"{100 * c['mean']:.1f} ± {100 * c['se_seeds']:.1f} (run se {100 * c['se_binomial']:.1f})"
                      + (f" | {100 * c['paired_diff']:+.1f} ± {100 * c['paired_se_seeds']:.1f} seeds, "
                         f"± {100 * c['paired_se']:.1f} questions" if "paired_diff" in c else " | –"))
    cols = SPLITS + ((SAMPLED,) if samples else ()) + ((EI,) if any(EI in r for r in rows.values()) else ())
    lines = ["| variant | seeds | " + " | ".join(f"{c} (%) | Δ vs SFT, paired" for c in cols) + " |",
             "|---|---|" + "---|---|" * len(cols)]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['test_id']['seeds']} | " + " | ".join(cell(r[s]) if s in r else "– | –"
                                                                        for s in cols) + " |")
    text = "\n".join(lines) + ("\n\nmean ± s.e. over seeds (run se: the binomial s.e. of one run's accuracy); "
                               "Δ: per-question difference to SFT only on the same questions, mean, with its s.e. over the seeds "
                               "(each seed's mean difference) and over the questions (seeds averaged first); "
                               "test_id and test_ood: greedy; " + (f"{SAMPLED}: the share of {samples} answers "
                               "per question sampled at T = 1 that are right (pass@1); " if samples else "")
                          + (f"{EI}: the oracle's probes of the first {ei_n} test_id questions, greedy" if ei_n else "")
                          + "\n")
    if vs:
        vcell = lambda c: (f"{100 * c['diff']:+.1f} ± {100 * c['se_seeds']:.1f} seeds, "
                           f"± {100 * c['se_questions']:.1f} questions ({c['seeds'][0]} vs {c['seeds'][1]})")
        text += (f"\nAgainst {VERSUS}: difference of the means, with the s.e. over seeds (both rows' seed s.e.s "
                 "combined) and over the questions (per-question differences of the seed means)\n\n"
                 "| variant | " + " | ".join(f"Δ {c}" for c in cols) + " |\n|---|" + "---|" * len(cols) + "\n"
                 + "".join(f"| {name} | " + " | ".join(vcell(v[c]) if c in v else "–" for c in cols) + " |\n"
                           for name, v in vs.items()))
    (out / "ablation.md").write_text(text)
    (out / "ablation.json").write_text(json.dumps({"flags": flags or {}, "rows": rows, "versus": {VERSUS: vs}},
                                                  indent=2))
    return text

# -----------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--common", default="--student micro", help="train.py flags of every run")
    ap.add_argument("--sft", default="", help="train.py flags of the warm-up (and of the fraction runs' SFT)")
    ap.add_argument("--rl", default="", help="train.py flags of every RL stage")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated subset ('' = none); "
                    f"'{GKD}' also takes --gkd-teacher")
    ap.add_argument("--gkd-teacher", default=None, metavar="hf:FOLDER", help=f"the teacher LM of '{GKD}' "
                    "(python bench/methods.py --build-teacher --out runs/methods builds one: runs/methods/teacher/sft/final)")
    ap.add_argument("--fractions", default=",".join(map(str, FRACTIONS)), help="data fractions ('' = none)")
    ap.add_argument("--fraction-seeds", default="0", help="seeds of the sample-efficiency runs")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="RL runs side by side after the shared warm-up")
    ap.add_argument("--samples", type=int, default=SAMPLES, help="answers per test_id question at T = 1 for "
                    "the sampled column (0 = no column)")
    ap.add_argument("--eval-n", type=int, default=0, help="score every final model again on the first N "
                    "questions of each split (cached; 0 = the runs' own predictions)")
    ap.add_argument("--ei-n", type=int, default=0, help="the EI-Test column: the oracle's probes of the first "
                    "N test_id questions (cached; 0 = no column)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    if [v for v in chosen if v not in VARIANTS]:
        sys.exit(f"error: unknown variant(s) {[v for v in chosen if v not in VARIANTS]}; choose from {list(VARIANTS)}")
    if GKD in chosen and not args.table_only and not args.gkd_teacher:
        sys.exit(f"error: '{GKD}' needs --gkd-teacher hf:<folder> (bench/methods.py --build-teacher builds one)")
    gkd = ["--gkd-teacher", args.gkd_teacher] if args.gkd_teacher else []
    fractions = [float(f) for f in args.fractions.split(",") if f]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common, sft_flags, rl_flags = (shlex.split(x) for x in (args.common, args.sft, args.rl))
    t0 = time.time()
    if not args.table_only:
        log = out / "ablation.log"
        sft = launch(out / "sft", common + sft_flags + ["--no-rl", "--seed", "0"], log)
        warm = ["--sft-from", str(sft / "sft" / "final")]
        runs = [(out / f"seed{seed}" / f"fraction_{f}",
                 common + sft_flags + rl_flags + ["--data-fraction", str(f), "--seed", str(seed), "--no-zero-shot"])
                for seed in [int(s) for s in args.fraction_seeds.split(",") if s] for f in fractions]
        runs += [(out / f"seed{seed}" / slug(name), common + rl_flags + VARIANTS[name] + (gkd if name == GKD else []) +
                  ([] if "--no-sft" in VARIANTS[name] else warm) + ["--seed", str(seed), "--data-seed", "0", "--no-zero-shot"])
                 for seed in seeds for name in chosen]
        # longest first: the fraction runs (their own SFT, then RL), the dialogue runs, and last the
        # short single-turn GRPO runs, which fill the gaps so that no job waits alone at the end
        runs.sort(key=lambda run: "--no-probes" in run[1])
        # --jobs N: N runs side by side, each with its share of the cores (unless OMP_NUM_THREADS is
        # set) and its own log; a failed run stops the ablation: the running ones finish, no new one starts
        cores = len(os.sched_getaffinity(0))
        threads = None if args.jobs == 1 or "OMP_NUM_THREADS" in os.environ else max(1, cores // args.jobs)
        logs = lambda path: log if args.jobs == 1 else path.parent / f"{path.name}.log"
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for done in as_completed([pool.submit(launch, path, flags, logs(path), threads) for path, flags in runs]):
                if done.exception() is not None:
                    pool.shutdown(cancel_futures=True)
                    raise done.exception()
    print(table(out, seeds, fractions, args.samples, args.eval_n, args.ei_n, vars(args)))
    print(f"wall time {time.time() - t0:.0f}s; runs under {out}/")


if __name__ == "__main__":
    main()
