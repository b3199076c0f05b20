"""Every equation of exgrpo.py against a value computed by hand, plus pitfalls P1, P2, P6, P10, P11, P14;
the DSU bonus (step 4) and the dialogue scenarios are hand-checked in tests/test_dialogue.py."""
import math

import pytest
import torch

import exgrpo
import optim
from exgrpo import aggregate, clipped_surrogate, group_advantages, kl_k3


# --- advantages --------------------------------------------------------------

def _per_row(r, norm="std"):
    """group_advantages with one group per row of r (num_groups, G) -> (num_groups, G)."""
    groups = torch.arange(r.shape[0]).repeat_interleave(r.shape[1])
    return group_advantages(r.flatten(), groups, norm).view(r.shape)


def test_group_advantage_hand_computed():
    # [1, 0, 0, 1]: mean 0.5, sample std sqrt(1/3) = 0.57735 -> 0.5 / 0.57745 = 0.865875
    adv = _per_row(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert torch.allclose(adv, torch.tensor([[expected, -expected, -expected, expected]]), atol=1e-6)
    # [2, 0, 1]: mean 1, std 1 -> [1, -1, 0] / 1.0001
    adv = _per_row(torch.tensor([[2.0, 0.0, 1.0]]))
    assert torch.allclose(adv, torch.tensor([[1.0, -1.0, 0.0]]) / 1.0001, atol=1e-6)
    # groups need not be contiguous: ids [0, 1, 0, 1], r [1, 3, 0, 3] -> group 0 mean 0.5, group 1 constant
    adv = group_advantages(torch.tensor([1.0, 3.0, 0.0, 3.0]), torch.tensor([0, 1, 0, 1]), "none")
    assert torch.equal(adv, torch.tensor([0.5, 0.0, -0.5, 0.0]))


def test_constant_groups_give_exact_zero_and_no_nan():  # P2
    # 0.1 * 3 is not representable: the float mean of [0.1]*3 differs from 0.1 in the last bit
    r = torch.tensor([[0.1, 0.1, 0.1], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.7, 0.7, 0.7]])
    for norm in ("std", "none"):
        adv = _per_row(r, norm)
        assert torch.equal(adv, torch.zeros_like(adv))
    groups = torch.arange(4).repeat_interleave(3)
    assert exgrpo.zero_variance_fraction(r.flatten(), groups) == 1.0
    # one group of size 1 has no spread either
    assert torch.equal(_per_row(torch.tensor([[0.5]])), torch.zeros(1, 1))


def test_advantages_have_zero_mean_per_group():  # P14 (shape)
    r = torch.rand(5, 8)
    for norm in ("std", "none"):
        assert torch.allclose(_per_row(r, norm).mean(dim=1), torch.zeros(5), atol=1e-5)
    assert exgrpo.zero_variance_fraction(torch.tensor([1.0, 1.0, 1.0, 0.0]), torch.tensor([0, 0, 1, 1])) == 0.5
    with pytest.raises(ValueError):
        group_advantages(torch.rand(4), torch.zeros(4), "whiten")


def test_question_groups_join_scenario_a_and_b_by_hand():
    # one question: A = [1, 1, 0, 0] + DSU 0.5 on the correct ones, B = [0, 0, 0, 0] -> one group of 8
    meta = [(0, "full"), (0, "partial")]
    groups = exgrpo.group_ids(meta, G=4)
    assert groups.tolist() == [0] * 8 and exgrpo.group_ids(meta, 4, "scenario").tolist() == [0] * 4 + [1] * 4
    r_base = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    r, fired, p_full, p_part = exgrpo.add_dsu(r_base, meta, delta=0.5, nu=1.0)
    assert fired == [1.0] and p_full == [0.5] and p_part == [0.0]
    adv = group_advantages(r.flatten(), groups, "none")   # mean 3/8
    assert torch.allclose(adv, torch.tensor([1.125, 1.125, -0.375, -0.375] + [-0.375] * 4))
    plain = group_advantages(r_base.flatten(), groups, "none")   # mean 2/8
    assert torch.allclose(plain, torch.tensor([0.75, 0.75, -0.25, -0.25] + [-0.25] * 4))
    # A all right, B all wrong: a signal under the defaults; two constant per-scenario groups give none
    r_ab = torch.tensor([[1.0] * 4, [0.0] * 4])
    assert group_advantages(r_ab.flatten(), groups, "none").abs().sum() > 0
    assert group_advantages(r_ab.flatten(), exgrpo.group_ids(meta, 4, "scenario"), "std").abs().sum() == 0


