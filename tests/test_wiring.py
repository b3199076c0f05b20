"""The glue between the tested pieces (issue #33): each test here fails on one single-line bug that
the rest of the suite let through, and says which one. The equations themselves are checked by
hand in test_exgrpo.py; here it is whether the right numbers reach them.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_wiring.py

  - the reward of a rollout is its FINAL answer's, and the logged accuracy counts only the
    dialogues that answer as tested (Scenario A and plain, never the partial Scenario B);
  - the advantages follow their rollout through policy_update's length sort, over any micro-batching
    (the gradient equals a per-rollout gradient written out here by hand);
  - pi_old is frozen over --ppo-epochs > 1; the probe draws change with the step;
  - Scenario B has k' in [1, k-1] probes; the constant aggregation's budget is (k + 1) turns;
  - a resume restores the NEWEST checkpoint's optimizer, fp32 master weights and model, into a
    model that was elsewhere; the fp32 master state round-trips exactly;
  - the SFT learning rate follows a cosine, mid-points included;
  - resume compared state by state, for every optimizer scheme (optim.OPTIMIZERS): train.py's own
    rl_stage and sft_stage, their run folder as a kill leaves it (ckpt and ckpt.prev on disk, a
    metrics line past the checkpoint), resumed into a model from elsewhere, end in the uninterrupted
    run's weights, master weights, moments, step counts, learning rate, torch RNG and metrics
    (the slowest tests, last in the file);
  - the rest: the single-line bugs bench/mutate.py found surviving in exgrpo.py, sample.py's scoring,
    rewards.py, runs.py, optim.py and the teacher cache (bench/results/mutation-*.md), one test each
    or a few, every docstring naming the bug it catches.

Rollouts are the tiny random Llama's own (conftest.py), with their answer TEXTS replaced by a
script (`scripted`), so that rewards, and everything computed from them, are known in advance.
"""
import argparse
import copy
import fcntl
import io
import json
import math
import os
import random
import shutil
import threading
import time
import types
from pathlib import Path

import pytest
import torch

import exgrpo
import optim
import probes
import rewards
import runs
import sample
import teachers
import train
from data import synth

# -----------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a busy 2-core machine the tiny model ran 15x slower on two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _nudged(model, seed, scale=0.02):
    """A copy of `model` with seeded noise on every weight: another policy of the same shape (a
    reference, or a model that is elsewhere) without depending on where the model builders live."""
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_((torch.randn(p.shape, generator=g) * scale).to(p.dtype))
    return other


def _cfg(**kw):
    """train.py's stage-3 flags, as exgrpo_step and policy_update read them."""
    a = {"no_probes": False, "no_dsu": False, "no_aux": True, "k": 2, "k_partial": None, "G": 2, "delta": 0.5,
         "nu": 1.0, "beta": 0.0, "clip_eps": 0.2, "aux_weight": 0.1, "agg": "token", "rl_micro": 64,
         "max_new_tokens": 3, "temperature": 1.0, "ppo_epochs": 1, "grad_clip": 0.0, "seed": 0, "rollout_batch": 0,
         "adv_norm": "none", "adv_group": "question"}
    return argparse.Namespace(**{**a, **kw})


@pytest.fixture(scope="module")
def probe_q():
    """A D_EI record of the synthetic world with 10 usable RL probes (oracle teacher)."""
    dei, _ = probes.build_dei(synth.generate("train", 1, seed=5), "oracle", progress=False)
    assert len(probes.rl_probes(dei[0])) >= 5
    return dei[0]


PLAIN_Q = {"id": "plain", "question": "What is 2 + 2?", "answer": "4", "answer_type": "number"}


def _score_reward(text, gold, answer_type, question):
    """The reward the script wrote into the answer: 'score 0.6' -> 0.6."""
    return float(text.split()[-1])


def _kind(dialogue, k):
    """Scenario of a rollout from its user turns (k probes + Q = full, a single turn = plain)."""
    return "plain" if len(dialogue) == 1 else "full" if len(dialogue) == k + 1 else "partial"


@pytest.fixture()
def scripted(monkeypatch):
    """script(kind, j, turns) -> the answer texts of rollout j of a group: sample.rollout_dialogues
    runs as it is (real ids and masks), then each rollout's texts are replaced. Returns the list of
    rolls it produced (after the replacement)."""
    rolls, real = [], sample.rollout_dialogues

    def install(script, k):
        def rollout(model, tok, dialogues, n=1, **kw):
            roll = real(model, tok, dialogues, n=n, **kw)
            roll.turns = [script(_kind(d, k), i % n, len(d)) for i, d in enumerate(roll.dialogues)]
            rolls.append(roll)
            return roll
        monkeypatch.setattr(sample, "rollout_dialogues", rollout)
        return rolls
    return install


def _binary_script(kind, j, turns):
    """A: first turn wrong, final answer right; B: first turn right, final answer wrong;
    plain: rollout 0 right, rollout 1 wrong. A reward read from the wrong turn flips A and B."""
    final = {"full": 1, "partial": 0, "plain": 1 - j}[kind]
    first = 1 - final if kind != "plain" else final
    return [f"score {first}"] + ["score 0"] * (turns - 2) + [f"score {final}"] * (turns > 1)


class GradTap:
    """An optimizer for policy_update that keeps a copy of each step's gradient and, with an
    `inner` torch optimizer, applies it (then keeps a copy of the weights after the step)."""
    fused = False

    def __init__(self, model, inner=None):
        self.params, self.inner = list(model.parameters()), inner
        self.param_groups = inner.param_groups if inner else []
        self.grads, self.weights = [], []

    def step(self):
        self.grads.append([torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in self.params])
        if self.inner:
            self.inner.step()
            self.weights.append([p.detach().clone() for p in self.params])

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def _row_logprobs(model, ids, mask, temperature):
    """log-probs of ONE rollout, alone in its batch (no sort, no shared prefix), on its masked tokens."""
    b = sample.pack([[]], [ids], 0, [mask])
    lp = sample.token_logprobs(model, b.ids, b.attn, b.loss_mask, temperature, share_prefix=False)
    return lp[b.loss_mask.bool()]


def _reference_grads(model, rows, masks, adv, temperature, ref=None, beta=0.0, old=None, clip_eps=0.2,
                     aux=None, aux_weight=0.1, agg="token"):
    """The gradient of the ExGRPO loss written out rollout by rollout, token-mean aggregation:
        sum_i sum_t [ -min(rho A_i, clip(rho) A_i) + beta (e^x - x - 1) ] / n_tokens
        + aux_weight * sum -log pi(teacher tokens, T = 1) / n_aux_tokens
    rho = exp(lp - old) (old = lp.detach() unless given), x = lp_ref - lp. agg="sequence": each
    rollout's term divided by its own tokens, then by the number of rollouts, instead."""
    model.zero_grad()
    n_tok = sum(sum(m) for m in masks)
    total = 0.0
    for i, (ids, m) in enumerate(zip(rows, masks)):
        lp = _row_logprobs(model, ids, m, temperature)
        rho = torch.exp(lp - (lp.detach() if old is None else old[i]))
        a = float(adv[i])
        term = -torch.minimum(rho * a, rho.clamp(1 - clip_eps, 1 + clip_eps) * a)
        if beta:
            with torch.no_grad():
                x_ref = _row_logprobs(ref, ids, m, temperature)
            x = x_ref - lp
            term = term + beta * (torch.exp(x) - x - 1)
        total = total + (term.sum() / n_tok if agg == "token" else term.sum() / sum(m) / len(rows))
    if aux is not None:
        lps = [_row_logprobs(model, ids, m, 1.0) for ids, m in aux]
        total = total + aux_weight * -torch.cat(lps).sum() / sum(sum(m) for _, m in aux)
    total.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad()
    return grads


def _assert_grads_equal(got, want, what):
    assert any(g.abs().sum() > 0 for g in want), "the reference gradient is zero: the test is vacuous"
    for g, w in zip(got, want):   # float error only: 1e-5 of the tensor's scale (a wrong advantage: ~1)
        err = ((g - w).abs().max() / w.abs().max().clamp(min=1e-12)).item()
        assert err < 1e-4, f"{what}: gradient off by {err:.2e} of its scale"


