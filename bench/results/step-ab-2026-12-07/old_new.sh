#!/usr/bin/env bash
# #32 point 1: the micro ExGRPO step at 32 questions a step, the code the issue measured (f622ccf)
# against HEAD, the two side by side at once (they see the same machine load), same warm-up
# (the table's dialogue warm-up), same flags; HEAD also with --rollout-batch 64 (the table's).
set -u
# OLD, NEW: git worktrees at f622ccf and 4ca8f9e (git worktree add ../old f622ccf); RUNS: where the
# table's runs are (runs/eq_b/sft is the shared warm-up)
OLD=${OLD:-../old} NEW=${NEW:-../new} RUNS=${RUNS:-$PWD/runs}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
W=$RUNS/eq_b/sft/sft/final
F="--student micro --level 1 --train-n 4000 --eval-n 16 --sft-from $W --method exgrpo --no-zero-shot --rl-questions 32 --G 8 --k 3 --max-new-tokens 64 --rl-micro 32 --rl-lr 1e-4 --rl-steps 3 --eval-every 0 --seed 0"
O=$RUNS/ab; mkdir -p $O
i=0
for pair in "old0 new64" "old0 new0"; do
  i=$((i+1))
  set -- $pair
  echo "=== $1 | $2 $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  for x in $1 $2; do
    rm -rf $O/$x; case $x in old*) dir=$OLD;; *) dir=$NEW;; esac
    (cd $dir && python train.py $F --rollout-batch ${x//[a-z]/} --out $O/$x > $O/$x.log 2>&1) &
  done
  wait
  for x in $1 $2; do mv $O/$x $O/$x-p$i; mv $O/$x.log $O/$x-p$i.log; done
done
