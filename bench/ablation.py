"""
The paper's ablation on the synthetic world: five variants x several seeds, one table.

    python bench/ablation.py                                   # 3 seeds, the default CPU preset
    python bench/ablation.py --seeds 0 --extra "--rl-steps 20"  # one seed, longer RL
    python bench/ablation.py --table-only                      # re-print the table from disk
    python bench/ablation.py --sft-run runs/ablation-sft \      # one warm-up shared by every seed
        --extra "--student small --rl-steps 16"

Variants (each a train.py flag, DESIGN.md section 1):
    SFT only               --no-rl
    SFT + GRPO             --no-probes        plain GRPO on the original questions
    SFT + ExGRPO w/o DSU   --no-dsu
    SFT + ExGRPO           (nothing)          the full method
    RL from cold start     --no-sft

The four warm-started variants of a seed share that seed's SFT checkpoint (--sft-from),
so the only difference between them is the RL stage. With --sft-run RUN, every seed starts
from that one finished train.py run's warm-up instead (the seed then varies the RL stage
only, and "SFT only" is that run's single evaluation). Each run is a subprocess with its
own run folder under --out; a finished run is skipped, so a killed ablation resumes.
Writes <out>/ablation.md and <out>/ablation.json: mean +- std over seeds of the accuracy on
test_id and test_ood, and the mean standard error of a single run's accuracy.
"""

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {  # name -> train.py flags
    "SFT only": ["--no-rl"],
    "SFT + GRPO": ["--no-probes"],
    "SFT + ExGRPO w/o DSU": ["--no-dsu"],
    "SFT + ExGRPO": [],
    "RL from cold start": ["--no-sft"],
}
SPLITS = ("test_id", "test_ood")


def run_dir(out, seed, name):
    return Path(out) / f"seed{seed}" / name.lower().replace(" ", "_").replace("/", "").replace("+", "plus")


def launch(out, seed, name, flags, extra, log):
    path = run_dir(out, seed, name)
    if (path / "results.json").exists():
        return path
    cmd = [sys.executable, "train.py", "--seed", str(seed)] + flags + extra
    cmd += ["--resume", str(path)] if (path / "config.json").exists() else ["--out", str(path)]
    print(f"[{time.strftime('%H:%M:%S')}] seed {seed} {name}: {' '.join(shlex.quote(c) for c in cmd[1:])}", flush=True)
    t0 = time.time()
    with open(log, "a") as f:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"error: {name} (seed {seed}) failed with exit code {rc}; see {log}")
    print(f"    done in {time.time() - t0:.0f}s", flush=True)
    return path


def accuracies(path, stage=None):
    """{split: (accuracy, n)} of `stage`, or of the last evaluated stage, of a finished run."""
    state = json.loads((path / "state.json").read_text())["done"]
    cfg = json.loads((path / "config.json").read_text())
    stage = state[stage] if stage else (state.get("eval_rl") or state.get("eval_sft"))
    return {s: (stage[s], cfg["eval_n"]) for s in SPLITS}


def table(out, seeds, sft_run=None):
    rows, lines = {}, []
    for name in VARIANTS:
        per_split = {s: [] for s in SPLITS}
        for seed in ([None] if sft_run and name == "SFT only" else seeds):
            path = Path(sft_run) if seed is None else run_dir(out, seed, name)
            if (path / "results.json").exists():
                for s, (acc, n) in accuracies(path, "eval_sft" if name == "SFT only" else None).items():
                    per_split[s].append((acc, n))
        if not per_split[SPLITS[0]]:
            continue
        row = {}
        for s, vals in per_split.items():
            accs = [a for a, _ in vals]
            mean = sum(accs) / len(accs)
            std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else 0.0
            se = sum(math.sqrt(a * (1 - a) / n) for a, n in vals) / len(vals)  # one run's binomial error
            row[s] = {"mean": mean, "std": std, "stderr": se, "seeds": len(accs), "values": accs}
        rows[name] = row
    head = "| variant | seeds | test_id (%) | test_ood (%) |\n|---|---|---|---|\n"
    body = "".join(
        f"| {name} | {r['test_id']['seeds']} | " + " | ".join(
            f"{100 * r[s]['mean']:.1f} ± " + (f"{100 * r[s]['std']:.1f}" if r[s]["seeds"] > 1 else "–") +
            f" (se {100 * r[s]['stderr']:.1f})" for s in SPLITS) + " |\n"
        for name, r in rows.items())
    text = head + body + "\nmean ± std over seeds; se = mean standard error of one run's accuracy.\n"
    (Path(out) / "ablation.md").write_text(text)
    (Path(out) / "ablation.json").write_text(json.dumps(rows, indent=2))
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--extra", default="", help="more train.py flags for every run, e.g. '--rl-steps 20'")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--sft-run", default=None, metavar="RUN",
                    help="a finished train.py run (--no-rl) whose warm-up every seed shares")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    extra = shlex.split(args.extra)
    if args.sft_run and not (Path(args.sft_run) / "sft" / "final").is_dir():
        sys.exit(f"error: --sft-run {args.sft_run} holds no sft/final checkpoint (run train.py --no-rl first)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    log = Path(args.out) / "ablation.log"
    t0 = time.time()
    if not args.table_only:
        for seed in seeds:
            sft = None
            for name in chosen:
                flags = list(VARIANTS[name])
                if args.sft_run and name == "SFT only":
                    continue   # its row is the shared run's evaluation
                if args.sft_run and "--no-sft" not in flags:
                    flags += ["--sft-from", str(Path(args.sft_run) / "sft" / "final"), "--no-zero-shot"]
                elif name != "SFT only" and "--no-sft" not in flags:
                    # the shared warm-up: the SFT-only run of this seed
                    sft = launch(args.out, seed, "SFT only", VARIANTS["SFT only"], extra, log)
                    flags += ["--sft-from", str(sft / "sft" / "final"), "--no-zero-shot"]
                elif name != "SFT only":
                    flags += ["--no-zero-shot"]
                launch(args.out, seed, name, flags, extra, log)
    print(table(args.out, seeds, args.sft_run))
    print(f"wall time {time.time() - t0:.0f}s; runs under {args.out}/")


if __name__ == "__main__":
    main()