def _hand_roll():
    """Six rollouts (3 dialogues x G = 2) of token ids written out here: each group shares its
    prompt; lengths differ within and across groups (8 7 | 20 21 | 15 16), so that policy_update's
    sort (longest group first, then longest row) reorders them all: 3 2 5 4 0 1. Masks: 1 on the
    student turns only."""
    g = torch.Generator().manual_seed(3)
    ids_of = lambda n: torch.randint(100, 5000, (n,), generator=g).tolist()
    rows, masks = [], []
    # (prompt length, [(student, template), ... per turn] of each of its two rollouts)
    groups = [(5, [[(3, 0)], [(2, 0)]]),                        # short plain group
              (4, [[(4, 3), (5, 2), (2, 0)], [(3, 3), (4, 2), (5, 0)]]),   # long (Scenario A)
              (6, [[(2, 3), (4, 0)], [(5, 3), (2, 0)]])]        # middle (Scenario B)
    for plen, rollouts in groups:
        prompt = ids_of(plen)
        for turns in rollouts:
            ids, mask = list(prompt), [0] * plen
            for s, t in turns:
                ids += ids_of(s) + ids_of(t)
                mask += [1] * s + [0] * t
            rows.append(ids)
            masks.append(mask)
    return types.SimpleNamespace(ids=rows, student_mask=masks)

# -----------------------------------------------------------------------------
# 1, 5: the reward of the final answer; the accuracy of the dialogues that answer as tested


def test_reward_is_the_final_answers_and_accuracy_skips_scenario_b(tiny, tok, probe_q, scripted):
    """Catches: R_base read from the first turn of a dialogue instead of its final answer (A and B
    flip), and the logged accuracy averaging Scenario B (partial) rollouts in. Scripted rewards:
    A = [1, 1] (first turns 0), B = [0, 0] (first turns 1), plain = [1, 0]."""
    rolls = scripted(_binary_script, k=2)
    row = exgrpo.exgrpo_step(_cfg(), tiny, None, tok, GradTap(tiny), [probe_q, PLAIN_Q], step=0,
                             reward_fn=_score_reward)
    assert [len(d) for d in rolls[0].dialogues[::2]] == [3, 2, 1]   # A, B, plain
    assert row["P_full"] == 1.0 and row["P_partial"] == 0.0 and row["dsu_rate"] == 1.0
    assert row["reward"] == pytest.approx(3 / 6)                     # R_base over all 6 rollouts
    assert row["accuracy"] == pytest.approx(3 / 4)                   # A [1, 1] + plain [1, 0]; not B
    assert row["reward_with_bonus"] == pytest.approx((1.5 + 1.5 + 0 + 0 + 1 + 0) / 6)
    # advantages: question 0's group mean 0.75 -> +-0.75 x 4; plain's mean 0.5 -> +-0.5 x 2
    assert row["adv_abs"] == pytest.approx((4 * 0.75 + 2 * 0.5) / 6)


def test_rollout_and_score_reads_the_last_turn(tiny, tok, probe_q, scripted):
    """Catches: R_base read from the first (or any but the last) turn of a dialogue."""
    scripted(_binary_script, k=2)
    dialogues, meta, _ = exgrpo.build_scenarios([probe_q, PLAIN_Q], k=2, rng=random.Random(0))
    _, r = exgrpo.rollout_and_score(_cfg(), tiny, tok, [probe_q, PLAIN_Q], dialogues, meta, _score_reward)
    assert r.tolist() == [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]

# -----------------------------------------------------------------------------
# 7: the constant aggregation's fixed budget


def test_constant_aggregation_budget_is_k_plus_one_turns(tiny, tok, probe_q, scripted):
    """Catches: the `constant` aggregation's token budget computed from k turns instead of k + 1
    (k probes + the question). At the update the ratio is 1, so with beta = 0 and no aux
        pg_loss = sum_i -A_i n_i / (N * (k + 1) * max_new_tokens)
    with n_i the student tokens of rollout i, N = 6 rollouts, k = 2, max_new_tokens = 3."""
    rolls = scripted(_binary_script, k=2)
    row = exgrpo.exgrpo_step(_cfg(agg="constant", rl_micro=4), tiny, None, tok, GradTap(tiny),
                             [probe_q, PLAIN_Q], step=0, reward_fn=_score_reward)
    adv = [0.75, 0.75, -0.75, -0.75, 0.5, -0.5]          # A, A, B, B, plain, plain (see the test above)
    n = [sum(m) for m in rolls[0].student_mask]
    weighted = sum(-a * n_i for a, n_i in zip(adv, n))
    assert weighted != 0                                  # else any budget would give 0
    assert row["pg_loss"] == pytest.approx(weighted / (6 * 3 * 3), rel=1e-5)
    assert row["loss"] == pytest.approx(weighted / (6 * 3 * 3), rel=1e-5)

# -----------------------------------------------------------------------------
# 4, 6: the probe draws


class _Stop(Exception):
    pass


def test_probe_draws_change_with_the_step_and_repeat_on_resume(probe_q, monkeypatch):
    """Catches: the step left out of the probe-draw seed (the same probes at every step). The same
    (seed, step) must give the same draws (a resumed run redoes them)."""
    seen = []

    def rollout(model, tok, dialogues, **kw):
        seen.append(dialogues)
        raise _Stop   # the draws are all this test needs
    monkeypatch.setattr(sample, "rollout_dialogues", rollout)
    for step in (0, 1, 2, 3, 0):
        with pytest.raises(_Stop):
            exgrpo.exgrpo_step(_cfg(k=3), None, None, None, None, [probe_q], step=step)
    full = [tuple(d[0]) for d in seen]
    assert full[4] == full[0]                    # step 0 twice: the same draws
    assert len(set(full[:4])) >= 3               # steps 0..3: the draws move (10 probes, 720 orderings)
    with pytest.raises(_Stop):
        exgrpo.exgrpo_step(_cfg(k=3, seed=1), None, None, None, None, [probe_q], step=0)
    assert tuple(seen[-1][0]) != full[0]         # and with the seed


@pytest.mark.parametrize("k", [2, 3, 5])
def test_scenario_b_has_between_1_and_k_minus_1_probes(probe_q, k):
    """Catches: Scenario B drawn with k' = 0 probes (or k' = k). Over 400 draws, k' stays in
    [1, k-1] and takes every value there; B is A's first k' probes, then the same Q."""
    seen = set()
    for seed in range(400):
        dialogues, meta, _ = exgrpo.build_scenarios([probe_q], k, rng=random.Random(seed))
        assert meta == [(0, "full"), (0, "partial")]
        full, part = dialogues
        kp = len(part) - 1
        assert len(full) == k + 1 and 1 <= kp <= k - 1, (seed, kp)
        assert part[:kp] == full[:kp] and part[-1] == full[-1]
        seen.add(kp)
    assert seen == set(range(1, k))


def test_scenario_b_with_two_probes_has_exactly_one(probe_q):
    """Catches k' = 0 where it is likeliest: a question with 2 usable probes (k' can only be 1),
    with k = 5 asked for; with 1 probe there is no Scenario B at all (a plain dialogue)."""
    two = dict(probe_q, probes=probes.rl_probes(probe_q)[:2])
    one = dict(probe_q, probes=probes.rl_probes(probe_q)[:1])
    for seed in range(100):
        dialogues, meta, _ = exgrpo.build_scenarios([two, one], 5, rng=random.Random(seed))
        assert meta == [(0, "full"), (0, "partial"), (1, "plain")]
        assert [len(d) for d in dialogues] == [3, 2, 1]

# -----------------------------------------------------------------------------
# 2: advantages follow their rollout through the length sort; micro-batches = one batch


def test_policy_update_gradient_is_the_per_rollout_gradient(tiny, tok):
    """Catches: advantages taken in rollout order while policy_update's micro-batches are sorted by
    length (a rollout then trains on another's advantage). Six rollouts of different lengths (the
    sort reorders them), six distinct advantages, KL to a different reference, aux loss on, T = 0.7:
    the accumulated gradient of every micro-batching (1, 4, all 6) equals the loss written out
    rollout by rollout."""
    ref = _nudged(tiny, seed=1).eval().requires_grad_(False)
    roll = _hand_roll()
    assert [len(x) for x in roll.ids] == [8, 7, 20, 21, 15, 16]
    adv = torch.tensor([0.9, -0.4, 1.3, -1.1, 0.2, -0.6])
    aux_turns = [[("Probe: what is 3 + 4?", "3 + 4 = 7. The answer is 7.")]]
    want = _reference_grads(tiny, roll.ids, roll.student_mask, adv, 0.7, ref=ref, beta=0.04,
                            aux=[sample.teacher_forced(tok, t) for t in aux_turns])
    for micro in (1, 4, 64):
        tap = GradTap(tiny)   # applies nothing: every run starts from the same weights
        row = exgrpo.policy_update(_cfg(rl_micro=micro, beta=0.04, temperature=0.7), tiny, ref, tok, tap,
                                   exgrpo.pack_rollouts(tok, roll, adv, aux_turns, token_budget=None))
        assert len(tap.grads) == 1 and row["skipped_micro"] == 0
        _assert_grads_equal(tap.grads[0], want, f"rl_micro {micro}")


