#!/usr/bin/env bash
# #16 methods table (session 6, 2026-11-27), run from /work/exp (code at bd9883b, the code of the
# ablation6 rows). Shared warm-up and the ExGRPO / GRPO rows are ablation6's runs (symlinked: the
# same flags bench/methods.py would run); this lane runs what is new, as methods.py would run it.
cd /work/exp
export OMP_NUM_THREADS=1
C="--student micro --level 1 --train-n 4000 --eval-n 500 --eval-max-new-tokens 128"
S="--sft-epochs 2 --sft-batch 32 --sft-micro 32 --sft-lr 2e-3 --sft-warmup 20 --sft-dialogues 1 --k 3 --no-zero-shot"
R="--rl-steps 200 --rl-questions 8 --G 8 --k 3 --max-new-tokens 64 --rl-lr 1e-4 --rl-micro 32 --eval-every 25 --eval-every-n 200"
M=runs/methods
python bench/methods.py --out $M --common "$C" --build-teacher
for m in step-by-step revthink; do
  [ -f $M/$m/results.json ] || python train.py $C $S --method $m --seed 0 --no-zero-shot --out $M/$m
done
for s in 0 1 2; do
  [ -f $M/seed$s/gkd/results.json ] || python train.py $C $R --method gkd --sft-from runs/ablation6/sft/sft/final --seed $s \
      --data-seed 0 --no-zero-shot --gkd-teacher hf:$M/teacher/sft/final --out $M/seed$s/gkd
done
# the zero-shot row: ablation6's warm-up ran with --no-zero-shot, so the untrained micro student
# (seed 0) is scored by its own run and its predictions put where methods.py reads them
# python train.py $C --no-sft --no-rl --seed 0 --data-seed 0 --out $M/zero_shot_micro
# cp $M/zero_shot_micro/zero_shot/predictions_test_*.jsonl runs/ablation6/sft/zero_shot/
