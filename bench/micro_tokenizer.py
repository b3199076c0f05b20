"""
Builds the `micro` student's tokenizer into data/micro_tokenizer/ (committed): a tokenizer for
the synthetic world's language, under a small randomly initialized Llama (models.MICRO_CONFIG)
that train.py trains from scratch.

    python bench/micro_tokenizer.py            # rebuild data/micro_tokenizer/ (~2 s), print one question
    python bench/micro_tokenizer.py --check    # exit 1 if the committed one no longer matches the corpus
    OMP_NUM_THREADS=1 python bench/micro_tokenizer.py --bench   # SFT step and rollout, micro beside small
    python train.py --student micro ...        # models.load_student("micro") reads the committed folder

Why: SmolLM2's 49k-token vocabulary is 95% of the `small` student's parameters and most of
its compute (the lm_head). The synthetic world speaks a few hundred words. The tokenizer is a
byte-level BPE trained on the world's own texts -- questions, oracle solutions and all ten
probe rules' questions and answers -- so every word of the world is one or two tokens, digits
are single tokens (the model sees place value), and any other text still encodes exactly
through the 256 byte tokens (no unknown token exists). Chat format: ChatML, eos = pad =
<|im_end|>, as SmolLM2's, so every code path of sample.py works unchanged.

The folder is keyed by its corpus: corpus.sha256 beside the tokenizer files hashes every
text it was trained on, and tests/test_micro.py fails when the world's texts change without a
rebuild. (--bench: OMP_NUM_THREADS=1, since a model this small gains nothing from a second
thread, and on a busy machine two threads spin-wait for each other.)
"""

import hashlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the project root, when run as a script
import data  # noqa: E402
import models  # noqa: E402
import probes  # noqa: E402
import sample  # noqa: E402
from data import synth  # noqa: E402
from data.oracle import solve  # noqa: E402

# -----------------------------------------------------------------------------
# defaults

VOCAB_SIZE = 1024          # upper bound; BPE stops earlier once every word is a single token
CORPUS_N = 400             # questions per split and level whose texts (+ probes) train the BPE
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
OUT = models.MICRO_TOKENIZER   # data/micro_tokenizer/
CHAT_TEMPLATE = ("{% for message in messages %}"
                 "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
                 "{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# -----------------------------------------------------------------------------
# the corpus: every kind of text the synthetic world puts in a prompt or an answer


def world_texts(n=CORPUS_N, seed=0):
    """Questions (as the student sees them), oracle solutions, probe questions and the oracle's
    probe answers, for n questions of every split at every difficulty level."""
    texts = []
    for level in synth.LEVELS:
        for split in synth.SPLITS:
            for r in synth.generate(split, n, seed=seed, level=level):
                texts += [data.user_message(r), r["reasoning"]]
                for p in probes.make_probes(r, seed=seed):
                    texts.append(probes.format_question(p["question"], p["answer_type"]))
                    if p.get("spec") is not None:
                        texts.append(solve(p["spec"])[1])
    return texts


def build_tokenizer(texts, vocab_size=VOCAB_SIZE):
    """A byte-level BPE (digits split one per token) trained on texts, as a HF fast tokenizer
    with the ChatML template."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token=None, chat_template=CHAT_TEMPLATE,
                                   model_max_length=models.MICRO_CONFIG["max_position_embeddings"])


def corpus_hash(texts):
    """sha256 of the training texts and the settings: the key the committed folder carries."""
    blob = json.dumps([texts, VOCAB_SIZE, SPECIAL_TOKENS, CHAT_TEMPLATE], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def build(out=OUT):
    """Train the tokenizer on the world's texts and write it, with its corpus hash, to `out`."""
    texts = world_texts()
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(texts).save_pretrained(out)
    (out / "corpus.sha256").write_text(corpus_hash(texts) + "\n")
    return out


def bench(students=("micro", "small"), batch=32, dialogues=8, turns=3, max_new_tokens=60, repeats=3):
    """ms per SFT step (forward + backward + AdamW on `batch` question + solution sequences) and
    per rollout of `dialogues` x `turns`-turn dialogues (probe, probe, question; T = 1), for
    each student side by side in one process: compare the ratios, the absolute numbers move
    with the machine's load."""
    recs = synth.generate("train", batch, seed=0)
    dials = [[probes.format_question(p["question"], p["answer_type"]) for p in probes.make_probes(r)[:turns - 1]]
             + [data.user_message(r)] for r in recs[:dialogues]]
    for name in students:
        model, tok = models.load_student(name, seed=0)
        tf = [sample.teacher_forced(tok, [(data.user_message(r), r["reasoning"])]) for r in recs]
        b = sample.pack([[]] * batch, [t[0] for t in tf], tok.pad_token_id, [t[1] for t in tf])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        sft, gen = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            logp = sample.token_logprobs(model, b.ids, b.attn, b.loss_mask)
            (-(logp * b.loss_mask).sum() / b.loss_mask.sum()).backward()
            opt.step()
            opt.zero_grad()
            sft.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sample.rollout_dialogues(model, tok, dials, max_new_tokens=max_new_tokens, temperature=1.0)
            gen.append(time.perf_counter() - t0)
        print(f"{name:>6}: {sum(p.numel() for p in model.parameters()) / 1e6:5.2f}M parameters, "
              f"{b.ids.shape[1]} tokens per row; SFT step ({batch} rows) {1000 * min(sft):6.0f} ms; "
              f"{dialogues} x {turns}-turn rollout {1000 * min(gen):6.0f} ms (best of {repeats}, "
              f"{torch.get_num_threads()} threads)", flush=True)


if __name__ == "__main__":
    if "--bench" in sys.argv:
        bench()
        sys.exit()
    if "--check" in sys.argv:
        have = (OUT / "corpus.sha256").read_text().strip() if (OUT / "corpus.sha256").exists() else None
        sys.exit(0 if have == corpus_hash(world_texts()) else f"{OUT} does not match the world's texts: rebuild it")
    build()
    tok = models.micro_tokenizer()
    model = models.micro_model(tok)
    r = synth.generate("train", 1)[0]
    ids = tok(data.user_message(r))["input_ids"]
    print(f"wrote {OUT}: vocab {len(tok)}, model {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    print(f"{len(ids)} tokens:", tok.convert_ids_to_tokens(ids))