def test_every_dsu_firing_changes_the_default_advantages():  # P16: all 256 binary patterns at G = 4
    import itertools
    meta, G = [(0, "full"), (0, "partial")], 4
    fired_cases = 0
    for a in itertools.product([0.0, 1.0], repeat=G):
        for b in itertools.product([0.0, 1.0], repeat=G):
            r_base = torch.tensor([a, b])
            r, fired, _, _ = exgrpo.add_dsu(r_base, meta, delta=0.5, nu=1.0)
            no_dsu, _, _, _ = exgrpo.add_dsu(r_base, meta, enabled=False)
            groups = exgrpo.group_ids(meta, G, exgrpo.ADV_GROUP)
            adv = group_advantages(r.flatten(), groups, exgrpo.ADV_NORM)
            adv_off = group_advantages(no_dsu.flatten(), groups, exgrpo.ADV_NORM)
            assert fired[0] == float(sum(a) > sum(b))          # P_full > P_partial, same G
            if fired[0]:
                fired_cases += 1
                assert not torch.allclose(adv, adv_off), (a, b)
            else:
                assert torch.equal(adv, adv_off)
    assert fired_cases == 93   # pairs with more correct A than B: sum_i C(4,i) * sum_{j<i} C(4,j) = 4+30+44+15


def test_the_bonus_raises_the_joint_baseline_so_a_correct_b_rollout_can_get_zero():
    """The documented cost of keeping the bonus in the reward (docs/design.md, Advantages): A all
    right, B [1, 1, 0, 0], G 4. R: A [1.5] * 4 (P_full 1 > P_partial 0.5), B [1, 1, 0, 0]; the
    joint mean (6 + 2) / 8 = 1, so A gets [0.5] * 4, the correct B rollouts 0, the wrong ones -1."""
    meta, G = [(0, "full"), (0, "partial")], 4
    r, fired, _, _ = exgrpo.add_dsu(torch.tensor([[1.0] * 4, [1.0, 1.0, 0.0, 0.0]]), meta, delta=0.5, nu=1.0)
    adv = group_advantages(r.flatten(), exgrpo.group_ids(meta, G, "question"), "none")
    assert fired == [1.0] and adv.tolist() == [0.5, 0.5, 0.5, 0.5, 0.0, 0.0, -1.0, -1.0]


def test_std_scaling_cancels_the_dsu_bonus_on_binary_rewards():
    # the old reading (per-scenario groups, std) loses the bonus: [1.5, 0, 0, 1.5] = 1.5 x [1, 0, 0, 1]
    full, partial = [1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]
    bonus = exgrpo.dsu_bonus(full, partial, delta=0.5, nu=1.0)
    assert bonus == [0.5, 0.0, 0.0, 0.5]
    r, r_dsu = torch.tensor([full]), torch.tensor([full]) + torch.tensor([bonus])
    torch.testing.assert_close(_per_row(r_dsu), _per_row(r), rtol=1e-3, atol=1e-4)
    # r - mean: the bonus raises the correct rollouts' advantage from 0.5 to 0.75
    assert torch.equal(_per_row(r_dsu, "none"), torch.tensor([[0.75, -0.75, -0.75, 0.75]]))


# --- clipped surrogate -------------------------------------------------------

@pytest.mark.parametrize("ratio, adv, expected_loss, expected_clipped", [
    (1.1, +1.0, -1.1, 0.0),   # inside the range: -ratio * A
    (1.5, +1.0, -1.2, 1.0),   # above 1 + eps with A > 0: capped at 1.2
    (0.5, +1.0, -0.5, 0.0),   # below 1 - eps with A > 0: min picks the unclipped 0.5
    (0.5, -1.0, +0.8, 1.0),   # below 1 - eps with A < 0: -min(-0.5, -0.8) = 0.8
    (1.5, -1.0, +1.5, 0.0),   # above 1 + eps with A < 0: unclipped -1.5 is the min
    (0.9, -2.0, +1.8, 0.0),   # inside: -(0.9 * -2)
])
def test_clipped_surrogate_hand_computed(ratio, adv, expected_loss, expected_clipped):
    logp = torch.tensor([[math.log(ratio)]])
    loss, clipped = clipped_surrogate(logp, torch.zeros(1, 1), torch.tensor([adv]), clip_eps=0.2)
    assert loss.item() == pytest.approx(expected_loss, abs=1e-6)
    assert clipped.item() == expected_clipped


