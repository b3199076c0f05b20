"""The `micro` student: the synthetic world's tokenizer covers every text of the world exactly,
speaks ChatML like SmolLM2, saves and loads with the model, and the model learns a batch."""
import pytest
import torch

import data
import probes
import models
import sample
from data import synth
from data.oracle import solve
from models import MICRO_CONFIG, micro_model, micro_tokenizer


@pytest.fixture(scope="module")
def mtok():
    return micro_tokenizer()


@pytest.fixture(autouse=True)
def one_thread():
    """A model this small gains nothing from a second thread, and on a busy machine 2 threads
    spin-wait for each other (5x slower here under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def world_sample(n=1000):
    """n questions over every split and level, with their oracle solutions and all their probes."""
    texts, per = [], n // (len(synth.LEVELS) * len(synth.SPLITS)) + 1
    for level in synth.LEVELS:
        for split in synth.SPLITS:
            for r in synth.generate(split, per, seed=11, level=level):
                texts += [data.user_message(r), r["reasoning"]]
                for p in probes.make_probes(r, seed=3):
                    texts.append(probes.format_question(p["question"], p["answer_type"]))
                    if p.get("spec") is not None:
                        texts.append(solve(p["spec"])[1])
    assert per * len(synth.LEVELS) * len(synth.SPLITS) >= n
    return texts


def test_every_text_of_the_world_round_trips_without_unknown_tokens(mtok):
    texts = world_sample(1000)
    assert len(texts) > 10_000  # questions, solutions, and probes of all ten rules
    assert mtok.unk_token_id is None  # byte-level: no unknown token exists
    # all of them through the Rust tokenizer (fast), the questions and solutions through the HF wrapper too
    encoded = [e.ids for e in mtok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert mtok.backend_tokenizer.decode_batch(encoded) == texts
    assert all(0 <= i < len(mtok) for ids in encoded for i in ids)
    some = texts[:3000]
    assert [mtok.decode(ids) for ids in mtok(some, add_special_tokens=False)["input_ids"]] == some
    # every word of the world is one token or two: far fewer tokens than bytes (1.0 without merges)
    assert sum(map(len, encoded)) < 0.35 * sum(map(len, texts))


def test_digits_are_single_tokens(mtok):
    ids = mtok("Step 2: 123 + 45 = 168.", add_special_tokens=False)["input_ids"]
    pieces = [p.replace("Ġ", "") for p in mtok.convert_ids_to_tokens(ids)]
    assert [p for p in pieces if any(ch.isdigit() for ch in p)] == list("2123451" "68")


def test_chatml_template_eos_and_turn_glue(mtok):
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    ids = sample.chat_ids(mtok, msgs)
    assert mtok.decode(ids) == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    assert mtok.eos_token == mtok.pad_token == "<|im_end|>"
    assert mtok.convert_tokens_to_ids("<|im_end|>") in sample.eos_ids(mtok)
    glue = sample.turn_glue_ids(mtok, msgs + [{"role": "assistant", "content": "The answer is 5."}], "Why?")
    assert mtok.decode(glue) == "\n<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"


def test_micro_student_saves_and_loads_unchanged(mtok, tmp_path):
    model, tok = models.load_student("micro", seed=1)
    assert model.config.vocab_size == len(tok) == len(mtok) and model.config.hidden_size == MICRO_CONFIG["hidden_size"]
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = models.load_student(str(tmp_path))
    text = data.user_message(synth.generate("test_ood", 1, level=3)[0])
    ids = tok2(text, add_special_tokens=False)["input_ids"]
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert tok2.chat_template == tok.chat_template and tok2.eos_token == "<|im_end|>"
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.allclose(model(x).logits, again(x).logits, atol=1e-5)
    # the seed picks the random init; the same seed gives the same model
    assert torch.equal(micro_model(mtok, seed=1).model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert not torch.equal(micro_model(mtok, seed=2).model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_a_few_sft_steps_fit_a_batch_and_generation_runs(mtok):
    torch.manual_seed(0)
    model = micro_model(mtok, seed=0)
    recs = synth.generate("train", 8, seed=0, level=1)
    tf = [sample.teacher_forced(mtok, [(data.user_message(r), r["reasoning"])]) for r in recs]
    batch = sample.pack([[]] * len(tf), [t[0] for t in tf], mtok.pad_token_id, [t[1] for t in tf])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logp = sample.token_logprobs(model, batch.ids, batch.attn, batch.loss_mask)
        loss = -(logp * batch.loss_mask).sum() / batch.loss_mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    gen = sample.generate(model, mtok, [sample.chat_ids(mtok, data.messages(r)) for r in recs[:2]], n=3,
                          max_new_tokens=8, temperature=1.0)
    assert len(gen.texts) == 6 and all(len(c) <= 8 for c in gen.completions)