def test_exgrpo_step_micro_batches_give_the_one_batch_gradient(tiny, tok, probe_q, scripted):
    """Catches the same bug end to end: distinct non-zero rewards, the plain question first so that
    the sort (longest dialogues first: A, B, plain) reorders the rollouts, KL on. rl_micro 1 and 64
    give the same gradient, and it is the per-rollout one with the hand-computed advantages:
        plain [0.2, 0.9]: mean 0.55 -> [-0.35, 0.35]
        A [1.0, 0.3] + DSU 0.5 each (P_full 0.65 > P_partial 0.3) = [1.5, 0.8], B [0.0, 0.6]:
        mean 0.725 -> A [0.775, 0.075], B [-0.725, -0.125]"""
    values = {"plain": [0.2, 0.9], "full": [1.0, 0.3], "partial": [0.0, 0.6]}
    rolls = scripted(lambda kind, j, turns: ["score 9"] * (turns - 1) + [f"score {values[kind][j]}"], k=2)
    base, ref = tiny, _nudged(tiny, seed=1).eval().requires_grad_(False)
    taps = []
    for micro in (64, 1):
        model = copy.deepcopy(base)
        taps.append(GradTap(model))
        torch.manual_seed(0)   # the same rollouts both times
        row = exgrpo.exgrpo_step(_cfg(rl_micro=micro, beta=0.04, max_new_tokens=4), model, ref, tok, taps[-1],
                                 [PLAIN_Q, probe_q], step=0, reward_fn=_score_reward)
        assert row["reward"] == pytest.approx((0.2 + 0.9 + 1.0 + 0.3 + 0.0 + 0.6) / 6)
    roll = rolls[-1]
    assert rolls[0].ids == roll.ids
    assert [_kind(d, 2) for d in roll.dialogues] == ["plain"] * 2 + ["full"] * 2 + ["partial"] * 2
    adv = [-0.35, 0.35, 0.775, 0.075, -0.725, -0.125]
    want = _reference_grads(copy.deepcopy(base), roll.ids, roll.student_mask, adv, 1.0, ref=ref, beta=0.04)
    _assert_grads_equal(taps[0].grads[0], want, "one micro-batch")
    _assert_grads_equal(taps[1].grads[0], want, "rl_micro 1")

# -----------------------------------------------------------------------------
# 3: pi_old frozen over the PPO epochs


def test_pi_old_is_frozen_across_ppo_epochs(tiny, tok):
    """Catches: pi_old recomputed (or taken as pi_theta.detach()) in each of --ppo-epochs 2, which
    keeps the ratio at 1 and the clip off. The second epoch's gradient must be the clipped
    surrogate's at the moved weights with the log-probs of the weights BEFORE the first epoch."""
    base, model = tiny, copy.deepcopy(tiny)
    roll = _hand_roll()
    adv = torch.tensor([0.9, -0.4, 1.3, -1.1, 0.2, -0.6])
    old = [_row_logprobs(base, ids, m, 1.0).detach() for ids, m in zip(roll.ids, roll.student_mask)]
    tap = GradTap(model, torch.optim.SGD(model.parameters(), lr=20.0))
    row = exgrpo.policy_update(_cfg(ppo_epochs=2, rl_micro=4), model, None, tok, tap,
                               exgrpo.pack_rollouts(tok, roll, adv, [], None))
    assert len(tap.grads) == 2
    assert row["clip_frac"] > 0          # the first epoch moved the policy past the clip range
    moved = copy.deepcopy(base)
    with torch.no_grad():
        for p, w in zip(moved.parameters(), tap.weights[0]):
            p.copy_(w)
    first = _reference_grads(copy.deepcopy(base), roll.ids, roll.student_mask, adv, 1.0)
    _assert_grads_equal(tap.grads[0], first, "epoch 1")
    second = _reference_grads(moved, roll.ids, roll.student_mask, adv, 1.0, old=old)
    _assert_grads_equal(tap.grads[1], second, "epoch 2")

# -----------------------------------------------------------------------------
# 8, 9: resume: the newest checkpoint's optimizer, master weights and model


def _random_step(model, opt, seed):
    """One optimizer step on a fixed random gradient (no forward pass needed)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = (torch.randn(p.shape, generator=g) * 0.1).to(p.dtype)
    optim.finish_step(opt, model.parameters(), grad_clip=0.0)


def test_master_weights_state_round_trips_exactly():
    """Catches: MasterWeightAdamW.load_state_dict loading the fp32 master weights but not copying
    them into the model (or not into the master copy). Random weights whose fp32 master values are
    not representable in bf16; the receiving model starts elsewhere; one more step on both agrees."""
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter((torch.randn(257, generator=g) * 0.02).bfloat16())
    opt = optim.MasterWeightAdamW([p], lr=1e-3)
    for _ in range(3):
        p.grad = torch.randn(257, generator=g).bfloat16()
        opt.step()
    master = opt.master[0].detach()
    assert (master.bfloat16().float() != master).float().mean() > 0.9   # genuinely fp32 values
    q = torch.nn.Parameter(torch.randn(257, generator=g).bfloat16())      # elsewhere
    opt2 = optim.MasterWeightAdamW([q], lr=1e-3)
    saved = io.BytesIO()                 # through torch.save, as a checkpoint: an in-memory state_dict
    torch.save(opt.state_dict(), saved)  # shares its Adam moments with `opt` (torch's own behaviour)
    saved.seek(0)
    opt2.load_state_dict(torch.load(saved, weights_only=False))
    assert torch.equal(opt2.master[0], master)
    assert torch.equal(q.detach(), master.bfloat16()) and torch.equal(q.detach(), p.detach())
    grad = torch.randn(257, generator=g).bfloat16()
    for param, o in ((p, opt), (q, opt2)):
        param.grad = grad.clone()
        o.step()
    assert torch.equal(opt2.master[0], opt.master[0]) and torch.equal(q.detach(), p.detach())


def test_resume_restores_the_newest_checkpoint_into_a_model_elsewhere(tmp_path, tiny, tok):
    """Catches: the optimizer state (or step) taken from the previous checkpoint instead of the
    newest, and the fp32 master weights not restored. A bf16 model with master weights: two
    checkpoints (steps 1 and 2), then the run goes on one more step. A fresh model from another
    seed resumes: it gets step 2's weights, master and Adam moments, and the same next step."""
    model = tiny.to(torch.bfloat16)
    opt = optim.make_optimizer(model, 1e-3, "master")
    run = runs.Run(tmp_path)
    _random_step(model, opt, 1)
    runs.save_trainer(run, "rl", model, tok, opt, 1)
    _random_step(model, opt, 2)
    runs.save_trainer(run, "rl", model, tok, opt, 2)
    rng_after_save = torch.rand(4)
    at_2 = copy.deepcopy(opt.state_dict())
    weights_2 = [p.detach().clone() for p in model.parameters()]
    _random_step(model, opt, 3)                           # the killed run went on past its checkpoint
    assert (run.path / "rl" / "ckpt.prev").is_dir()

    fresh = _nudged(model, seed=7)                          # elsewhere
    assert not torch.equal(next(fresh.parameters()), weights_2[0])
    opt2 = optim.make_optimizer(fresh, 1e-3, "master")
    assert runs.resume_trainer(run, "rl", fresh, opt2) == 2
    assert torch.equal(torch.rand(4), rng_after_save)     # the RNG of the newest checkpoint
    for p, w in zip(fresh.parameters(), weights_2):
        assert torch.equal(p.detach(), w)
    got = opt2.state_dict()
    for m, want in zip(got["master"], at_2["master"]):
        assert torch.equal(m, want)
    for key, s in at_2["opt"]["state"].items():
        assert float(got["opt"]["state"][key]["step"]) == 2.0
        assert torch.equal(got["opt"]["state"][key]["exp_avg"], s["exp_avg"])
        assert torch.equal(got["opt"]["state"][key]["exp_avg_sq"], s["exp_avg_sq"])
    _random_step(fresh, opt2, 3)
    for p, q in zip(fresh.parameters(), model.parameters()):
        assert torch.equal(p.detach(), q.detach())
    for m, n in zip(opt2.master, opt.master):
        assert torch.equal(m.detach(), n.detach())

