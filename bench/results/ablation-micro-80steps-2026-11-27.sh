#!/usr/bin/env bash
# The whole #12 ablation at 80 RL steps, two runs side by side after the warm-up; resumable (rerun it).
set -euo pipefail
cd "$(dirname "$0")/../.."   # the repository root
C="--student micro --level 1 --train-n 4000 --eval-n 500 --eval-max-new-tokens 128"
S="--sft-epochs 2 --sft-batch 32 --sft-micro 32 --sft-lr 2e-3 --sft-warmup 20 --sft-dialogues 1 --k 3 --no-zero-shot"
R="--rl-steps 80 --rl-questions 8 --G 8 --k 3 --max-new-tokens 64 --rl-lr 1e-4 --rl-micro 32 --eval-every 20 --eval-every-n 200"
OUT=runs/ablation8
echo "start $(date +%s) $(date)"
python bench/ablation.py --out $OUT --common "$C" --sft "$S" --rl "$R" --jobs 2 --samples 0 --seeds 0,1,2 \
    --variants "SFT + GRPO,SFT + ExGRPO (outcome only),SFT + ExGRPO + aux,SFT + ExGRPO + aux + DSU" \
    --fractions 0.1,0.25,0.5 --fraction-seeds 0
echo "pool done $(date +%s) $(date)"
python bench/ablation.py --out $OUT --common "$C" --sft "$S" --rl "$R --rl-steps 20" --samples 0 --seeds 0 \
    --variants "RL from cold start" --fractions ""
echo "end $(date +%s) $(date)"
python bench/ablation.py --out $OUT --table-only --samples 0 --seeds 0,1,2 --fractions 0.1,0.25,0.5
