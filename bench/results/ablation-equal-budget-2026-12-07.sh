#!/usr/bin/env bash
# Issue #32: every RL row at one budget (16 questions a step x 300 steps, G 8, k 3) from one shared
# dialogue warm-up, 3 seeds; GKD from the same warm-up as a reference row. Resumable: run it again
# and finished runs are skipped, killed ones resumed from their checkpoints.
# Measured cost on the 2-core CPU, one core a run: the warm-up 738 s; the 300 RL steps of a GRPO run
# 358-549 s, of a GKD run 1,083-1,461 s, of an ExGRPO run 6,703-10,563 s (the sum of step_seconds in
# each run's metrics.jsonl, two to four runs sharing the cores); about 11 h in all, two runs at a time.
# (The GRPO runs of 2026-12-07 ran without --rollout-batch 64: the same rollouts in distribution,
# generated 64 dialogues at a time instead of all at once; only the speed differs.)
set -euo pipefail
cd "$(dirname "$0")/../.."   # the repository root
export OMP_NUM_THREADS=1
C="--student micro --level 1 --train-n 4000 --eval-n 500 --eval-max-new-tokens 128"
S="--sft-epochs 2 --sft-batch 32 --sft-micro 32 --sft-lr 2e-3 --sft-warmup 20 --sft-dialogues 1 --k 3 --no-zero-shot"
R="--rl-steps 300 --rl-questions 16 --G 8 --k 3 --max-new-tokens 64 --rl-lr 1e-4 --rl-micro 32 --eval-every 50 --eval-every-n 200 --rollout-batch 64"
OUT=runs/eq_b
python bench/ablation.py --out $OUT --common "$C" --sft "$S" --rl "$R" --samples 0 --seeds 0,1,2 --fractions "" \
    --variants "SFT + GRPO"                                  # first: does GRPO beat SFT at this budget?
python bench/ablation.py --out $OUT --common "$C" --sft "$S" --rl "$R" --samples 0 --seeds 0,1,2 --fractions "" --jobs 2 \
    --variants "SFT + ExGRPO (outcome only),SFT + ExGRPO + aux,SFT + ExGRPO + aux + DSU"
python bench/methods.py --out runs/methods --common "$C" --build-teacher   # GKD's teacher (wider micro)
# (measured: 81.0% test_id; 6 SFT epochs of a 4 x 192 model, 3,904 s of training beside two training runs)
python bench/ablation.py --out $OUT --common "$C" --sft "$S" --rl "$R" --samples 0 --seeds 0,1,2 --fractions "" --jobs 2 \
    --variants "SFT + GKD (reference)" --gkd-teacher hf:runs/methods/teacher/sft/final
python bench/ablation.py --out $OUT --common "$C" --sft "$S" --rl "$R" --samples 0 --seeds 0 --fractions "" \
    --variants "RL from cold start"                          # the paper's "cold start collapses", at this budget
python bench/ablation.py --out $OUT --table-only --seeds 0,1,2 --fractions "" --samples 8 --ei-n 200 \
    --common "$C" --sft "$S" --rl "$R"                       # the flags go into the json
cp $OUT/ablation.md bench/results/ablation-equal-budget-2026-12-07.md
cp $OUT/ablation.json bench/results/ablation-equal-budget-2026-12-07.json
