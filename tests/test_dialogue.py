"""ExGRPO proper: the DSU bonus, dialogue masks, one ExGRPO step, batched dialogue rollouts."""
import argparse

import pytest
import torch

import exgrpo
import optim
import models
import sample
from data import synth
from data.synth import generate
import probes


# --- the Dialogue Structure Utility bonus ----------------------------------------

def test_dsu_fires_only_for_correct_full_rollouts():
    # P_full = 0.75 > 1.0 * P_partial = 0.25 -> +delta on the three correct A rollouts
    assert exgrpo.dsu_bonus([1, 1, 0, 1], [1, 0, 0, 0], delta=0.5, nu=1.0) == [0.5, 0.5, 0.0, 0.5]


@pytest.mark.parametrize("full, partial, nu, fires", [
    ([1, 0, 1, 0], [0, 1, 1, 0], 1.0, False),   # equal rates: P_full is not greater
    ([1, 1, 0, 0], [1, 0, 0, 0], 2.0, False),   # 0.5 > 2.0 * 0.25 is false: the margin holds it back
    ([1, 1, 1, 0], [1, 0, 0, 0], 2.0, True),    # 0.75 > 0.5
    ([0, 0, 0, 0], [0, 0, 0, 0], 1.0, False),   # nothing correct: nothing to reward
    ([1, 0, 0, 0], [0, 0, 0, 0], 1.0, True),    # 0.25 > 0
])
def test_dsu_condition_and_margin(full, partial, nu, fires):
    bonus = exgrpo.dsu_bonus(full, partial, delta=0.3, nu=nu)
    assert bonus == ([0.3 if f else 0.0 for f in full] if fires else [0.0] * len(full))


def test_dsu_rejects_bad_input():
    with pytest.raises(ValueError):
        exgrpo.dsu_bonus([], [1])
    with pytest.raises(ValueError, match="nu"):
        exgrpo.dsu_bonus([1], [0], nu=0.5)


# --- masks ------------------------------------------------------------------------

def test_dialogue_masks_cover_exactly_the_students_tokens(tiny, tok):
    probe, question = "Probe: what is 3 + 4?", "Question: what is 7 - 2?"
    roll = sample.rollout_dialogues(tiny, tok, [[probe, question]], n=1, max_new_tokens=5, temperature=1.0)
    ids, mask = roll.ids[0], roll.student_mask[0]
    assert len(ids) == len(mask) and len(roll.turns[0]) == 2
    student = [t for t, m in zip(ids, mask) if m]
    others = tok.decode([t for t, m in zip(ids, mask) if not m])
    # the masked-in tokens are exactly the two sampled turns, in order
    assert tok.decode(student, skip_special_tokens=True) == roll.turns[0][0] + roll.turns[0][1]
    # the prompt and both user turns are out of the mask
    assert probe in others and question in others and "<|im_start|>user" in others
    assert probe not in tok.decode(student) and question not in tok.decode(student)
    # the policy loss's gradient reaches exactly the masked tokens
    logp = torch.zeros(1, len(ids), requires_grad=True)
    m = torch.tensor([mask])
    loss, _ = exgrpo.exgrpo_loss(logp, logp.detach(), logp.detach(), torch.tensor([1.0]), m, beta=0.04)
    loss.backward()
    assert torch.equal(logp.grad[0] != 0, m[0].bool())


def test_aux_mask_covers_exactly_the_teachers_answers(tok):
    turns = [("Probe one?", "Teacher says 7. The answer is 7."), ("Probe two?", "Then 5. The answer is 5.")]
    ids, mask = sample.teacher_forced(tok, turns)
    target = tok.decode([t for t, m in zip(ids, mask) if m])
    assert target == "Teacher says 7. The answer is 7.<|im_end|>Then 5. The answer is 5.<|im_end|>"
    rest = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert "Probe one?" in rest and "Probe two?" in rest and "Teacher" not in rest


# --- one ExGRPO step on the tiny model --------------------------------------------------

def _args(**kw):
    a = dict(no_probes=False, no_dsu=False, no_aux=False, k=2, k_partial=None, G=2, delta=0.5, nu=1.0,
             beta=0.04, clip_eps=0.2, aux_weight=0.1, agg="token", rl_micro=3, max_new_tokens=6,
             temperature=1.0, ppo_epochs=1, grad_clip=1.0, seed=0, rollout_batch=0, adv_norm="none",
             adv_group="question")
    a.update(kw)
    return argparse.Namespace(**a)


