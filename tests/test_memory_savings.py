"""The savings that fit a 7B student + reference on one 80 GB GPU (memory.py), tested on CPU:
bf16 AdamW with stochastic rounding (P10), its step fused into backward, gradient checkpointing,
state_dict round trip, and the memory model's parameter counts against real configs.

    python -m pytest tests/test_memory_savings.py -q
"""
import copy
import io
import sys
from pathlib import Path

import pytest
import torch

import exgrpo
import optim
import models
import sample

import memory
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import memory_table  # noqa: E402  (bench/memory_table.py: builds the real architectures on the meta device)


VOCAB = 1024   # a narrow head keeps the bf16 CPU matmuls fast; the embedding stays tied


def _tiny(tok):
    return models.tiny_model(tok, seed=0, vocab_size=VOCAB).to(torch.bfloat16)


def _batch(vocab=VOCAB, B=3, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, T), generator=g)
    attn = torch.ones(B, T, dtype=torch.long)
    attn[0, -3:] = 0   # one padded row
    mask = attn.clone()
    mask[:, :4] = 0    # a prompt
    return ids, attn, mask


def _loss(model, batch):
    ids, attn, mask = batch
    lp = sample.token_logprobs(model, ids, attn, mask)
    return exgrpo.aggregate(-lp, mask, "token")

# -----------------------------------------------------------------------------
# stochastic rounding and P10


def test_stochastic_rounding_is_unbiased_and_lands_on_neighbours():
    # x = 0.020001 lies between the bf16 numbers 163 * 2^-13 = 0.019897 and 164 * 2^-13 = 0.020020
    x = torch.full((200_000,), 0.02 + 1e-6)
    lo, hi = 163 * 2.0 ** -13, 164 * 2.0 ** -13
    r = optim.stochastic_round_bf16(x, torch.Generator().manual_seed(0))
    assert r.dtype == torch.bfloat16
    assert set(r.float().unique().tolist()) == {lo, hi}
    p_hi = (x[0].item() - lo) / (hi - lo)                              # 0.846: the nearer one, more often
    assert abs((r.float() == hi).float().mean().item() - p_hi) < 0.005
    assert abs(r.float().mean().item() - x[0].item()) < 2e-7          # unbiased (std of the mean ~1e-7)
    assert abs(x.to(torch.bfloat16).float()[0].item() - x[0].item()) > 1e-5   # nearest rounding is off by 1.9e-5
    neg = optim.stochastic_round_bf16(-x, torch.Generator().manual_seed(0))
    assert abs(neg.float().mean().item() + x[0].item()) < 2e-7        # symmetric for negative numbers


def test_bf16_weights_move_at_lr_1e6():
    """P10, by hand: constant gradient 1 -> Adam's step is lr * m_hat / sqrt(v_hat) = lr exactly, so
    after 200 steps at lr 1e-6 every weight should sit 2e-4 below where it started. The bf16
    spacing at 0.02 is 1.2e-4, 122 times the step: plain bf16 AdamW rounds every step away."""
    w0 = torch.full((4096,), 0.02, dtype=torch.bfloat16)
    ours = torch.nn.Parameter(w0.clone())
    plain = torch.nn.Parameter(w0.clone())
    opt = optim.BF16AdamW([ours], lr=1e-6)
    ref = torch.optim.AdamW([plain], lr=1e-6, weight_decay=0.0)
    for _ in range(200):
        ours.grad = torch.ones_like(ours)
        plain.grad = torch.ones_like(plain)
        opt.step()
        ref.step()
    moved = (w0.float() - ours.float()).mean().item()
    assert abs(moved - 2e-4) < 0.05 * 2e-4, moved          # 2e-4 +- 5% (the noise is ~1.2%)
    assert bool((plain == w0).all())                         # pure bf16 AdamW: not one weight moved
    assert opt.m[0].dtype == opt.v[0].dtype == torch.bfloat16  # nothing in fp32


def test_fp32_parameters_get_exactly_torch_adamw():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(50, 30))
    b = torch.nn.Parameter(a.detach().clone())
    ours = optim.BF16AdamW([a], lr=1e-2, weight_decay=0.1, chunk=256)   # several chunks
    ref = torch.optim.AdamW([b], lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(50, 30)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-7)

# -----------------------------------------------------------------------------
# fused into backward


def _two_steps(model, opt, batches, fused):
    norms = []
    for batch in batches:
        _loss(model, batch).backward()
        if fused:
            assert all(p.grad is None for p in model.parameters())   # no gradient buffer survives
        opt.step()
        opt.zero_grad()
        norms.append(opt.grad_norm())
    return norms