# -----------------------------------------------------------------------------
# 10: the learning-rate schedule


@pytest.mark.parametrize("step, expected", [
    (0, 0.5), (1, 1.0),                                  # warm-up 2: 1/2, 2/2
    (2, 1.0),                                            # progress 0
    (4, 0.1 + 0.45 * (1 + math.sqrt(0.5))),              # progress 1/4: 0.868198
    (6, 0.55),                                           # progress 1/2 (cosine = linear here)
    (8, 0.1 + 0.45 * (1 - math.sqrt(0.5))),              # progress 3/4: 0.231802
    (5, 0.1 + 0.45 * (1 + math.cos(3 * math.pi / 8))),   # progress 3/8: 0.722215
    (10, 0.1), (12, 0.1),                                # the end, and past it
])
def test_cosine_lr_mid_points_by_hand(step, expected):
    """Catches: a linear decay in place of the cosine (it agrees at the ends and the middle, and
    differs at 1/4: 0.775 against 0.868). lr 1, warm-up 2, 10 steps: decay over 8 steps to 0.1."""
    assert optim.cosine_lr(step, 10, 1.0, warmup=2) == pytest.approx(expected, abs=1e-6)

# -----------------------------------------------------------------------------
# the run folder: a new run, a resumed one, a finished one (runs.resolve_run, open_run, finish)


def _run_args(**kw):
    return argparse.Namespace(**{"resume": None, "out": None, "student": "tiny", "rl_lr": 1e-5, "report_to": "none",
                                 "rl_steps": 3, "seed": 0, **kw})


def test_resolve_run_resumes_with_the_saved_flags_and_never_overwrites(tmp_path, monkeypatch):
    """Catches: --resume not reading the run's config.json (or the new flags winning over it), a run
    folder overwritten, a finished run resumed, open_run not writing config.json or rewriting it on
    resume, and the default folder not named after the student."""
    path = tmp_path / "run"
    args, got = runs.resolve_run(_run_args(out=str(path), rl_lr=3e-4))
    assert got == path and not path.exists()        # nothing written before the flags are all checked
    run = runs.open_run(args, got)
    assert json.loads((path / "config.json").read_text()) == vars(args)
    (path / "metrics.jsonl").write_text("")
    with pytest.raises(SystemExit, match="already holds an unfinished run; pick another --out, or --resume"):
        runs.resolve_run(_run_args(out=str(path)))
    # resume: the saved flags win, a flag added since keeps its default, --resume stays
    again, got = runs.resolve_run(_run_args(resume=str(path), rl_lr=1.0, student="other", new_flag=7))
    assert got == path and (again.rl_lr, again.student, again.new_flag, again.resume) == (3e-4, "tiny", 7, str(path))
    runs.open_run(again, got)
    assert json.loads((path / "config.json").read_text()) == vars(args)    # kept as the run started
    # plumbing a resume may take anew (runs.RESUME_MAY_CHANGE) is kept for the later resumes
    moved, _ = runs.resolve_run(_run_args(resume=str(path), save_minutes=5.0), anew={"save_minutes"})
    runs.open_run(moved, got)
    assert moved.save_minutes == 5.0
    assert json.loads((path / "config.json").read_text()) == {**vars(args), "save_minutes": 5.0}
    runs.write_atomic(path / "config.json", json.dumps(vars(args)))          # back, for what follows
    run.finish("sft", {"accuracy": 0.5})
    assert runs.Run(path).finished("sft") and runs.Run(path).state["done"]["sft"] == {"accuracy": 0.5}
    (path / "results.json").write_text("{}")
    with pytest.raises(SystemExit, match="holds a finished run; nothing to resume"):
        runs.resolve_run(_run_args(resume=str(path)))
    with pytest.raises(SystemExit, match="already holds a finished run"):
        runs.resolve_run(_run_args(out=str(path)))
    with pytest.raises(SystemExit, match="no run there to resume"):
        runs.resolve_run(_run_args(resume=str(tmp_path / "nothing")))
    monkeypatch.chdir(tmp_path)
    assert str(runs.resolve_run(_run_args(student="models/smollm2"))[1]).startswith("runs/smollm2-")


def test_due_checkpoints_every_n_steps_or_minutes(monkeypatch):
    """Catches: a checkpoint schedule off by one step, a checkpoint before the stage's final save,
    and the --save-minutes clock off (minutes read as another unit, the comparison turned)."""
    every = argparse.Namespace(save_every=3, save_minutes=0.0)
    assert [s for s in range(10) if runs.due(every, s, 10)] == [2, 5, 8]
    assert [s for s in range(9) if runs.due(every, s, 9)] == [2, 5]          # step 8 is the final save's
    minutes = argparse.Namespace(save_every=0, save_minutes=2.0)
    clock = [1000.0]
    monkeypatch.setattr(runs.time, "time", lambda: clock[0])
    monkeypatch.setattr(runs, "_last_save", [1000.0 - 119.0])
    assert not runs.due(minutes, 0, 10)
    clock[0] += 2.0                                                          # 121 s since the last save
    assert runs.due(minutes, 1, 10) and not runs.due(minutes, 9, 10)


def test_load_weights_copies_a_final_folder_and_refuses_a_damaged_one(tmp_path, tiny, tok):
    """Catches: runs.load_weights (the weights of a finished stage, --sft-from) not loading them, or
    loading a folder whose checksum no longer matches."""
    run = runs.Run(tmp_path)
    run.save("sft", "final", tiny, tok)
    other = _nudged(tiny, seed=3)
    runs.load_weights(other, tmp_path / "sft" / "final")
    assert all(torch.equal(p, q) for p, q in zip(other.state_dict().values(), tiny.state_dict().values()))
    with open(tmp_path / "sft" / "final" / "config.json", "a") as f:
        f.write(" ")
    with pytest.raises(SystemExit, match=r"final is unusable \(config.json damaged"):
        runs.load_weights(other, tmp_path / "sft" / "final")


def test_cuda_rng_is_saved_and_restored_when_cuda_is_there(tmp_path, tiny, tok, monkeypatch, capsys):
    """Catches: the CUDA generators' state not saved in trainer.pt, or not restored on resume (a
    resumed GPU run would then sample other rollouts), a CPU run asking CUDA for it, and the resume
    not saying where it resumed from. CUDA is faked: its state is a list of byte tensors."""
    state = [torch.arange(8, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    opt = optim.make_optimizer(tiny, 1e-3, "master")
    run = runs.Run(tmp_path)
    runs.save_trainer(run, "rl", tiny, tok, opt, 1)
    assert runs.resume_trainer(run, "rl", tiny, opt) == 1
    assert len(restored) == 1 and torch.equal(restored[0][0], state[0])
    assert f"rl: resumed at step 1 from {tmp_path / 'rl' / 'ckpt'}" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("asked CUDA on a CPU run"))
    runs.save_trainer(run, "rl", tiny, tok, opt, 2)
    assert torch.load(tmp_path / "rl" / "ckpt" / "trainer.pt", weights_only=False)["cuda_rng"] is None
    assert runs.resume_trainer(run, "rl", tiny, opt) == 2 and len(restored) == 1


def test_each_process_resumes_with_its_own_rng_state(tmp_path, tiny, tok, monkeypatch):
    """Catches: on a resume under torchrun, every process taking rank 0's torch RNG state instead of
    its own (they would all sample the same rollouts from then on), the checkpoint's per-process
    states ignored. Simulated in one process: the checkpoint holds two processes' states (dist.gather
    faked), then resumed as rank 1 of 2, torch's RNG is rank 1's; as rank 0 of 2, rank 0's."""
    opt = optim.make_optimizer(tiny, 1e-3, "master")
    run = runs.Run(tmp_path)
    torch.manual_seed(1)
    rank1 = torch.get_rng_state()
    torch.manual_seed(0)
    rank0 = torch.get_rng_state()
    monkeypatch.setattr(runs.dist, "gather", lambda obj: [obj, {"torch_rng": rank1, "cuda_rng": None}])
    runs.save_trainer(run, "rl", tiny, tok, opt, 1)
    monkeypatch.setattr(runs.dist, "world", lambda: 2)
    for rank, want in ((1, rank1), (0, rank0)):
        monkeypatch.setattr(runs.dist, "rank", lambda: rank)
        torch.manual_seed(5)
        assert runs.resume_trainer(run, "rl", tiny, opt) == 1
        assert torch.equal(torch.get_rng_state(), want), f"rank {rank}"


# -----------------------------------------------------------------------------
# the optimizers: AdamW's formula, whatever the scheme


class _Weights(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float32))


