"""The worker of tests/test_dist.py: one SFT step, then one GRPO step, then one ExGRPO step on the
`tiny` student, in one process or in several under torchrun (gloo on the CPU), on the same global
batch. Rank 0 writes every step's metrics and the final weights to OUT (a torch file).

    python tests/dist_worker.py OUT                              # one process
    torchrun --nproc-per-node 2 tests/dist_worker.py OUT          # two: the same numbers
    DIST_WORKER_FAIL_RANK=1 torchrun --nproc-per-node 2 tests/dist_worker.py OUT   # rank 1 raises
    DIST_WORKER_NAN_RANK=1 torchrun --nproc-per-node 2 tests/dist_worker.py OUT    # rank 1's first RL
                                                                         # micro-batch loss is NaN

Rollouts are scripted (each answer a fixed function of its dialogue and its index in the group),
so that both runs train on the same tokens: what is compared is the update, not the sampler.
"""
import argparse
import hashlib
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import data  # noqa: E402
import dist  # noqa: E402
import exgrpo  # noqa: E402
import models  # noqa: E402
import optim  # noqa: E402
import probes  # noqa: E402
import sample  # noqa: E402
import train  # noqa: E402
from data.synth import generate  # noqa: E402

N_QUESTIONS = 4   # the global batch of an RL step; 2 processes take 2 each
GOLD = {}         # a question's user message -> its answer: the script answers right half the time


def scripted_rollouts(model, tok, dialogues, n=1, **_):
    """sample.rollout_dialogues without sampling: answer j of a dialogue is 'The answer is X.', X the
    gold or not by a hash of the dialogue and j (so groups hold right and wrong answers), at a
    hash-given length."""
    ids, masks, turns, dials = [], [], [], []
    for d in dialogues:
        for j in range(n):
            answers = []
            for t, user in enumerate(d):
                h = int(hashlib.sha256(f"{user}|{j}|{t}".encode()).hexdigest(), 16)
                x = GOLD.get(user, h % 50) if h % 2 else 1000 + h % 50
                answers.append("Let me think. " * (h % 3) + f"The answer is {x}.")
            conv_ids, mask = sample.teacher_forced(tok, list(zip(d, answers)))
            ids.append(conv_ids)
            masks.append(mask)
            turns.append(answers)
            dials.append(d)
    return sample.Dialogues(ids, masks, turns, dials)


def nan_once(loss_fn):
    """loss_fn whose first loss with a gradient is NaN (the RL step's micro-batch 0 on this rank)."""
    calls = []

    def fn(*args, **kw):
        loss, stats = loss_fn(*args, **kw)
        if loss.requires_grad and not calls:
            calls.append(1)
            loss = loss * float("nan")
        return loss, stats
    return fn


def rl_args(**kw):
    a = dict(seed=0, k=2, k_partial=None, G=2, delta=0.5, nu=1.0, adv_group="question", adv_norm="none",
             no_probes=False, no_dsu=False, no_aux=False, beta=0.04, clip_eps=0.2, aux_weight=0.1, agg="token",
             rl_micro=3, ppo_epochs=1, grad_clip=1.0, temperature=1.0, max_new_tokens=16, rollout_batch=0,
             sft_micro=2)
    return argparse.Namespace(**{**a, **kw})


def main(out):
    dist.init()
    if os.environ.get("DIST_WORKER_FAIL_RANK") == str(dist.rank()):
        raise RuntimeError(f"rank {dist.rank()} fails on purpose")
    tok = models.smollm2_tokenizer()
    model = dist.shard(models.tiny_model(tok, seed=0))
    ref = dist.shard(models.tiny_model(tok, seed=1).eval().requires_grad_(False))   # not the policy: KL > 0
    opt = optim.make_optimizer(model, 1e-3, "adamw")
    records = generate("train", N_QUESTIONS, seed=0)
    dei, _ = probes.build_dei(records, "oracle", rules=["counterfactual", "why", "decompose"], progress=False)
    GOLD.update({data.user_message(r): r["answer"] for r in dei})
    sample.rollout_dialogues = scripted_rollouts
    if os.environ.get("DIST_WORKER_NAN_RANK") == str(dist.rank()):
        exgrpo.exgrpo_loss = nan_once(exgrpo.exgrpo_loss)
    rows = {}
    # SFT: 5 rows in micro-batches of 2 (2 processes: 3 rows and 2, so 2 micro-batches and 1)
    turns = [[(r["question"], r["reasoning"])] for r in records] + [[(dei[0]["question"], "The answer is 1.")]]
    tf = [sample.teacher_forced(tok, t) for t in turns]
    loss, n_tok, gnorm = train.sft_step(rl_args(), model, tok, opt, tf, list(range(len(tf))),
                                        torch.zeros(len(tf), dtype=torch.long), [1.0])
    rows["sft"] = {"loss": loss, "tokens": n_tok, "grad_norm": gnorm}
    rows["grpo"] = exgrpo.exgrpo_step(rl_args(no_probes=True), model, ref, tok, opt, dei, step=0)
    rows["exgrpo"] = exgrpo.exgrpo_step(rl_args(), model, ref, tok, opt, dei, step=1)
    weights = dist.full_state_dict(model)
    if dist.is_main():
        torch.save({"rows": rows, "weights": weights, "world": dist.world()}, out)
    dist.close()


if __name__ == "__main__":
    dist.run(lambda: main(sys.argv[1]))