def test_fused_step_in_backward_equals_the_plain_step(tok):
    base = _tiny(tok)
    plain, fused = copy.deepcopy(base), copy.deepcopy(base)
    batches = [_batch(seed=s) for s in (1, 2)]
    n_plain = _two_steps(plain, optim.BF16AdamW(plain.parameters(), lr=1e-3), batches, fused=False)
    n_fused = _two_steps(fused, optim.BF16AdamW(fused.parameters(), lr=1e-3, fused=True), batches, fused=True)
    for (name, p), q, b in zip(plain.named_parameters(), fused.parameters(), base.parameters()):
        assert torch.equal(p, q), name                                   # bit-identical updates
        assert not torch.equal(p, b), f"{name} did not move"
    assert n_plain == pytest.approx(n_fused, rel=1e-6) and n_plain[0] > 0


def test_fused_step_with_gradient_checkpointing_matches(tok):
    base = _tiny(tok)
    plain, ckpt = copy.deepcopy(base), copy.deepcopy(base)
    ckpt.activation_checkpointing_enable({"use_reentrant": False})
    plain.train(), ckpt.train()
    batches = [_batch(seed=3)]
    _two_steps(plain, optim.BF16AdamW(plain.parameters(), lr=1e-3), batches, fused=False)
    _two_steps(ckpt, optim.BF16AdamW(ckpt.parameters(), lr=1e-3, fused=True), batches, fused=True)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_fused_skips_non_finite_gradients():
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    opt = optim.BF16AdamW([p], lr=1.0, fused=True)
    (p * torch.tensor([1.0, float("nan"), 1.0, 1.0], dtype=torch.bfloat16)).sum().backward()
    assert bool((p == 1).all()) and opt.skipped == 1 and p.grad is None


def test_a_second_fused_optimizer_needs_the_first_unhooked():
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    first = optim.BF16AdamW([p], lr=1e-3, fused=True)      # e.g. the SFT stage's
    with pytest.raises(ValueError, match="remove_hooks"):
        optim.BF16AdamW([p], lr=1e-3, fused=True)          # the RL stage's, while SFT's still steps
    first.remove_hooks()
    second = optim.BF16AdamW([p], lr=1e-3, fused=True)
    (p * 2).sum().backward()
    assert first.steps == [0] and second.steps == [1]


def test_state_dict_round_trip_continues_bit_identically(tok):
    model = _tiny(tok)
    opt = optim.BF16AdamW(model.parameters(), lr=1e-3, fused=True, seed=7)
    _two_steps(model, opt, [_batch(seed=s) for s in (1, 2)], fused=True)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)
    resumed = models.tiny_model(tok, seed=1, vocab_size=VOCAB).to(torch.bfloat16)     # different start, overwritten
    resumed.load_state_dict(saved["model"])
    opt2 = optim.BF16AdamW(resumed.parameters(), lr=5.0, fused=True, seed=0)  # lr, seed come from the state
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.steps == opt.steps
    last = [_batch(seed=9)]
    _two_steps(model, opt, last, fused=True)
    _two_steps(resumed, opt2, last, fused=True)
    for (name, p), q in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    with pytest.raises(ValueError, match="optimizer state holds"):
        optim.BF16AdamW([torch.nn.Parameter(torch.zeros(2))]).load_state_dict(saved["opt"])

# -----------------------------------------------------------------------------
# the memory model counts the parameters of the real configs


@pytest.mark.parametrize("name", ["tiny", "smollm2-135m", "gemma-7b", "qwen2.5-7b"])
def test_memory_model_parameter_counts_match_transformers(name):
    model = memory_table.build_meta_model(name)     # the real architecture on the meta device: no weights
    assert memory.param_count(models.architecture(name)) == sum(p.numel() for p in model.parameters())

# -----------------------------------------------------------------------------
# the wiring in train.py: --optimizer bf16-fused, --grad-checkpointing, --rollout-batch


def _rl_args(**kw):   # test_dialogue's hand-built RL args, with one micro-batch and no clipping
    from test_dialogue import _args
    return _args(**{"rl_micro": 64, "grad_clip": 0.0, **kw})


def _rl_question():
    from test_dialogue import _dei_question
    return _dei_question()


def _rl_step(model, tok, kind, q, **kw):
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    opt = optim.make_optimizer(model, 1e-3, kind)
    torch.manual_seed(0)   # the same rollouts for every optimizer
    row = exgrpo.exgrpo_step(_rl_args(**kw), model, ref, tok, opt, [q], step=0)
    return opt, row