def _adamw_by_hand(w, grads, lr, wd=0.0, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.AdamW's update, written out in float64."""
    w, m, v = [float(x) for x in w], [0.0] * len(w), [0.0] * len(w)
    for t, g in enumerate(grads, 1):
        for j, gj in enumerate(g):
            m[j] = b1 * m[j] + (1 - b1) * gj
            v[j] = b2 * v[j] + (1 - b2) * gj * gj
            w[j] = w[j] * (1 - lr * wd) - lr / (1 - b1 ** t) * m[j] / (math.sqrt(v[j] / (1 - b2 ** t)) + eps)
    return w


@pytest.mark.parametrize("kind", optim.OPTIMIZERS)
def test_every_scheme_steps_as_adamw_without_weight_decay(kind):
    """Catches: a scheme built with weight decay (make_optimizer's 0.0), a wrong bias correction or
    moment update, a step not applied, and finish_step not stepping. fp32 weights (the schemes then
    round nothing), three steps of known gradients, against AdamW written out by hand."""
    w0, grads = [0.5, -0.25, 2.0], [[0.1, -0.3, 2.0], [-0.2, -0.1, 1.0], [0.05, 0.4, -3.0]]
    # the reference itself, by hand: step 1 moves each weight by lr against its gradient's sign
    # (m_hat / sqrt(v_hat) = g / |g|); step 2, weight 0: m = 0.9 * 0.01 - 0.02 = -0.011, v =
    # 0.999e-5 + 4e-5 = 4.999e-5, m_hat = -0.011 / 0.19, v_hat = 4.999e-5 / 0.001999 -> 0.49 - 0.01 * -0.3661
    assert _adamw_by_hand(w0, grads[:1], 0.01) == pytest.approx([0.49, -0.24, 1.99], abs=1e-7)
    assert _adamw_by_hand(w0, grads[:2], 0.01) == pytest.approx([0.4936610, -0.2312894, 1.9806782], abs=1e-7)
    model = _Weights(w0)
    opt = optim.make_optimizer(model, 0.01, kind)
    for g in grads:
        (model.w * torch.tensor(g)).sum().backward()
        optim.finish_step(opt, model.parameters(), grad_clip=0.0)
    assert model.w.tolist() == pytest.approx(_adamw_by_hand(w0, grads, 0.01), rel=1e-5)


def test_bf16_adamw_weight_decay_is_adamw_s():
    """Catches: BF16AdamW's decoupled weight decay off (sign, lr * wd as lr / wd), which every scheme
    built by make_optimizer leaves at 0. fp32 weights, wd 0.1 and lr 0.1 (the decay shows), by hand."""
    w0, grads = [0.5, -0.25, 2.0], [[0.1, -0.3, 2.0], [-0.2, -0.1, 1.0]]
    model = _Weights(w0)
    opt = optim.BF16AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    for g in grads:
        model.w.grad = torch.tensor(g)
        opt.step()
    assert model.w.tolist() == pytest.approx(_adamw_by_hand(w0, grads, 0.1, wd=0.1), rel=1e-5)


@pytest.mark.parametrize("kind", ["master", "bf16"])
def test_optimizer_state_dict_is_a_snapshot(kind):
    """Catches: state_dict() handing out the live bf16 moments or fp32 master weights instead of
    copies (to the CPU: they are the GPU's largest tensors): a state taken, then one more step, must
    still hold the values of when it was taken. (The Adam moments of the master scheme are torch's
    AdamW's, whose state_dict shares them by design; save_trainer writes them at once.)"""
    model = _Weights([0.5, -0.25, 2.0]).to(torch.bfloat16)
    opt = optim.make_optimizer(model, 0.01, kind)
    model.w.grad = torch.tensor([0.1, -0.3, 2.0], dtype=torch.bfloat16)
    opt.step()
    sd = opt.state_dict()
    own = sd["master"] if kind == "master" else sd["m"] + sd["v"]
    before = [t.clone() for t in own]
    model.w.grad = torch.tensor([-0.2, 0.7, 1.0], dtype=torch.bfloat16)
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(own, before))
    now = opt.master if kind == "master" else opt.m + opt.v
    assert not all(torch.equal(a, b) for a, b in zip(own, now))     # the step did move them


def test_fused_grad_norm_is_the_rms_over_its_micro_steps():
    """Catches: the grad norm a fused optimizer reports (it steps inside each backward) not being
    the root mean square of its micro-steps' norms: two backward passes of gradients of norm 5 and
    13 give sqrt((25 + 169) / 2)."""
    model = _Weights([0.0, 0.0])
    opt = optim.make_optimizer(model, 0.0, "bf16-fused")
    for g in ([3.0, 4.0], [5.0, 12.0]):
        (model.w * torch.tensor(g)).sum().backward()
    assert optim.finish_step(opt, model.parameters(), 0.0, micro_steps=2) == pytest.approx(math.sqrt(97.0))
    opt.remove_hooks()


def test_fused_notes_count_the_micro_batches(capsys):
    """Catches: the note of --optimizer bf16-fused counting the rollouts of a step wrong (rl_questions
    x G x 2 scenarios, x 1 with --no-probes), so that it names the wrong number of optimizer steps."""
    args = argparse.Namespace(grad_clip=0.0, rl_questions=3, G=4, no_probes=False, rl_micro=5, no_rl=False)
    optim.fused_notes(args)
    assert "each of the 5 micro-batches of a rollout batch (24 rollouts, --rl-micro 5)" in capsys.readouterr().out
    optim.fused_notes(argparse.Namespace(**{**vars(args), "no_probes": True}))
    assert "each of the 3 micro-batches of a rollout batch (12 rollouts, --rl-micro 5)" in capsys.readouterr().out

# -----------------------------------------------------------------------------
# exgrpo.py glue the mutation sample (bench/mutate.py) found unguarded


def test_default_dsu_bonus_is_the_papers_half():
    """Catches: the default DSU bonus delta (exgrpo.DELTA, train.py's --delta default) not +0.5. The
    docstring's example with every default: r_full [1, 1, 0, 1], r_partial [1, 0, 0, 0] -> P_full 0.75
    > 0.25 -> [0.5, 0.5, 0, 0.5]."""
    assert exgrpo.dsu_bonus([1, 1, 0, 1], [1, 0, 0, 0]) == [0.5, 0.5, 0.0, 0.5]
    assert train.parser().parse_args([]).delta == 0.5


def test_group_advantages_of_no_rollouts_is_empty():
    """Catches: group_advantages failing on a step with no rollouts at all (e.g. one process of several
    given no question): the number of groups of nothing is 0, not -1."""
    adv = exgrpo.group_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert adv.shape == (0,)


def test_micro_batches_sort_by_the_longest_row_of_each_dialogue():
    """Catches: micro_batches taking a rollout's 'longest' over the wrong rows (its dialogue's G rows
    are [i - i % G, i - i % G + G)): lengths [5, 9, 3, 4, 8, 2], G 2 -> dialogues (5, 9), (3, 4),
    (8, 2) with longest 9, 4, 8 -> longest dialogue first, each's longer row first: 1 0 4 5 3 2."""
    got = exgrpo.micro_batches([5, 9, 3, 4, 8, 2], 2, 4)
    assert [t.tolist() for t in got] == [[1, 0, 4, 5], [3, 2]]
    assert [t.tolist() for t in exgrpo.micro_batches([5, 9, 3, 4, 8, 2], 2, 4, in_order=True)] == [[0, 1, 2, 3], [4, 5]]


class FusedTap:
    """A fused optimizer for policy_update (opt.fused: every backward() is its own step) that moves
    nothing: it keeps each backward's gradient, in the order of the backward passes."""
    fused = True

    def __init__(self, model):
        self.params, self.param_groups, self.events = list(model.parameters()), [], []
        self.hooks = [p.register_post_accumulate_grad_hook(self._hook(i)) for i, p in enumerate(self.params)]

    def _hook(self, i):
        def hook(p):
            self.events.append((i, p.grad.detach().clone()))
            p.grad = None
        return hook

    @property
    def grads(self):
        """One list of gradients (in parameter order) per backward pass."""
        n, out = len(self.params), []
        for s in range(0, len(self.events), n):
            step = dict(self.events[s:s + n])
            out.append([step[i] for i in range(n)])
        return out

    def grad_norm(self):
        return 0.0

    def step(self):
        pass

    def zero_grad(self):
        pass

    def remove_hooks(self):
        for h in self.hooks:
            h.remove()