def test_loss_is_zero_at_step_zero_but_gradient_is_not():  # P1
    torch.manual_seed(0)
    logits = torch.randn(4, 6, requires_grad=True)
    logp = torch.log_softmax(logits, -1)[:, :3]  # (B=4, T=3) log-probs of some tokens
    adv = _per_row(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))[0]
    loss, _ = clipped_surrogate(logp, logp.detach(), adv)
    total = aggregate(loss, torch.ones(4, 3), "token")
    assert abs(total.item()) < 1e-6          # ratio = 1 and centred advantages: loss ~ 0
    total.backward()
    assert logits.grad.abs().sum().item() > 1e-3   # ...but the gradient is not


# --- KL ----------------------------------------------------------------------

def test_kl_k3_hand_computed():
    kl = kl_k3(torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]]))
    # x = log 0.25 - log 0.5 = -0.693147; e^x - x - 1 = 0.5 + 0.693147 - 1
    assert kl.item() == pytest.approx(0.193147, abs=1e-6)


def test_kl_zero_for_identical_and_finite_for_extremes():  # P6
    logp = torch.randn(3, 5)
    assert torch.equal(kl_k3(logp, logp.clone()), torch.zeros(3, 5))
    extreme = kl_k3(torch.tensor([[-1e4, 0.0, -80.0]]), torch.tensor([[0.0, -1e4, -1e-9]]))
    assert torch.isfinite(extreme).all() and (extreme >= 0).all()


def test_kl_past_the_cap_is_bounded_and_stops_pulling():
    """Catches: the cap moved or gone (KL_EXP_MAX); a clamp on the lower side too is caught by the
    test below. logp -30, ref 0:
    x = 30 is capped at 20, KL = e^20 - 20 - 1 = 485165174.41, and the gradient is 0 there."""
    assert exgrpo.KL_EXP_MAX == 20.0
    logp = torch.tensor([[-30.0]], requires_grad=True)
    kl = kl_k3(logp, torch.tensor([[0.0]]))
    assert kl.item() == pytest.approx(math.exp(20) - 21, rel=1e-6)
    assert kl.item() == pytest.approx(485165174.41, rel=1e-6)
    kl.sum().backward()
    assert logp.grad.item() == 0.0


def test_kl_keeps_pulling_where_the_policy_is_far_above_the_reference():
    # x = logp_ref - logp = -30: nothing can overflow there, so no clamp: KL = e^-30 + 30 - 1, dKL/dlogp = 1
    logp = torch.tensor([[0.0]], requires_grad=True)
    kl = kl_k3(logp, torch.tensor([[-30.0]]))
    assert kl.item() == pytest.approx(29.0, abs=1e-6)
    kl.sum().backward()
    assert logp.grad.item() == pytest.approx(1.0, abs=1e-6)   # the old +-10 clamp gave 0 here
    # the upper side is clamped at KL_EXP_MAX: finite value, finite gradient
    up = torch.tensor([[-1e4]], requires_grad=True)
    kl_k3(up, torch.tensor([[0.0]])).sum().backward()
    assert torch.isfinite(up.grad).all()


# --- aggregation (P11) -------------------------------------------------------

def test_aggregations_hand_computed():
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    m = torch.tensor([[1, 1], [1, 0]])
    assert aggregate(x, m, "token").item() == pytest.approx(2.0)       # 6 / 3
    assert aggregate(x, m, "sequence").item() == pytest.approx(2.25)   # (1.5 + 3) / 2
    assert aggregate(x, m, "constant").item() == pytest.approx(1.5)    # 6 / (2 * 2): batch width
    assert aggregate(x, m, "constant", token_budget=4).item() == pytest.approx(0.75)   # 6 / (2 * 4)
    with pytest.raises(ValueError):
        aggregate(x, m, "mean")


