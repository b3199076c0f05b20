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
  - the SFT learning rate follows a cosine, mid-points included.

Rollouts are the tiny random Llama's own (conftest.py), with their answer TEXTS replaced by a
script (`scripted`), so that rewards, and everything computed from them, are known in advance.
"""
import argparse
import copy
import io
import math
import random
import types

import pytest
import torch

import exgrpo
import optim
import probes
import runs
import sample
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
                     aux=None, aux_weight=0.1):
    """The gradient of the ExGRPO loss written out rollout by rollout, token-mean aggregation:
        sum_i sum_t [ -min(rho A_i, clip(rho) A_i) + beta (e^x - x - 1) ] / n_tokens
        + aux_weight * sum -log pi(teacher tokens, T = 1) / n_aux_tokens
    rho = exp(lp - old) (old = lp.detach() unless given), x = lp_ref - lp."""
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
        total = total + term.sum() / n_tok
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