@pytest.mark.parametrize("agg", ["token", "sequence"])
def test_fused_micro_batches_are_each_normalized_alone(tiny, tok, agg):
    """Catches: with a fused optimizer (each micro-batch its own step), a micro-batch's loss divided
    by the full batch's tokens or rollouts, or by its width instead of its number of rows (sequence
    aggregation), or the aux loss riding on another micro-batch than the first. Six hand-written
    rollouts in rollout order (fused: no sort), rl_micro 4: step 1 = rollouts 0-3 + the aux dialogue,
    step 2 = rollouts 4-5, each normalized by its own tokens (token) or rows (sequence)."""
    roll = _hand_roll()
    adv = torch.tensor([0.9, -0.4, 1.3, -1.1, 0.2, -0.6])
    aux = [sample.teacher_forced(tok, [("Probe: what is 3 + 4?", "3 + 4 = 7. The answer is 7.")])]
    want = [_reference_grads(tiny, roll.ids[:4], roll.student_mask[:4], adv[:4], 1.0, aux=aux, agg=agg),
            _reference_grads(tiny, roll.ids[4:], roll.student_mask[4:], adv[4:], 1.0, agg=agg)]
    tap = FusedTap(tiny)
    row = exgrpo.policy_update(_cfg(rl_micro=4, agg=agg), tiny, None, tok, tap,
                               exgrpo.pack_rollouts(tok, roll, adv, [[("Probe: what is 3 + 4?",
                                                                       "3 + 4 = 7. The answer is 7.")]], None))
    tap.remove_hooks()
    assert len(tap.grads) == 2 and row["skipped_micro"] == 0
    for j in range(2):
        _assert_grads_equal(tap.grads[j], want[j], f"{agg}, fused step {j + 1}")