def _dei_question():
    import probes
    r = synth.generate("train", 1, seed=5)[0]
    dei, _ = probes.build_dei([r], "oracle", progress=False)
    return dei[0]


def _varying_reward(text, gold, answer_type, question):
    """A reward that varies within a group whatever the tiny model writes (its real reward is
    always 0): 1 for an answer of an even number of characters."""
    return float(len(text) % 2 == 0)


def test_one_exgrpo_step_changes_every_parameter(tiny, tok):
    q = _dei_question()
    ref = models.tiny_model(tok, seed=0).eval().requires_grad_(False)
    before = {n: p.detach().clone() for n, p in tiny.named_parameters()}
    opt = optim.make_optimizer(tiny, 1e-3)
    row = exgrpo.exgrpo_step(_args(G=4), tiny, ref, tok, opt, [q], step=0, reward_fn=_varying_reward)
    assert all(torch.isfinite(torch.tensor(v)) for v in (row["loss"], row["kl"], row["aux_nll"]))
    assert row["skipped_micro"] == 0 and row["P_full"] is not None
    for n, p in tiny.named_parameters():
        assert not torch.equal(p.detach(), before[n]), f"{n} did not move"


def test_the_policy_gradient_alone_moves_every_parameter(tiny, tok):
    # no aux loss, no KL: only the clipped surrogate is left, so deleting it would leave the
    # weights where they are (the tiny model's real rewards are all 0: a varying reward is passed in)
    q = _dei_question()
    before = {n: p.detach().clone() for n, p in tiny.named_parameters()}
    opt = optim.make_optimizer(tiny, 1e-3)
    torch.manual_seed(1)
    row = exgrpo.exgrpo_step(_args(G=4, no_aux=True, beta=0.0), tiny, None, tok, opt, [q], step=0,
                             reward_fn=_varying_reward)
    assert row["zero_var_groups"] < 1 and "aux_nll" not in row
    for n, p in tiny.named_parameters():
        assert not torch.equal(p.detach(), before[n]), f"{n} did not move"


def test_positive_advantage_dialogue_becomes_more_likely(tiny, tok):
    torch.manual_seed(0)
    roll = sample.rollout_dialogues(tiny, tok, [["What is 1 + 1?", "And 2 + 2?"]], n=2, max_new_tokens=5)
    batch = sample.pack([[]] * 2, roll.ids, tok.pad_token_id, roll.student_mask)
    lp = lambda: sample.token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask)
    old = lp().detach()
    # train on rollout 0 alone, with a positive advantage
    loss, _ = exgrpo.exgrpo_loss(lp()[:1], old[:1], old[:1], torch.tensor([1.0]), batch.loss_mask[:1], beta=0.0)
    loss.backward()
    with torch.no_grad():
        for p in tiny.parameters():
            p -= 0.1 * p.grad
    new = lp().detach()
    m = batch.loss_mask[0].bool()
    assert new[0][m].sum() > old[0][m].sum() + 0.1


# --- batched rollouts = one at a time ------------------------------------------------------

def test_batched_dialogues_equal_one_at_a_time_greedy(tiny, tok):
    dialogues = [["Probe A?", "Probe B is longer than A?", "Question one?"],
                 ["Only the question?"],
                 ["One probe here?", "Question two, please?"]]
    together = sample.rollout_dialogues(tiny, tok, dialogues, n=1, max_new_tokens=6, temperature=0)
    for i, d in enumerate(dialogues):
        alone = sample.rollout_dialogues(tiny, tok, [d], n=1, max_new_tokens=6, temperature=0)
        assert together.ids[i] == alone.ids[0]
        assert together.student_mask[i] == alone.student_mask[0]
    assert [len(t) for t in together.turns] == [3, 1, 2]


def test_scenarios_share_their_probes_and_partial_is_shorter(tiny, tok):
    q = _dei_question()
    import random
    dialogues, meta, aux = exgrpo.build_scenarios([q], k=3, rng=random.Random(0))
    roll, r = exgrpo.rollout_and_score(_args(k=3, G=2), tiny, tok, [q], dialogues, meta)
    assert meta == [(0, "full"), (0, "partial")] and r.shape == (2, 2)
    full, part = roll.dialogues[0], roll.dialogues[2]
    assert len(full) == 4 and 2 <= len(part) <= 3           # k = 3 probes; k' in [1, 2]
    assert part[:-1] == full[:len(part) - 1] and part[-1] == full[-1]   # same first probes, same Q
    assert len(aux) == 1 and len(aux[0]) == 3               # the teacher's answers to the same 3 probes
    assert len(set(full[:-1])) == 3                          # drawn without replacement


