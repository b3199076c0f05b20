# A/B: the micro ExGRPO step (ablation6 warm-up, README's C/R flags, 6 steps), base = 56bd6f4, new = HEAD
C="--student micro --level 1 --train-n 4000 --eval-n 20 --eval-max-new-tokens 128"
R="--rl-steps 6 --rl-questions 8 --G 8 --k 3 --max-new-tokens 64 --rl-lr 1e-4 --rl-micro 32"
W="--sft-from /work/exp/runs/ablation6/sft/sft/final --data-seed 0 --no-zero-shot --seed 0"
for rep in 1 2; do
  for side in base main; do
    d=/tmp/base; [ $side = main ] && d=/work/main
    out=/tmp/b/ab_${side}_$rep; rm -rf $out
    (cd $d && python train.py $C $R $W --out $out > $out.log 2>&1)
    python -c "import json; rows=[json.loads(l) for l in open('$out/metrics.jsonl')]; rows=[r for r in rows if 'step_seconds' in r]; print('$side', $rep, [r['step_seconds'] for r in rows], [r['gen_seconds'] for r in rows], [round(r['reward'],3) for r in rows])"
  done
done