def test_fused_logged_loss_is_the_one_batch_loss(tiny, tok):
    """Catches: the metrics of a fused optimizer's micro-batches (each normalized alone) added up with
    the wrong weights: the token-weighted share on the wrong keys, the aux term's correction off. At
    weights that do not move, the logged loss, pg_loss, KL, clip fraction, entropy and aux NLL of
    rl_micro 4 (two fused steps) are those of the same batch in one non-fused micro-batch."""
    ref = _nudged(tiny, seed=1).eval().requires_grad_(False)
    roll = _hand_roll()
    adv = torch.tensor([0.9, -0.4, 1.3, -1.1, 0.2, -0.6])
    aux_turns = [[("Probe: what is 3 + 4?", "3 + 4 = 7. The answer is 7.")]]
    rb = lambda: exgrpo.pack_rollouts(tok, roll, adv, aux_turns, None)
    one = exgrpo.policy_update(_cfg(rl_micro=64, beta=0.04), tiny, ref, tok, GradTap(tiny), rb())
    tap = FusedTap(tiny)
    fused = exgrpo.policy_update(_cfg(rl_micro=4, beta=0.04), tiny, ref, tok, tap, rb())
    tap.remove_hooks()
    assert len(tap.grads) == 2 and one["kl"] > 0 and one["aux_nll"] > 0
    for key in ("loss", "pg_loss", "kl", "clip_frac", "entropy", "aux_nll", "student_tokens"):
        assert fused[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key

# -----------------------------------------------------------------------------
# sample.py's scoring: the defaults and the chunks a test of small batches does not reach


def test_pack_without_masks_trains_on_every_completion_token_once():
    """Catches: pack's default completion mask not exactly 1 on each completion token (a loss mask
    of 2 doubles the loss and every token count): prompt [5, 6] + completion [7, 8, 9], and [1] + [2]."""
    b = sample.pack([[5, 6], [1]], [[7, 8, 9], [2]], 0)
    assert b.ids.tolist() == [[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]]
    assert b.attn.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert b.loss_mask.tolist() == [[0, 0, 1, 1, 1], [0, 1, 0, 0, 0]]


def test_logprobs_in_small_chunks_cover_every_scored_token(tiny):
    """Catches: the lm_head's chunk loop running over the wrong dimension (the hidden width, 64 here,
    instead of the scored tokens): 90 scored tokens in chunks of 7 must equal one chunk."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 5000, (2, 50), generator=g)
    attn = torch.ones_like(ids)
    mask = torch.ones_like(ids)
    mask[:, :5] = 0
    assert int(mask[:, 1:].sum()) == 90
    with torch.no_grad():
        a = sample.token_logprobs(tiny, ids, attn, mask, chunk=7)
        b = sample.token_logprobs(tiny, ids, attn, mask, chunk=10_000)
    assert torch.equal(a, b) and (a[:, 5:] != 0).all()


def test_share_prefix_false_is_one_pass_and_true_runs_a_prompt_once(tiny):
    """Catches: share_prefix read the wrong way round (a fused optimizer, which asks for one pass
    through the weights, then gets two), or the shared prompt not used where asked. Two rows with the
    same 6-token prompt: False -> one decoder call on the 2 x 10 batch; True -> the prompt once (1 x 6),
    then the completions (2 x 4), also while training; the same log-probs."""
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 5000, (6,), generator=g)
    ids = torch.stack([torch.cat([prompt, torch.randint(100, 5000, (4,), generator=g)]) for _ in range(2)])
    attn, mask = torch.ones_like(ids), torch.ones_like(ids)
    mask[:, :6] = 0
    calls = []
    hook = tiny.get_decoder().register_forward_pre_hook(
        lambda mod, args, kw: calls.append(tuple((kw.get("input_ids") if kw.get("input_ids") is not None
                                                  else kw["inputs_embeds"]).shape[:2])), with_kwargs=True)
    try:
        with torch.no_grad():
            one = sample.token_logprobs(tiny, ids, attn, mask, share_prefix=False)
            assert calls == [(2, 10)]
            calls.clear()
            two = sample.token_logprobs(tiny, ids, attn, mask, share_prefix=True)
            assert calls == [(1, 6), (2, 4)]
        calls.clear()
        tiny.train()   # and while training, with gradients (no activation checkpointing here)
        sample.token_logprobs(tiny, ids, attn, mask, share_prefix=True).sum().backward()
        assert calls == [(1, 6), (2, 4)]
    finally:
        hook.remove()
    assert torch.allclose(one, two, atol=1e-5)


def test_generation_throughput_is_tokens_over_generation_seconds(tiny, tok, probe_q, monkeypatch):
    """Catches: gen_tokens_per_s computed other than student tokens / generation seconds. A fake clock
    in exgrpo: the step starts at 100 s, its rollouts end at 102.5 s, the step at 103 s."""
    clock = iter([100.0, 102.5, 103.0])
    monkeypatch.setattr(exgrpo, "time", types.SimpleNamespace(time=lambda: next(clock)))
    row = exgrpo.exgrpo_step(_cfg(), tiny, None, tok, GradTap(tiny), [probe_q], step=0, reward_fn=_parity_reward)
    assert (row["gen_seconds"], row["step_seconds"]) == (2.5, 3.0)
    assert row["gen_tokens_per_s"] == pytest.approx(row["student_tokens"] / 2.5)


def test_logprobs_of_a_batch_with_nothing_to_score_are_zeros(tiny):
    """Catches: token_logprobs failing when no token is scored (every loss-mask entry 0: nothing goes
    through the lm_head): zeros."""
    ids = torch.tensor([[300, 301, 302], [400, 401, 402]])
    with torch.no_grad():
        lp = sample.token_logprobs(tiny, ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert lp.tolist() == [[0.0] * 3] * 2


def test_a_step_of_only_non_finite_micro_batches_logs_zeros(tiny, tok):
    """Catches: the KL, clip fraction, entropy and gradient norm of a step whose every micro-batch was
    skipped as non-finite (P6) logged as anything but 0 (a default of 1 would read as real): NaN
    advantages, rl_micro 4 -> 2 micro-batches, both skipped, no gradient."""
    roll = _hand_roll()
    tap = GradTap(tiny)
    row = exgrpo.policy_update(_cfg(rl_micro=4), tiny, None, tok, tap,
                               exgrpo.pack_rollouts(tok, roll, torch.full((6,), float("nan")), [], None))
    assert row["skipped_micro"] == 2
    assert (row["kl"], row["clip_frac"], row["entropy"], row["grad_norm"]) == (0.0, 0.0, 0.0, 0.0)
    assert all(not g.any() for g in tap.grads[0])

# -----------------------------------------------------------------------------
# rewards.py: answers the mutation sample found unguarded (each hand-checked)


@pytest.mark.parametrize("answer_type", ["number", "math"])
def test_two_boxes_in_the_answer_phrase_are_two_answers(answer_type):
    """Catches: 'The answer is $\\boxed{2}$ or $\\boxed{3}$' read as its first box (a hedge rewarded):
    two boxes inside the answer phrase are one text '2 or 3', no answer. One box is the answer."""
    assert rewards.reward("The answer is $\\boxed{2}$ or $\\boxed{3}$.", "2", answer_type) == 0.0
    assert rewards.reward("The answer is $\\boxed{2}$.", "2", answer_type) == 1.0


def test_the_last_option_ends_at_its_line_s_end():
    """Catches: the line after an option list ('Answer with the letter.') glued to the last option's
    text, which then never matches an answer that names it: (B) is 'library'."""
    q = "Where are books kept?\n(A) bank (B) library\nAnswer with the letter."
    assert rewards._options(q) == {"A": "bank", "B": "library"}
    assert rewards.reward("The answer is library.", "B", "choice", q) == 1.0


def test_an_option_text_named_after_other_words_counts_and_a_shorter_one_inside_it_does_not():
    """Catches: _inside (an option text inside a longer option's match) counting a match as inside
    itself, or a span that ends where the longer one ends as not inside it. 'the ice cream' names (A)
    'ice cream', not (B) 'cream'; 'the library' names (B)."""
    q = "Which? (A) ice cream (B) cream"
    assert rewards.reward("So the answer is the ice cream.", "A", "choice", q) == 1.0
    assert rewards.reward("So the answer is the ice cream.", "B", "choice", q) == 0.0
    assert rewards.reward("The answer is the library.", "B", "choice", "Where are books kept? (A) bank (B) library") == 1.0

# -----------------------------------------------------------------------------
# optim.py: clipping, the skip count, stochastic rounding of exact values


def test_finish_step_clips_to_grad_clip_and_counts_skipped_steps():
    """Catches: finish_step not clipping (or its norm computed only when there is no gradient), the
    norm of a step without gradients logged as anything but 0, and the count of skipped non-finite
    steps not starting at 0. Gradient (3, 4), norm 5, --grad-clip 1: SGD lr 1 moves the weights by
    (-0.6, -0.8) and the norm logged is 5; a NaN gradient is skipped and counted."""
    model = _Weights([0.0, 0.0])
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    model.w.grad = torch.tensor([3.0, 4.0])
    assert optim.finish_step(sgd, model.parameters(), grad_clip=1.0) == pytest.approx(5.0)
    assert model.w.tolist() == pytest.approx([-0.6, -0.8])
    assert optim.finish_step(sgd, model.parameters(), grad_clip=1.0) == 0.0    # no gradient: nothing
    for kind in ("master", "bf16"):
        opt = optim.make_optimizer(model, 0.1, kind)
        assert opt.skipped == 0
        model.w.grad = torch.tensor([float("nan"), 1.0])
        optim.finish_step(opt, model.parameters(), grad_clip=1.0)
        assert opt.skipped == 1 and model.w.tolist() == pytest.approx([-0.6, -0.8]), kind


def test_stochastic_rounding_never_moves_a_value_bf16_holds():
    """Catches: rounding noise drawn outside [0, 2^16) (from -1, a value bf16 holds exactly moves one
    step down once in 65537 draws). 4M exact bf16 values, rounded: all unchanged."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1 << 22, generator=g).bfloat16().float()
    assert torch.equal(optim.stochastic_round_bf16(x, torch.Generator().manual_seed(1)).float(), x)

# -----------------------------------------------------------------------------
# teachers.py: the cache key, which every cache file on disk was written under


def test_teacher_cache_key_is_pinned():
    """Catches: any change to the cache key of a teacher answer (the JSON's key order, its escaping of
    non-ASCII text): every answer cached on disk, by every earlier run and probes.py, would be asked
    again. The key of this prompt is sha256 of
        ["openai:fake", [{"content": "...", "role": "user"}], {"max_tokens": 1024, "temperature": 0.0}]
    (keys sorted, UTF-8 kept), pinned; the order the dicts were built in does not matter."""
    text = "Warum ist der Himmel blau? – 2 × 3 = 6"
    want = "161de902a9b91f7ed484ca3a4bc096625b0d04f094303967803f537e3b3215aa"
    assert teachers.cache_key("openai:fake", [{"role": "user", "content": text}],
                              {"temperature": 0.0, "max_tokens": 1024}) == want
    assert teachers.cache_key("openai:fake", [{"content": text, "role": "user"}],
                              {"max_tokens": 1024, "temperature": 0.0}) == want


def test_teacher_cache_reads_under_the_lock_and_is_readable_by_all(tmp_path):
    """Catches: the cache file read without taking the lock that writers hold while they append (a
    reader would take a line half written for a corrupt one and cut it off), and a file mode other
    than rw-r--r-- (other users' runs share the cache). Another open file description holds the lock:
    opening the cache waits for its release."""
    path = tmp_path / "cache.jsonl"
    path.write_text("")
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    opened = []
    t = threading.Thread(target=lambda: opened.append(teachers.TeacherCache(path)))
    t.start()
    time.sleep(0.3)
    assert not opened, "the cache was read while a writer held the lock"
    fcntl.flock(fd, fcntl.LOCK_UN)
    t.join(10)
    os.close(fd)
    assert opened
    opened[0].close()
    new = tmp_path / "new.jsonl"
    old = os.umask(0o022)
    try:
        teachers.TeacherCache(new).close()
    finally:
        os.umask(old)
    assert new.stat().st_mode & 0o777 == 0o644


def test_teacher_cache_appends_after_a_last_line_without_its_newline(tmp_path):
    """Catches: a complete last record without its newline (a file written by hand, or a writer killed
    between the record and its newline) not given one on open: the next answer would be glued onto
    it, and both lost on the next read; and close() not closing the file."""
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({"key": "k1", "answer": "a1"}))
    cache = teachers.TeacherCache(path)
    cache.put("k2", "t", [], "a2")
    cache.close()
    again = teachers.TeacherCache(path)
    assert (again.get("k1"), again.get("k2")) == ("a1", "a2")
    fd = again.fd
    again.close()
    with pytest.raises(OSError):   # closed (a run opens one cache per teacher: no file left open)
        os.fstat(fd)
    again.close()                  # twice is fine


def test_teacher_cache_file_names_are_pinned():
    """Catches: a change to the name of a teacher's cache file (the first 80 characters of its id,
    made file-safe, then 8 hex of the id's sha256): a run would no longer find the answers cached
    by earlier runs. A .jsonl path is the file itself."""
    long_id = "openai:" + "m" * 100
    assert teachers.cache_file("/c", long_id).name == "openai_" + "m" * 73 + "-dc4beab4.jsonl"
    assert teachers.cache_file("/c", "hf:org/model") == Path("/c/hf_org_model-3d587ff3.jsonl")
    assert teachers.cache_file("/c/x.jsonl", "hf:org/model") == Path("/c/x.jsonl")

# -----------------------------------------------------------------------------
# resume, compared state by state (issue #33, item 2): train.py's own stages, killed right after a
# checkpoint and resumed into a model from elsewhere, against the same stage run without a stop

_REAL_MAKE_OPTIMIZER, _REAL_LOG, _REAL_EXGRPO_STEP = optim.make_optimizer, runs.Run.log, exgrpo.exgrpo_step
_TIMING = ("step_seconds", "gen_seconds", "gen_tokens_per_s")


def _parity_reward(text, gold, answer_type, question):
    """A reward that depends on what was sampled (so on the RNG): 1 for an odd-length answer."""
    return float(len(text) % 2)


def _stage(monkeypatch, which, args, path, model, kill_copy=None, torch_seed=0, **data):
    """Run train.sft_stage / train.rl_stage on `model` in the run folder `path`, as train.main would
    (torch seeded first). kill_copy = (n, folder): right after step n is logged, the run folder is
    copied to `folder`: what a kill at that moment leaves on disk, the checkpoints written so far and
    a metrics.jsonl with a line the resume must drop and redo (the run itself goes on, so that one
    run gives both the uninterrupted result and the killed folder).
    Returns (the stage's optimizer, the steps it ran, the Run)."""
    opts, ran = [], []

    def make(*a, **kw):
        opts.append(_REAL_MAKE_OPTIMIZER(*a, **kw))
        return opts[-1]

    def log(run, row):
        _REAL_LOG(run, row)
        if kill_copy and row.get("stage") == which and row["step"] == kill_copy[0]:
            shutil.copytree(run.path, kill_copy[1])

    def rl_step(cfg, model, ref, tok, opt, questions, step):
        ran.append(step)
        return _REAL_EXGRPO_STEP(cfg, model, ref, tok, opt, questions, step, reward_fn=_parity_reward)

    real_finish = optim.finish_step

    def finish(opt, params, grad_clip, micro_steps=1):   # SFT: one call per step
        ran.append(len(ran))
        return real_finish(opt, params, grad_clip, micro_steps)

    monkeypatch.setattr(optim, "make_optimizer", make)
    monkeypatch.setattr(runs.Run, "log", log)
    monkeypatch.setattr(exgrpo, "exgrpo_step", rl_step)
    monkeypatch.setattr(optim, "finish_step", finish if which == "sft" else real_finish)
    torch.manual_seed(torch_seed)
    path.mkdir(exist_ok=True)   # runs.open_run's part
    run = runs.Run(path)
    try:
        if which == "sft":
            train.sft_stage(args, run, model, data["tok"], data["train"], data["dei"])
        else:
            train.rl_stage(args, run, model, data["ref"], data["tok"], data["pool"], {})
    finally:
        monkeypatch.setattr(optim, "finish_step", real_finish)
        if opts and hasattr(opts[-1], "remove_hooks"):   # rl_stage leaves a fused optimizer hooked
            opts[-1].remove_hooks()
    return opts[-1], ran, run


def _opt_state(opt):
    """Everything an optimizer carries into the next step, as tensors and numbers."""
    lr = [g["lr"] for g in opt.param_groups]
    if isinstance(opt, (optim.MasterWeightAdamW, torch.optim.Optimizer)):
        inner = opt.opt if isinstance(opt, optim.MasterWeightAdamW) else opt
        st = list(inner.state_dict()["state"].values())
        return {"lr": lr, "master": [m.detach() for m in getattr(opt, "master", [])],
                "step": [float(s["step"]) for s in st], "m": [s["exp_avg"] for s in st],
                "v": [s["exp_avg_sq"] for s in st]}
    return {"lr": lr, "step": list(opt.steps), "m": list(opt.m), "v": list(opt.v), "seed": opt.seed}


def _params(opt):
    return getattr(opt, "params", None) or [p for g in opt.param_groups for p in g["params"]]


def _assert_same_state(a, b, what):
    """Two optimizers, and the models they step, in the same state bit for bit."""
    sa, sb = _opt_state(a), _opt_state(b)
    assert sa.keys() == sb.keys() and sa["step"] and sa["m"]
    for key in sa:
        x, y = sa[key], sb[key]
        if x and torch.is_tensor(x[0]):
            assert len(x) == len(y) and all(torch.equal(s, t) for s, t in zip(x, y)), f"{what}: optimizer {key}"
        else:
            assert x == y, f"{what}: optimizer {key}: {x} != {y}"
    pa, pb = _params(a), _params(b)
    assert pa and len(pa) == len(pb)
    for p, q in zip(pa, pb):
        assert torch.equal(p.detach(), q.detach()), f"{what}: model weights"


def _metrics(run):
    """metrics.jsonl without its wall-clock fields."""
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in _TIMING} for r in rows]


