#!/usr/bin/env bash
# #32 point 1: the ExGRPO step at 32 questions a step, the issue's setting against the table's,
# A B C D in one run on the same machine (CPU seconds of the process are the steadier figure).
#   st   = a warm-up that never saw a dialogue (--sft-dialogues 0), as when the issue was filed
#   eq_b = the shared dialogue warm-up of the table (--sft-dialogues 1)
# rb = --rollout-batch (0: all 256 dialogues at once, as at the issue; 64: the table's)
set -u
cd "$(dirname "$0")/../../.."   # the repository root
RUNS=${RUNS:-runs}   # runs/st/sft: the warm-up flags with --sft-dialogues 0; runs/eq_b/sft: the table's
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
F="--student micro --level 1 --rl-questions 32 --G 8 --k 3 --max-new-tokens 64 --rl-micro 32 --rl-lr 1e-4"
for rep in 1 2; do
  for cfg in "st 0" "eq_b 64" "st 64" "eq_b 0"; do
    set -- $cfg
    echo "=== rep $rep warm-up $1 rollout-batch $2 $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
    python bench/step_profile.py --run $RUNS/$1/sft --steps 2 --ops 0 --decode lean -- $F --rollout-batch $2 2>&1 | grep -v "it/s\]"
  done
done