@pytest.mark.parametrize("mode", exgrpo.AGG_MODES)
def test_micro_batches_accumulate_to_the_full_batch_gradient(mode):  # P11
    torch.manual_seed(0)
    w = torch.randn(6, requires_grad=True)
    feats = torch.randn(6, 5, 6)                       # B=6 sequences, T=5 tokens
    mask = (torch.rand(6, 5) > 0.3).long()
    mask[:, 0] = 1
    adv = torch.randn(6)

    def loss_of(rows, norm):
        logp = torch.nn.functional.logsigmoid(feats[rows] @ w)
        return exgrpo.exgrpo_loss(logp, logp.detach() + 0.05, logp.detach(), adv[rows], mask[rows],
                                  agg=mode, normalizers=norm)[0]

    full = loss_of(slice(0, 6), None)
    g_full, = torch.autograd.grad(full, w)
    norm = {"num_tokens": mask.sum().item(), "num_seqs": 6, "token_budget": 5}
    g_acc = torch.zeros(6)
    for rows in (slice(0, 2), slice(2, 3), slice(3, 6)):
        g, = torch.autograd.grad(loss_of(rows, norm), w)
        g_acc += g
    assert torch.allclose(g_acc, g_full, atol=1e-6)


def test_exgrpo_loss_combines_terms_by_hand():
    # one sequence, two tokens; logp = logp_old (ratio 1); A = 2; ref differs on token 2
    logp = torch.tensor([[math.log(0.5), math.log(0.5)]])
    ref = torch.tensor([[math.log(0.5), math.log(0.25)]])
    aux_logp = torch.tensor([[math.log(0.1)]])
    loss, m = exgrpo.exgrpo_loss(logp, logp.clone(), ref, torch.tensor([2.0]), torch.ones(1, 2),
                                 beta=0.04, aux_logp=aux_logp, aux_mask=torch.ones(1, 1), aux_weight=0.1)
    # token mean of (-2 + 0.04 * [0, 0.193147]) + 0.1 * (-log 0.1)
    expected = (-2 - 2 + 0.04 * 0.193147) / 2 + 0.1 * math.log(10)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert m["kl"] == pytest.approx(0.193147, abs=1e-5)   # a token SUM (the step divides by its tokens)
    assert m["clip_frac"] == 0.0 and m["aux_nll"] == pytest.approx(math.log(10), abs=1e-5)


# --- precision (P10) ---------------------------------------------------------

def test_master_weights_move_bf16_model_at_tiny_lr():  # P10
    torch.manual_seed(0)
    init = torch.full((64,), 0.02)
    pure = torch.nn.Parameter(init.clone().bfloat16())
    ours = torch.nn.Parameter(init.clone().bfloat16())
    opt_pure = torch.optim.AdamW([pure], lr=1e-6, weight_decay=0.0)
    opt_ours = optim.MasterWeightAdamW([ours], lr=1e-6)
    for _ in range(100):
        for p, opt in ((pure, opt_pure), (ours, opt_ours)):
            opt.zero_grad()
            p.grad = torch.ones_like(p)  # descend: every step lowers the weight by ~lr
            opt.step()
    # pure bf16: each 1e-6 step rounds back to 0.02 -> nothing moved (the pitfall, shown)
    assert torch.equal(pure.detach(), init.bfloat16())
    # master weights: 100 steps * 1e-6 = 1e-4 accumulated in fp32, visible in bf16
    start = init.bfloat16()[0].item()  # 0.0200195..., the bf16 neighbour of 0.02
    assert opt_ours.master[0][0].item() == pytest.approx(start - 1e-4, abs=2e-6)
    assert (ours.detach().float() < start - 5e-5).all()


def test_master_weights_state_roundtrip():
    p = torch.nn.Parameter(torch.ones(3).bfloat16())
    opt = optim.MasterWeightAdamW([p], lr=1e-3)
    p.grad = torch.ones_like(p)
    opt.step()
    state = opt.state_dict()
    q = torch.nn.Parameter(torch.ones(3).bfloat16())
    opt2 = optim.MasterWeightAdamW([q], lr=1e-3)
    opt2.load_state_dict(state)
    assert torch.equal(opt2.master[0], opt.master[0]) and torch.equal(q, p)


def test_cosine_lr_schedule():
    assert optim.cosine_lr(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert optim.cosine_lr(10, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert optim.cosine_lr(100, 100, 1.0, warmup=10) == pytest.approx(0.1)