def test_length_sorted_micro_batches_give_the_one_batch_gradient(tok, monkeypatch):
    # policy_update sorts rollouts by length and cuts each micro-batch to its longest row; the
    # accumulated gradient must still be the one-batch gradient (P11), KL and aux terms included
    import copy
    q = _dei_question()
    base = models.tiny_model(tok, seed=0)
    ref = copy.deepcopy(base).eval().requires_grad_(False)
    grads = []
    monkeypatch.setattr(optim, "finish_step", lambda opt, params, *a, **k: (
        grads.append([p.grad.clone() for p in params]), 0.0)[1])
    rows = []
    for micro in (64, 3):
        model = copy.deepcopy(base)
        torch.manual_seed(0)   # the same rollouts both times
        rows.append(exgrpo.exgrpo_step(_args(G=4, rl_micro=micro, max_new_tokens=8), model, ref, tok,
                                       optim.make_optimizer(model, 1e-3), [q], step=0, reward_fn=_varying_reward))
    assert rows[0]["loss"] == pytest.approx(rows[1]["loss"], rel=1e-5)
    assert rows[0]["kl"] == pytest.approx(rows[1]["kl"], rel=1e-5, abs=1e-9)
    for one, many in zip(*grads):
        torch.testing.assert_close(many, one, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in grads[0])


def test_fused_updates_start_before_backward_reaches_the_embedding(tok, monkeypatch):
    # The aux loss rides on the first micro-batch. Scored in its own forward pass it was a second
    # branch of the graph: backward ran that branch down to the embedding first and held every
    # weight's gradient from it, so the fused optimizer freed nothing until then (gemma-7b on an
    # H200: +16 GB at the peak, bench/results/gpu/). In one forward (sample.joint_logprobs) the
    # last layer's weights are stepped, and their gradients freed, before backward reaches the embedding.
    import copy
    q = _dei_question()
    model = models.tiny_model(tok, seed=0)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    events, real = [], optim.BF16AdamW._update
    monkeypatch.setattr(optim.BF16AdamW, "_update", lambda self, i, p, g: (events.append("update"), real(self, i, p, g))[1])

    def on_embed(module, inp, out):
        if out.requires_grad:
            out.register_hook(lambda g: events.append("embedding"))
    model.get_input_embeddings().register_forward_hook(on_embed)
    opt = optim.make_optimizer(model, 1e-3, "bf16-fused")
    torch.manual_seed(0)
    row = exgrpo.exgrpo_step(_args(G=2, rl_micro=1, max_new_tokens=6), model, ref, tok, opt, [q], step=0,
                             reward_fn=_varying_reward)
    assert "aux_nll" in row                      # the aux loss did run
    n_params = sum(1 for p in model.parameters())
    assert events.count("embedding") == 4 and events.count("update") == 4 * n_params   # 4 rollouts, one each
    assert events[0] == "update"                 # the first micro-batch, aux included: no branch runs first
    first = events[:events.index("embedding") + 1]
    assert first.count("update") == n_params - 1 and first[-1] == "embedding"   # all but the tied embedding


def test_a_rule_set_that_leaves_no_dialogue_says_the_run_is_grpo():
    """Catches: --rules reverse (every reverse probe states the answer, so none may enter RL)
    running as "ExGRPO" while every dialogue is the plain question, without a word. Two questions
    by hand: one with 2 RL probes, one with 1."""
    ok = {"probes": [{"kept": True, "reveals_answer": False}] * 2}
    one = {"probes": [{"kept": True, "reveals_answer": False}, {"kept": True, "reveals_answer": True}]}
    assert exgrpo.probe_coverage_note([ok, ok]) is None
    assert exgrpo.probe_coverage_note([ok, one]).startswith("note: 1 of 2 training questions")
    assert "this run is GRPO" in exgrpo.probe_coverage_note([one], "reverse")
    dei, _ = probes.build_dei(generate("train", 4), "oracle", rules="reverse", progress=False)
    assert "this run is GRPO" in exgrpo.probe_coverage_note(dei, "reverse")
