"""
The `micro` student: a tokenizer built for the synthetic world's language, and a small
randomly initialized Llama on top of it, trained from scratch by train.py.

    from data.synth_tokenizer import micro_tokenizer, micro_model
    tok = micro_tokenizer()               # built once (~2 s) into .cache/, then loaded
    model = micro_model(tok, seed=0)      # random init from MICRO_CONFIG
    python train.py --student micro ...   # the same through sample.load_student("micro")

Why: SmolLM2's 49k-token vocabulary is 95% of the `small` student's parameters and most of
its compute (the lm_head). The synthetic world speaks a few hundred words. The tokenizer is a
byte-level BPE trained on the world's own texts -- questions, oracle solutions and all ten
probe rules' questions and answers -- so every word of the world is one or two tokens, digits
are single tokens (the model sees place value), and any other text still encodes exactly
through the 256 byte tokens (no unknown token exists). Chat format: ChatML, eos = pad =
<|im_end|>, as SmolLM2's, so every code path of sample.py works unchanged.

Run it to build the tokenizer and print its size and one tokenized question, or to time
an SFT step and a rollout of micro beside small (OMP_NUM_THREADS=1: a model this small gains
nothing from a second thread, and on a busy machine two threads spin-wait for each other):

    python -m data.synth_tokenizer
    OMP_NUM_THREADS=1 python -m data.synth_tokenizer --bench
"""

import os
from pathlib import Path

# -----------------------------------------------------------------------------
# defaults

VERSION = 1                # bump when the corpus or the settings below change (a new cache folder)
VOCAB_SIZE = 1024          # upper bound; BPE stops earlier once every word is a single token
CORPUS_N = 400             # questions per split and level whose texts (+ probes) train the BPE
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for message in messages %}"
                 "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
                 "{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# 3 layers, width 96 (~0.4M parameters): small enough for hundreds of RL steps on 2 CPU cores
MICRO_CONFIG = dict(hidden_size=96, intermediate_size=256, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048)


def _cache_dir():
    root = Path(__file__).resolve().parent.parent
    return Path(os.environ.get("EXGRPO_CACHE", root / ".cache"))  # git-ignored, shared with sample.py

# -----------------------------------------------------------------------------
# the corpus: every kind of text the synthetic world puts in a prompt or an answer


def world_texts(n=CORPUS_N, seed=0):
    """Questions (as the student sees them), oracle solutions, probe questions and the oracle's
    probe answers, for n questions of every split at every difficulty level."""
    import data
    import probes
    from data import synth
    from data.oracle import solve
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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token=None, chat_template=CHAT_TEMPLATE,
                                   model_max_length=MICRO_CONFIG["max_position_embeddings"])


def micro_tokenizer():
    """The world's tokenizer, built once into the cache (atomically), then loaded from there."""
    from transformers import AutoTokenizer
    import sample
    path = _cache_dir() / f"micro-tokenizer-v{VERSION}"
    if not path.exists():
        sample._atomic_save(path, build_tokenizer(world_texts()).save_pretrained)
    return AutoTokenizer.from_pretrained(path)


def micro_model(tokenizer, seed=0, **overrides):
    """A random Llama of MICRO_CONFIG (tied embeddings) sized to the tokenizer."""
    import sample
    return sample.tiny_model(tokenizer, seed=seed, **{**MICRO_CONFIG, **overrides})


def bench(students=("micro", "small"), batch=32, dialogues=8, turns=3, max_new_tokens=60, repeats=3):
    """ms per SFT step (forward + backward + AdamW on `batch` question + solution sequences) and
    per rollout of `dialogues` x `turns`-turn dialogues (probe, probe, question; T = 1), for
    each student side by side in one process: compare the ratios, the absolute numbers move
    with the machine's load."""
    import time
    import torch
    import data
    import probes
    import sample
    from data import synth
    recs = synth.generate("train", batch, seed=0)
    dials = [[probes.format_question(p["question"], p["answer_type"]) for p in probes.make_probes(r)[:turns - 1]]
             + [data.user_message(r)] for r in recs[:dialogues]]
    for name in students:
        model, tok = sample.load_student(name, seed=0)
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
    import sys
    if "--bench" in sys.argv:  # python -m data.synth_tokenizer --bench
        bench()
        sys.exit()
    import data
    from data import synth
    tok = micro_tokenizer()
    model = micro_model(tok)
    r = synth.generate("train", 1)[0]
    ids = tok(data.user_message(r))["input_ids"]
    print(f"vocab {len(tok)}, model {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    print(f"{len(ids)} tokens:", tok.convert_ids_to_tokens(ids))