def test_fused_rl_step_equals_the_plain_rl_step(tok, monkeypatch):
    # one micro-batch per rollout batch: the fused optimizer takes exactly the plain step
    # (fp32 weights: BF16AdamW is then plain AdamW; grad_clip 0 because fused cannot clip globally;
    # both score each row whole: the fused scheme never shares prompts, and Adam's first step
    # turns the rounding of a shared prompt's gradient into a full lr on near-zero entries)
    monkeypatch.setattr(sample, "SHARE_PREFIX", False)
    q = _rl_question()
    base = models.tiny_model(tok, seed=0)
    plain, fused = copy.deepcopy(base), copy.deepcopy(base)
    opt_p, row_p = _rl_step(plain, tok, "bf16", q)
    opt_f, row_f = _rl_step(fused, tok, "bf16-fused", q)
    assert row_p["loss"] == pytest.approx(row_f["loss"], rel=1e-6)
    assert opt_p.grad_norm() == pytest.approx(row_f["grad_norm"], rel=1e-5) and row_f["grad_norm"] > 0
    for (name, p), f, b in zip(plain.named_parameters(), fused.parameters(), base.parameters()):
        torch.testing.assert_close(p, f, rtol=0, atol=1e-7, msg=name)
        assert not torch.equal(p, b), f"{name} did not move"
    assert set(opt_f.steps) == {1} and all(p.grad is None for p in fused.parameters())


def test_fused_rl_step_takes_one_step_per_micro_batch(tok, monkeypatch):
    # 2 scenarios x G=4 = 8 rollouts in micro-batches of 3 -> 3 steps, each a finite PPO mini-batch
    # whose pi_old is the rollout policy: after the first step, pi_theta != pi_old
    q = _rl_question()
    model = models.tiny_model(tok, seed=0)
    model.activation_checkpointing_enable({"use_reentrant": False})
    seen, loss_fn = [], exgrpo.exgrpo_loss
    monkeypatch.setattr(exgrpo, "exgrpo_loss", lambda lp, old, *a, **k: seen.append(
        (lp.detach().clone(), old.clone(), a[2].clone())) or loss_fn(lp, old, *a, **k))
    opt, row = _rl_step(model, tok, "bf16-fused", q, G=4, rl_micro=3, rollout_batch=3)
    assert set(opt.steps) == {3} and len(seen) == 3
    torch.testing.assert_close(seen[0][0], seen[0][1], rtol=0, atol=1e-6)   # step 0: ratio 1
    for lp, old, mask in seen[1:]:                                           # later: ratio != 1
        assert (lp - old)[mask.bool()].abs().max() > 1e-6
    assert row["skipped_micro"] == 0 and all(torch.isfinite(torch.tensor(row[k])) for k in ("loss", "kl"))
    assert row["grad_norm"] > 0


@pytest.mark.parametrize("kind, switch, want", [("bf16-fused", True, False),   # fused: never shared
                                                ("bf16", False, False),        # SHARE_PREFIX off: never
                                                ("bf16", True, True)])         # plain + on: every call
def test_shared_prompt_scoring_is_the_same_for_every_micro_batch(tok, monkeypatch, kind, switch, want):
    """token_logprobs gets one share_prefix for every micro-batch of a step. (A bug rebound the
    flag to the loss weight of the first micro-batch: from the second on, prompts were shared
    under the fused optimizer and SHARE_PREFIX=False was ignored.)"""
    monkeypatch.setattr(sample, "SHARE_PREFIX", switch)
    seen, real = [], sample.token_logprobs
    monkeypatch.setattr(sample, "token_logprobs", lambda *a, share_prefix=None, **k: (
        seen.append(share_prefix), real(*a, share_prefix=share_prefix, **k))[1])
    _rl_step(models.tiny_model(tok, seed=0), tok, kind, _rl_question(), G=4, rl_micro=3, no_aux=True)
    assert len(seen) >= 6 and all(v is want for v in seen), seen   # 8 rollouts -> 3 micro-batches, scored 2-3 x


def test_train_runs_end_to_end_with_every_memory_saving(tmp_path):
    import json
    import train
    out = tmp_path / "run"
    train.main(["--student", "tiny", "--train-n", "4", "--eval-n", "2", "--eval-max-new-tokens", "4",
                "--sft-batch", "4", "--sft-micro", "2", "--rl-steps", "1", "--rl-questions", "1", "--G", "2",
                "--k", "2", "--max-new-tokens", "4", "--rl-micro", "2", "--rollout-batch", "2",
                "--optimizer", "bf16-fused", "--grad-checkpointing", "--no-zero-shot", "--out", str(out)])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["stage"] == "rl"]
    assert len(rl) == 1 and rl[0]["grad_norm"] > 0 and rl[0]["skipped_micro"] == 0
    assert (out / "rl" / "final").is_dir()