def _resume_cfg(kind, **kw):
    return _cfg(optimizer=kind, save_every=1, save_minutes=0.0, seed=0, method="exgrpo", grad_clip=1.0, **kw)


@pytest.mark.parametrize("kind", optim.OPTIMIZERS)
def test_rl_resume_equals_the_uninterrupted_run_state_by_state(tmp_path, monkeypatch, tiny, tok, probe_q, kind):
    """Catches, for each optimizer scheme: the weights, fp32 master weights, Adam moments, step
    counts or torch RNG not restored on resume (or any of them taken from ckpt.prev while the newest
    checkpoint is sound), the resumed run redoing or skipping steps, and a metrics.jsonl that does not
    read as one run. train.rl_stage, 3 steps, a checkpoint after every step but the last, a bf16
    student, KL and aux on, rewards that follow the sampled texts. The run folder as a kill right after
    step 2 was logged leaves it (ckpt = before step 2, ckpt.prev = before step 1, step 2's metrics
    line), resumed with another torch seed into a model from elsewhere, must drop that line, run
    exactly step 2 again and end where the uninterrupted run ends."""
    base = tiny.to(torch.bfloat16)
    ref = _nudged(base, seed=1).eval().requires_grad_(False)
    args = _resume_cfg(kind, beta=0.04, no_aux=False, rl_lr=1e-3, eval_every=0, eval_every_n=0, rl_steps=3,
                       rl_questions=2, max_new_tokens=4)
    common = dict(tok=tok, ref=ref, pool=[probe_q, PLAIN_Q])
    killed = tmp_path / "killed"
    whole, ran, run_a = _stage(monkeypatch, "rl", args, tmp_path / "a", copy.deepcopy(base),
                               kill_copy=(2, killed), **common)
    rng_whole = torch.get_rng_state()
    assert ran == [0, 1, 2]
    assert (killed / "rl" / "ckpt").is_dir() and (killed / "rl" / "ckpt.prev").is_dir()
    assert [r["step"] for r in _metrics(runs.Run(killed))] == [0, 1, 2]   # step 2 logged, not checkpointed
    resumed, ran, run_b = _stage(monkeypatch, "rl", args, killed, _nudged(base, seed=7), torch_seed=99, **common)
    assert ran == [2], "the resume must start at the newest checkpoint's step"
    assert torch.equal(torch.get_rng_state(), rng_whole), "torch RNG not restored"
    _assert_same_state(resumed, whole, kind)
    assert whole.param_groups[0]["lr"] == resumed.param_groups[0]["lr"] == 1e-3
    assert _metrics(run_b) == _metrics(run_a)
    assert [r["step"] for r in _metrics(run_b)] == [0, 1, 2]


@pytest.mark.parametrize("kind", optim.OPTIMIZERS)
def test_sft_resume_equals_the_uninterrupted_run_state_by_state(tmp_path, monkeypatch, tiny, tok, probe_q, kind):
    """Catches, for each optimizer scheme: an SFT resume that restores the weights but not the
    optimizer (moments, steps, master weights), takes the previous checkpoint, restarts the epoch's
    batches or the learning-rate schedule, or keeps the metrics lines of the steps it redoes.
    train.sft_stage, 4 examples, batches of 2 in micro-batches of 1, 2 epochs (4 steps), warm-up 1, a
    checkpoint after every step but the last: the folder a kill right after step 3 was logged leaves,
    resumed into a model from elsewhere, runs step 3 alone again and ends in the uninterrupted run's
    state, with one line per step and the same loss and learning rate logged at each (the cosine by
    hand: 1, 1, 0.775, 0.325 x 1e-3)."""
    base = tiny.to(torch.bfloat16)
    args = _resume_cfg(kind, sft_probes=2, sft_dialogues=1, sft_batch=2, sft_micro=1, sft_epochs=2, sft_lr=1e-3,
                       sft_warmup=1)
    common = dict(tok=tok, train=[probe_q], dei=[probe_q])
    killed = tmp_path / "killed"
    whole, ran, run_a = _stage(monkeypatch, "sft", args, tmp_path / "a", copy.deepcopy(base),
                               kill_copy=(3, killed), **common)
    assert len(ran) == 4
    assert (killed / "sft" / "ckpt").is_dir() and (killed / "sft" / "ckpt.prev").is_dir()
    assert [r["step"] for r in _metrics(runs.Run(killed))] == [0, 1, 2, 3]
    resumed, ran, run_b = _stage(monkeypatch, "sft", args, killed, _nudged(base, seed=7), torch_seed=99, **common)
    assert len(ran) == 1, "the resume must start at the newest checkpoint's step"
    _assert_same_state(resumed, whole, kind)
    lrs = [r["lr"] for r in _metrics(run_a)]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3 * (0.1 + 0.45 * 1.5), 1e-3 * 0.325])
    assert _metrics(run_b) == _metrics(run_a)
    assert resumed.param_groups[0]["lr"] == whole.param_groups[0]["lr"] == pytest.approx(3.25e-4)
