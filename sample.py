"""
The sampling layer the whole project shares: chat formatting, generation, multi-turn
dialogue rollouts, completion masks and per-token log-probs. It knows no pipeline and no probe
rules; loading the students is models.py's.

    from sample import chat_ids, generate, token_logprobs
    from models import load_student
    model, tok = load_student("tiny")                     # or smollm2-135m, gemma-7b, a path
    prompts = [chat_ids(tok, [{"role": "user", "content": "What is 2 + 3?"}])]
    gen = generate(model, tok, prompts, n=4, max_new_tokens=32, temperature=1.0)
    gen.texts                                              # 4 sampled answers
    batch = pack(gen.prompts, gen.completions, tok.pad_token_id)
    logp = token_logprobs(model, batch.ids, batch.attn, batch.loss_mask, temperature=1.0)

Run it to chat once with a student:

    python sample.py --student smollm2-135m --prompt "What is 12 + 30?"

Pitfalls handled here (the P codes of docs/design.md): P3 pad == eos (the completion mask keeps
the first EOS, drops the rest), P4 padding-invariant log-probs (position ids from the
attention mask), P5 sampled ids are scored as ids, never re-tokenized, at the sampling
temperature, P7 an explicit generation config (no silent top_k = 50, no model defaults),
P8 eval() + KV cache during generation, P9 chunked fp32 log-softmax only at the
positions a loss needs, P12 ids >= len(tokenizer) are never sampled nor scored, P15 no
helper mutates its inputs.
"""

import argparse
import functools
import types
from dataclasses import dataclass

import torch

import decode
import dist
from models import load_student

# -----------------------------------------------------------------------------
# defaults

LOGPROB_CHUNK = 1024       # rows of the lm_head computed at once (P9)
SHARE_PREFIX = True        # token_logprobs: rows with the same prompt run it through the model once
SKINNY_ROWS = 32           # CPU decoding: a Linear on 2 to this many rows runs as (W @ x.T).T
SKINNY_MIN_WEIGHTS = 1 << 16   # ... for weights this large: below it, the matmul is not what costs
EOS_TOKEN_NAMES = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>")
def eos_ids(tokenizer):
    """Every id that ends an assistant turn (eos plus the chat template's end-of-turn)."""
    ids = {tokenizer.eos_token_id}
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in EOS_TOKEN_NAMES if t in vocab)
    return sorted(i for i in ids if i is not None)

# -----------------------------------------------------------------------------
# chat formatting

def chat_ids(tokenizer, messages, add_generation_prompt=True):
    """Token ids of a conversation in the tokenizer's own chat template.

    chat_ids(tok, [{"role": "user", "content": "2+3?"}]) -> [1, 9690, ..., 520, 198]
    (ends with '<|im_start|>assistant\\n', so the next sampled token starts the answer)."""
    if not messages:
        raise ValueError("empty conversation: give at least one message")
    text = tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def turn_glue_ids(tokenizer, messages, user_message):
    """Ids that follow a finished assistant turn (its end-of-turn token included) up to the
    next assistant turn's first token: the template's glue plus the new user message.

    Used by multi-turn rollouts: the student's sampled ids stay exactly as sampled (P5), and
    only the text between turns is tokenized. `messages` ends with the assistant turn."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("turn_glue_ids needs a conversation that ends with an assistant turn")
    before = tokenizer.apply_chat_template(messages, tokenize=False)
    after = tokenizer.apply_chat_template(messages + [{"role": "user", "content": user_message}],
                                          tokenize=False, add_generation_prompt=True)
    # the assistant turn ends at its end-of-turn token; everything after it is glue
    ends = [before.rfind(tokenizer.convert_ids_to_tokens(i)) + len(tokenizer.convert_ids_to_tokens(i))
            for i in eos_ids(tokenizer) if tokenizer.convert_ids_to_tokens(i) in before]
    cut = max(ends) if ends else len(before)
    if not after.startswith(before[:cut]):
        raise ValueError("chat template re-renders earlier turns differently; cannot append a turn")
    return tokenizer(after[cut:], add_special_tokens=False)["input_ids"]

# -----------------------------------------------------------------------------
# generation

class _VocabLimit:
    """Logits processor: ids >= len(tokenizer) are padding rows of a wider head (P12)."""
    def __init__(self, limit):
        self.limit = limit

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.limit:] = float("-inf")
        return scores


def generation_config(tokenizer, max_new_tokens, temperature):
    """The explicit sampling settings (P7): transformers otherwise merges in the model's own
    generation_config (e.g. Qwen's top_k = 20, repetition_penalty = 1.05)."""
    from transformers import GenerationConfig
    greedy = temperature == 0
    return GenerationConfig(
        do_sample=not greedy, temperature=None if greedy else float(temperature),
        top_k=None if greedy else 0, top_p=None if greedy else 1.0, min_p=None, typical_p=None,
        repetition_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=max_new_tokens,
        eos_token_id=eos_ids(tokenizer), pad_token_id=tokenizer.pad_token_id, use_cache=True)


def left_pad(seqs, pad_id):
    """list of id lists -> (ids, attn), both (B, T), padded on the left for generation."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
            attn[i, T - len(s):] = 1
    return ids, attn


def completion_mask(completion_ids, eos):
    """1 for every generated token up to and including the first EOS, 0 after (P3).

    completion_ids (B, L); eos: an id or a list of ids. With pad == eos = 2:
        [[5, 7, 2, 2, 2]] -> [[1, 1, 1, 0, 0]]     (the first 2 is a real EOS, the rest pad)
        [[5, 7, 9, 4, 6]] -> [[1, 1, 1, 1, 1]]     (ran out of budget: no EOS)"""
    eos = torch.tensor([eos] if isinstance(eos, int) else list(eos), device=completion_ids.device)
    is_eos = torch.isin(completion_ids, eos).long()
    eos_before = is_eos.cumsum(-1) - is_eos  # EOS tokens strictly before each position
    return (eos_before == 0).long()


@dataclass
class Generation:
    prompts: list          # N lists of prompt ids (prompt i repeated n times, contiguous)
    completions: list      # N lists of generated ids, cut after the first EOS (EOS kept)
    texts: list            # N decoded completions, special tokens dropped
    finished: list         # N bools: did the completion end with an EOS?
    logprobs: list = None  # N lists: log-prob of each sampled id at the temperature (T = 1 if greedy)
    past: "Past" = None    # with keep=True: each row's cache, for the next turn (None if not reusable)


def _new_cache(model, capacity):
    """A transformers DynamicCache whose full-attention layers keep their keys and values in one
    buffer of `capacity` positions: a new token is written in place (transformers' DynamicLayer
    re-copies the whole cache with torch.cat every step) and attention sees only the filled part.
    Sliding-window layers (Gemma 3) keep transformers' own layer: they are bounded already."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class Layer(DynamicLayer):
        def __init__(self):
            super().__init__()
            self.n = 0

        def lazy_initialization(self, k, v):
            self.device, self.is_initialized = k.device, True
            self.kbuf = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])
            self.vbuf = v.new_empty(v.shape[0], v.shape[1], capacity, v.shape[3])

        def update(self, k, v, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(k, v)
            L = k.shape[-2]
            self.kbuf[:, :, self.n:self.n + L] = k
            self.vbuf[:, :, self.n:self.n + L] = v
            self.n += L
            self.keys, self.values = self.kbuf[:, :, :self.n], self.vbuf[:, :, :self.n]
            return self.keys, self.values

        def get_seq_length(self):
            return self.n

        def batch_select_indices(self, idx):  # drop finished rows / expand shared prompts
            if self.is_initialized:
                self.kbuf, self.vbuf = self.kbuf[idx], self.vbuf[idx]
                self.keys, self.values = self.kbuf[:, :, :self.n], self.vbuf[:, :, :self.n]

        def row(self, j, real):  # row j's keys and values at its real (attended) positions
            return self.kbuf[j, :, :self.n][:, real], self.vbuf[j, :, :self.n][:, real]

        def fill(self, rows, width):  # rows: per row (k, v) of shape (heads, n_i, dim), right-aligned
            k0, v0 = rows[0]
            self.kbuf = k0.new_zeros(len(rows), k0.shape[0], capacity, k0.shape[2])
            self.vbuf = v0.new_zeros(len(rows), v0.shape[0], capacity, v0.shape[2])   # may be narrower
            for i, (k, v) in enumerate(rows):
                self.kbuf[i, :, width - k.shape[1]:width], self.vbuf[i, :, width - k.shape[1]:width] = k, v
            self.device, self.is_initialized, self.n = k0.device, True, width
            self.keys, self.values = self.kbuf[:, :, :width], self.vbuf[:, :, :width]

    cache = DynamicCache(config=model.config)
    cache.layers = [Layer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    cache.reusable = all(isinstance(layer, Layer) for layer in cache.layers)
    return cache


@dataclass
class Past:
    """What sample_ids(keep=True) hands to its next call on the same rows (the next dialogue turn):
    per row, the keys and values of the first n[i] of its ids, at real positions only. RoPE (every
    student here) is applied before caching, so a key keeps its position wherever it sits in the
    buffer; the causal mask only needs the cached keys before the new ones, which they are."""
    kv: list   # per row: per layer (k, v), each (heads, n_i, dim)
    n: list    # per row: how many of its ids the cache holds

    def take(self, idx):
        return Past([self.kv[i] for i in idx], [self.n[i] for i in idx])

    @staticmethod
    def of(rows):
        """A Past from per-row (kv, n) pairs, in order."""
        rows = list(rows)
        return Past([kv for kv, _ in rows], [n for _, n in rows])


def _stash(cache, attn, js, into):
    """Copy rows js of the batch cache out (real positions only) into `into` (row -> (kv, n))."""
    for j, row in js:
        real = attn[j].bool()
        into[row] = ([layer.row(j, real) for layer in cache.layers], int(real.sum()))
def _pick(logits, temperature):
    """(next id, its log-prob) per row of logits (n, V): decode.pick, the one implementation of the
    sampling math (argmax at T = 0, else inverse CDF with one uniform number per row; the log-prob
    is the value token_logprobs computes, greedy ids scored at T = 1)."""
    return decode.pick(logits, temperature)


def _skinny_linear(self, x):
    """nn.Linear.forward for a few rows: y = (W @ x.T).T + b, the same sum as x @ W.T + b. On this
    CPU (PyTorch 2.13) a 1536 x 576 fp32 weight times 4 rows takes 0.39 ms as F.linear and 0.13 ms
    in this order: measured, not derived (the BLAS picks another kernel for each layout). 2-4x for
    2-8 rows, 1.1-1.2x at 16-32, mixed at 64 (bench/rollout.py's header gives both rates)."""
    rows = x.numel() // x.shape[-1]
    if not 1 < rows <= SKINNY_ROWS:   # one row: the same matrix-vector kernel either way
        return torch.nn.functional.linear(x, self.weight, self.bias)
    y = self.weight @ x.reshape(rows, x.shape[-1]).t()               # (out, rows)
    if self.bias is not None:
        y = y + self.bias[:, None]
    return y.t().contiguous().view(*x.shape[:-1], y.shape[0])


def _skinny_linears(fn):
    """Decorator for fn(model, ...): while fn runs, the model's large fp32 nn.Linear layers on
    the CPU use _skinny_linear (decoding feeds them a few rows at a time); restored afterwards.
    Training and scoring are untouched, and on a GPU nothing changes."""
    @functools.wraps(fn)
    def run(model, *args, **kwargs):
        swap = [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.device.type == "cpu"
                and m.weight.dtype == torch.float32 and m.weight.numel() >= SKINNY_MIN_WEIGHTS
                and "forward" not in vars(m)]   # a forward set on the module (a hook, an outer call) stays
        for m in swap:
            m.forward = types.MethodType(_skinny_linear, m)
        try:
            return fn(model, *args, **kwargs)
        finally:
            for m in swap:
                del m.forward
    return run


@torch.no_grad()
@_skinny_linears
def sample_ids(model, rows, max_new_tokens, temperature, eos, pad_id, vocab_limit=None, past=None,
               keep=False, static=None, compile=None):
    """The KV-cached batched sampler behind generate() and rollout_dialogues().

    rows: list of prompt id lists. Returns (completions, logprobs): per row the sampled ids,
    cut after the first EOS (kept), and each id's log-prob from _pick. What it does, and why:
      - identical prompts (the n copies of a rollout group) are prefilled once, then copied;
      - the prefill computes logits at the last position only (not B x T x V);
      - the cache is preallocated (_new_cache); a row that samples an EOS leaves the batch (P3),
        so finished rows cost nothing and the step ends when every row is done;
      - position ids come from the attention mask, as in token_logprobs (P4);
      - nothing but the temperature and the vocabulary limit shapes the distribution (P7, P12).
    keep=True also returns a Past: each row's cache, copied out as the row leaves the batch (None
    when the model has layers _new_cache does not own). Passed back as `past` with rows that
    extend the same rows (the next turn of a dialogue), only the ids it does not hold are
    prefilled: a dialogue's history is computed once, not once per turn.
    static=True: after the same prefill, decode.run's static-shape step decodes (finished rows masked,
    not removed; compiled when `compile`, None = decode.COMPILE for the device), keep/past included;
    where it declines (decode.usable) this loop runs. None: decode.STATIC for the device.
    The caller puts the model in eval() (P8)."""
    device = next(model.parameters()).device
    if past is None:
        unique = {}
        first = [unique.setdefault(tuple(r), len(unique)) for r in rows]
        ids, attn = left_pad([list(u) for u in unique], pad_id)
        cache = _new_cache(model, ids.shape[1] + max_new_tokens)
    else:   # the cached rows, right-aligned in one buffer, then the ids they do not hold yet
        if len(past.n) != len(rows) or any(len(r) <= n for r, n in zip(rows, past.n)):
            raise ValueError("sample_ids: one past per row, and each row must extend the ids its past holds")
        first = list(range(len(rows)))
        ids, new = left_pad([r[n:] for r, n in zip(rows, past.n)], pad_id)
        width = max(past.n)
        cache = _new_cache(model, width + ids.shape[1] + max_new_tokens)
        for li, layer in enumerate(cache.layers):
            layer.fill([kv[li] for kv in past.kv], width)
        held = torch.tensor([[0] * (width - n) + [1] * n for n in past.n], dtype=torch.long)
        attn = torch.cat([held, new], 1)
    ids, attn = ids.to(device), attn.to(device)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, cache=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]
    if len(first) != ids.shape[0]:   # copy each shared prompt's cache out to its rows
        expand = torch.tensor(first, device=device)
        cache.batch_select_indices(expand)
        logits, attn, pos = logits[expand], attn[expand], pos[expand]
    pos = pos[:, -1:]
    if decode.STATIC.get(device.type, False) if static is None else static:
        done = decode.run(model, cache, logits, attn, pos, max_new_tokens, temperature, eos, pad_id,
                          vocab_limit, keep=keep and cache.reusable, compile=compile)
        if done is not None:
            comps, logps, kept = done
            return (comps, logps) + ((Past.of(kept) if kept is not None else None,) if keep else ())
    eos = torch.tensor(list(eos), device=device)
    out_ids = torch.full((len(rows), max_new_tokens), pad_id, dtype=torch.long, device=device)
    out_lp = torch.zeros((len(rows), max_new_tokens), dtype=torch.float32, device=device)
    lengths = torch.zeros(len(rows), dtype=torch.long, device=device)
    alive = torch.arange(len(rows), device=device)          # which row each batch row is
    stashing, stash = keep and cache.reusable, {}
    for t in range(max_new_tokens):
        nxt, lp = _pick(logits[:, :vocab_limit], temperature)  # P12: padding rows of the head never drawn
        out_ids[alive, t], out_lp[alive, t], lengths[alive] = nxt, lp, t + 1
        going = ~torch.isin(nxt, eos)
        if t + 1 == max_new_tokens or not going.any():
            break
        if not going.all():
            if stashing:   # the rows that leave keep their cache for the next turn
                _stash(cache, attn, [(j, int(alive[j])) for j in (~going).nonzero().squeeze(1).tolist()],
                       stash)
            alive, nxt, attn, pos = alive[going], nxt[going], attn[going], pos[going]
            cache.batch_select_indices(going.nonzero().squeeze(1))
        attn = torch.cat([attn, attn.new_ones(len(alive), 1)], 1)
        pos = pos + 1
        logits = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=pos, cache=cache,
                       use_cache=True).logits[:, -1]
    if stashing:
        _stash(cache, attn, list(enumerate(alive.tolist())), stash)
    lengths, out_ids, out_lp = lengths.tolist(), out_ids.cpu(), out_lp.cpu()
    result = ([out_ids[i, :n].tolist() for i, n in enumerate(lengths)],
              [out_lp[i, :n].tolist() for i, n in enumerate(lengths)])
    if not keep:
        return result
    return result + (Past.of(stash[i] for i in range(len(rows))) if stashing else None,)


@torch.no_grad()
def generate(model, tokenizer, prompts, n=1, max_new_tokens=128, temperature=1.0, batch_size=64,
             past=None, keep=False):
    """Sample n completions of each prompt (sample_ids). temperature 0 = greedy.

    prompts: list of id lists. Rows of the result are grouped: [p0 x n, p1 x n, ...].
    keep / past: sample_ids' cache hand-over between the turns of a dialogue (n = 1 only).
    The model runs in eval() with the KV cache (P8); its previous mode is restored after."""
    if not prompts:
        raise ValueError("generate() got an empty list of prompts")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    rows = [p for p in prompts for _ in range(n)]
    eos, limit = eos_ids(tokenizer), vocab_limit_of(model, tokenizer)
    was_training = model.training
    model.eval()
    if past is not None and n != 1:
        raise ValueError("generate(past=...) continues rows one for one: n must be 1")
    completions, logprobs, kept = [], [], []
    try:
        for s in range(0, len(rows), batch_size):
            part = None if past is None else past.take(range(s, min(s + batch_size, len(rows))))
            c, lp, *rest = sample_ids(model, rows[s:s + batch_size], max_new_tokens, temperature, eos,
                                      tokenizer.pad_token_id, limit, past=part, keep=keep)
            completions += c
            logprobs += lp
            kept += rest
    finally:
        model.train(was_training)
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    finished = [bool(c) and c[-1] in eos for c in completions]
    joined = None if not keep or None in kept else Past.of(r for p in kept for r in zip(p.kv, p.n))
    return Generation(rows, completions, texts, finished, logprobs, joined)


@torch.no_grad()
def hf_generate(model, tokenizer, rows, max_new_tokens, temperature, **generate_kwargs):
    """The same sampling through transformers' model.generate: the reference sample_ids is
    tested and benchmarked against (bench/rollout.py passes cache_implementation="static").
    Returns the completions, cut after the first EOS."""
    cfg = generation_config(tokenizer, max_new_tokens, temperature)
    processors = None
    if vocab_limit_of(model, tokenizer):
        from transformers import LogitsProcessorList
        processors = LogitsProcessorList([_VocabLimit(len(tokenizer))])
    saved, was_training = model.generation_config, model.training
    model.generation_config = cfg  # nothing of the model's own sampling defaults leaks in (P7)
    model.eval()
    try:
        ids, attn = left_pad(rows, tokenizer.pad_token_id)
        device = next(model.parameters()).device
        out = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), generation_config=cfg,
                             logits_processor=processors, **generate_kwargs)
    finally:
        model.generation_config = saved
        model.train(was_training)
    new = out[:, ids.shape[1]:].cpu()
    mask = completion_mask(new, eos_ids(tokenizer))
    return [row[m.bool()].tolist() for row, m in zip(new, mask)]


def generate_text(model, tokenizer, conversations, max_new_tokens=256, batch_size=16, temperature=0.0):
    """Answers to chat conversations (lists of {"role","content"}), one string each; greedy by default."""
    if not conversations:
        raise ValueError("generate_text() got an empty list of conversations")
    prompts = [chat_ids(tokenizer, c) for c in conversations]
    return generate(model, tokenizer, prompts, 1, max_new_tokens, temperature, batch_size).texts

def end_of_turn_id(tokenizer):
    """The id that closes an assistant turn in the chat template (<|im_end|> for ChatML)."""
    vocab = tokenizer.get_vocab()
    for t in EOS_TOKEN_NAMES:
        if t in vocab and t in (tokenizer.chat_template or ""):
            return vocab[t]
    return tokenizer.eos_token_id


@dataclass
class Dialogues:
    ids: list          # N lists: the whole dialogue as token ids (prompt of turn 1 included)
    student_mask: list  # N lists, same lengths: 1 on every token the student sampled, else 0
    turns: list        # N lists of the student's decoded answers, one per turn
    dialogues: list    # N lists of user turns (dialogue i repeated n times, contiguous)
    logprobs: list = None  # N lists, same lengths: the sampler's log-prob on student tokens, else 0.0


@torch.no_grad()
def rollout_dialogues(model, tokenizer, dialogues, n=1, max_new_tokens=128, temperature=1.0,
                      batch_size=64, reuse_cache=None):
    """Roll out multi-turn dialogues on-policy: the student answers user turn 1, sees its own
    answer in the context, answers user turn 2, ... All dialogues advance together, one
    batched generate() per turn; a dialogue with fewer turns simply drops out.

    dialogues: list of lists of user-message strings, e.g. [[probe_1, probe_2, question]].
    Sampled ids are kept as sampled (P5); a turn cut by max_new_tokens, or ended by an EOS that
    is not the template's end-of-turn (<|endoftext|> in a ChatML template), is closed with a
    forced end-of-turn token that is not the student's (mask 0), so the next turn always follows
    the context the template renders. The template text between
    turns is tokenized separately (turn_glue_ids) and masked out too. With reuse_cache, each turn
    starts from the cache the last one left (sample_ids' Past): only the new user turn is prefilled.
    Default (None): on the CPU only, where prefilling the history again was half of a rollout; on a
    GPU that prefill is cheap, and the kept caches would add up to two batches of dialogue KV to
    the generation peak that memory.py budgets for.
    Example, one dialogue [p1, q], n = 1 (S = student token, . = not):
        ids  = [<p1 prompt> a1 a1 <eot> <glue + q> a2 a2 <eot>]
        mask = [ .  .  .    S  S   S     .  .  .   S  S   S  ]"""
    if not dialogues or any(not d for d in dialogues):
        raise ValueError("rollout_dialogues() needs a non-empty list of non-empty dialogues")
    rows = [list(d) for d in dialogues for _ in range(n)]
    ids = [chat_ids(tokenizer, [{"role": "user", "content": d[0]}]) for d in rows]
    mask = [[0] * len(x) for x in ids]
    logp = [[0.0] * len(x) for x in ids]
    turns = [[] for _ in rows]
    eot = end_of_turn_id(tokenizer)
    if reuse_cache is None:
        reuse_cache = next(model.parameters()).device.type == "cpu"
    past = [None] * len(rows)   # per row: its cache after the last turn
    for t in range(max(len(d) for d in rows)):
        active = [i for i, d in enumerate(rows) if t < len(d)]
        held = None if t == 0 or past[active[0]] is None else Past.of(past[i] for i in active)
        past = [None] * len(rows)   # the next turn's caches replace these (held keeps them for this turn)
        gen = generate(model, tokenizer, [ids[i] for i in active], 1, max_new_tokens, temperature, batch_size,
                       past=held, keep=reuse_cache and t + 1 < max(len(rows[i]) for i in active))
        for j, i in enumerate(active if gen.past is not None else []):
            if t + 1 < len(rows[i]):   # a dialogue that has ended keeps nothing
                past[i] = (gen.past.kv[j], gen.past.n[j])
        del held, gen.past
        for i, comp, lp, text in zip(active, gen.completions, gen.logprobs, gen.texts):
            ids[i] += comp
            mask[i] += [1] * len(comp)
            logp[i] += lp
            if not comp or comp[-1] != eot:   # out of budget, or ended by another EOS (<|endoftext|>):
                ids[i].append(eot)            # close the turn as the template does, not as the student
                mask[i].append(0)
                logp[i].append(0.0)
            turns[i].append(text)
            if t + 1 < len(rows[i]):
                history = [m for u, a in zip(rows[i][:t + 1], turns[i])
                           for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})]
                glue = turn_glue_ids(tokenizer, history, rows[i][t + 1])
                ids[i] += glue
                mask[i] += [0] * len(glue)
                logp[i] += [0.0] * len(glue)
    return Dialogues(ids, mask, turns, rows, logp)


def teacher_forced(tokenizer, turns):
    """(ids, mask) of a dialogue written out in full, [(user, assistant), ...], with mask 1 on
    the assistant tokens (their end-of-turn included): the input of SFT and of the auxiliary
    SFT loss on the teacher's probe answers."""
    ids, mask, history = [], [], []
    eot = end_of_turn_id(tokenizer)
    for j, (user, answer) in enumerate(turns):
        prefix = (chat_ids(tokenizer, [{"role": "user", "content": user}]) if j == 0 else
                  turn_glue_ids(tokenizer, history, user))
        target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eot]
        ids += prefix + target
        mask += [0] * len(prefix) + [1] * len(target)
        history += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return ids, mask


# -----------------------------------------------------------------------------
# training batches and log-probs

@dataclass
class Batch:
    ids: torch.Tensor        # (B, T) prompt + completion, right-padded
    attn: torch.Tensor       # (B, T) 1 on real tokens
    loss_mask: torch.Tensor  # (B, T) 1 on the tokens a loss is taken on (the completion)


def pack(prompts, completions, pad_id, completion_masks=None):
    """Right-pad prompt + completion rows into one training batch.

    completion_masks (optional, one list per row) marks which completion tokens the loss
    covers (multi-turn dialogues interleave student and template tokens); default: all."""
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions)]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), T), dtype=torch.long)
    loss_mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        L = len(p) + len(c)
        ids[i, :L] = torch.tensor(seqs[i], dtype=torch.long)
        attn[i, :L] = 1
        cm = completion_masks[i] if completion_masks is not None else [1] * len(c)
        loss_mask[i, len(p):L] = torch.tensor(cm, dtype=torch.long)
    return Batch(ids, attn, loss_mask)


def token_logprobs(model, ids, attn, loss_mask=None, temperature=1.0, vocab_limit=None,
                   chunk=LOGPROB_CHUNK, share_prefix=None):
    """log pi(ids[t] | ids[<t]) for every position t, at the sampling temperature (P5).

    ids, attn, loss_mask: (B, T). Returns (B, T) fp32; position 0 and every position where
    loss_mask is 0 hold 0.0. Only the positions a loss needs go through the lm_head, in
    chunks of `chunk` rows, log-softmax in fp32 (P9). Position ids come from the attention
    mask, so left or right padding gives the same values (P4). Inputs are not modified (P15).

    temperature: a number, or a (B,) tensor of one per row (joint_logprobs); 0 scores at T = 1.
    share_prefix: rows that agree on every id before their first scored one (the G rollouts of a
    group) run that prompt through the model once (_shared_prefix_hidden); same values, less work.
    None: SHARE_PREFIX. Pass False where one pass through the weights matters (fused optimizer).

    Tiny example: ids = [[a, b, c]], loss_mask = [[0, 1, 1]]
        -> [[0, log p(b | a), log p(c | a b)]]"""
    if loss_mask is None:
        loss_mask = attn
    want = loss_mask[:, 1:].bool()                     # predict token t from position t-1
    if torch.is_tensor(temperature):                   # per row -> per scored token, (N, 1)
        t = temperature.float().to(ids.device).masked_fill(temperature.to(ids.device) == 0, 1.0)
        temperature = t[:, None].expand(-1, want.shape[1])[want][:, None]
    else:
        temperature = 1.0 if temperature == 0 else temperature  # greedy rollouts score at T = 1
    # sharded by FSDP2 (dist.py): only a call of the root module gathers the embedding (scored_hidden)
    share = (SHARE_PREFIX if share_prefix is None else share_prefix) and not dist.is_sharded(model)
    shared = _shared_prefix_hidden(model, ids, attn, want) if share else None
    h, targets = shared if shared is not None else scored_hidden(model, ids, attn, want)   # (N, H), (N,)
    head = model.get_output_embeddings()
    out = []
    for s in range(0, h.shape[0], chunk):
        T = temperature[s:s + chunk] if torch.is_tensor(temperature) else temperature
        logits = head(h[s:s + chunk]).float() / T                     # (n, V) fp32
        if vocab_limit is not None and vocab_limit < logits.shape[-1]:
            logits[:, vocab_limit:] = float("-inf")                   # P12
        out.append(logits.log_softmax(-1).gather(-1, targets[s:s + chunk, None]).squeeze(-1))
    flat = torch.cat(out) if out else h.new_zeros(0, dtype=torch.float32)
    result = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
    result[:, 1:] = result[:, 1:].masked_scatter(want, flat)
    return result


def scored_hidden(model, ids, attn, want):
    """The final hidden states that predict the scored tokens, (N, H), and those tokens, (N,), in the
    order of ids[:, 1:][want]: position t is predicted from position t - 1, so row n of the result
    is hidden[:, :-1][want][n]. Position ids come from the attention mask (left or right padding
    alike, P4). Only the decoder runs: the lm_head is left to the caller, for just these rows.
    ids, attn: (B, T); want: (B, T - 1) bool, which tokens ids[:, 1:] are scored.
    Example: ids [[a, b, c]], want [[False, True]] -> the hidden state at b, which predicts c; [c]"""
    position_ids = (attn.long().cumsum(-1) - 1).clamp(min=0)
    if dist.is_sharded(model):   # through the root module, whose hooks gather the embedding and head
        hidden = model(input_ids=ids, attention_mask=attn, position_ids=position_ids, logits_to_keep=1,
                       output_hidden_states=True).hidden_states[-1]  # (B, T, H), after the final norm
    else:
        hidden = model.get_decoder()(input_ids=ids, attention_mask=attn,
                                     position_ids=position_ids).last_hidden_state  # (B, T, H)
    return hidden[:, :-1][want], ids[:, 1:][want]


def _shared_prefix_hidden(model, ids, attn, want):
    """The hidden states token_logprobs needs, (N, H), and their targets, (N,), in the same order
    as ids[:, 1:][want], computing each distinct prompt once. None where nothing is shared, or
    where two passes would not equal one: a batch not right-padded; gradient checkpointing while
    training (transformers then drops the cache: pass 2 would not see the prompt); a sliding-window
    model (Gemma 3) whose prompts differ in length or whose rows outgrow the window (the window
    would count padded cache slots, not positions). The caller then runs the plain forward.

    A row's prompt is every id before its first scored one. The G rollouts of a group share it:
    in a GRPO batch of SmolLM2 it is 77% of each row, so scoring it once per group and handing
    its keys and values (with their gradients) to every row's completion cuts the forward and
    backward about 2x. Row i, prompt p_i of length s_i, completion c_i:
        pass 1: each distinct prompt, right-padded, with a KV cache -> hidden (U, P, H)
        pass 2: each row's c_i after its prompt's cache (attention mask [prompt | c_i], positions
                s_i, s_i + 1, ...) -> hidden (B, S, H)
    The hidden state that predicts c_i[0] is the prompt's last one; c_i[j] is predicted by the
    completion's position j - 1. Tiny example: rows [a b | c d] and [a b | e] (prompt a b) ->
    pass 1 runs [a b] once; pass 2 runs [c d] and [e] after it; c and e are scored from b's state."""
    B, T = ids.shape
    lens = attn.long().sum(-1)
    right_padded = torch.equal(attn.bool(), torch.arange(T, device=ids.device)[None] < lens[:, None])
    if B < 2 or not right_padded or not want.any(-1).all() or (want & ~attn[:, 1:].bool()).any():
        return None
    first = want.int().argmax(-1) + 1                               # (B,) first scored position
    prompts = {}
    g = [prompts.setdefault(tuple(ids[i, :first[i]].tolist()), len(prompts)) for i in range(B)]
    if len(prompts) == B or (torch.is_grad_enabled() and model.training and
                             getattr(model, "is_activation_checkpointing", False)):
        return None
    cfg = model.config.get_text_config()
    window = (getattr(cfg, "sliding_window", None)
              if "sliding_attention" in (getattr(cfg, "layer_types", None) or [])
              or getattr(cfg, "use_sliding_window", True) else None)
    if window and (len({len(p) for p in prompts}) > 1 or int(lens.max()) > window):
        return None
    from transformers import DynamicCache
    decoder, dev = model.get_decoder(), ids.device
    # the inputs: each distinct prompt once (right-padded: no row is all padding, so no NaN in
    # backward), and each row's completion
    plen = torch.tensor([len(p) for p in prompts], device=dev)
    pattn = (torch.arange(int(plen.max()), device=dev)[None] < plen[:, None]).long()   # (U, P)
    pids = torch.zeros_like(pattn)
    for u, p in enumerate(prompts):
        pids[u, :len(p)] = torch.tensor(p, device=dev)
    S = int((lens - first).max())
    cols = first[:, None] + torch.arange(S, device=dev)[None]       # (B, S) positions in the row
    sattn = (cols < lens[:, None]).long()
    sids = ids.gather(1, cols.clamp(max=T - 1)) * sattn             # (B, S)
    # one embedding lookup for both passes: one dense embedding gradient (49k x 576 for SmolLM2), not two
    emb = model.get_input_embeddings()(torch.cat([pids.flatten(), sids.flatten()]))
    pemb, semb = emb[:pids.numel()].view(*pids.shape, -1), emb[pids.numel():].view(*sids.shape, -1)
    # pass 1: the prompts, keeping their keys and values
    cache = DynamicCache(config=model.config)
    hp = decoder(inputs_embeds=pemb, attention_mask=pattn, position_ids=(pattn.cumsum(-1) - 1).clamp(min=0),
                 cache=cache, use_cache=True).last_hidden_state                         # (U, P, H)
    # pass 2: every row's completion after its prompt's keys and values
    g = torch.tensor(g, device=dev)
    cache.batch_select_indices(g)                                   # prompt u's cache -> its rows
    hs = decoder(inputs_embeds=semb, attention_mask=torch.cat([pattn[g], sattn], 1), position_ids=cols,
                 cache=cache, use_cache=True).last_hidden_state                         # (B, S, H)
    hpred = torch.cat([hp[g, plen[g] - 1][:, None], hs[:, :-1]], 1)  # column j predicts cols[:, j]
    scored = want.gather(1, (cols - 1).clamp(max=T - 2)) & sattn.bool()
    return hpred[scored], sids[scored]


def joint_logprobs(model, parts, vocab_limit=None, share_prefix=None):
    """token_logprobs of several batches in ONE forward pass: parts = [(ids, attn, loss_mask,
    temperature), ...], each (B_i, T_i) -> [(B_i, T_i) log-probs, ...].

    Why one pass: two forwards through the same weights make two branches of one graph, and
    backward runs the later branch down to the embedding before the earlier one starts, holding
    each weight's gradient from it until the other branch reaches that weight, so an optimizer
    fused into backward frees nothing until then. On gemma-7b the fused scheme peaked 14.6 GB
    above the memory model, and this was the cause the trace pointed to (bench/results/gpu/).
    Rows are right-padded to the widest part (P4: padding is masked). share_prefix=True runs
    shared prompts in a pass of their own first (token_logprobs): pass False where one pass matters."""
    width = max(p[0].shape[1] for p in parts)
    pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]))
    ids, attn, mask = (torch.cat([pad(p[j]) for p in parts]) for j in range(3))
    temps = torch.cat([torch.full((p[0].shape[0],), float(p[3])) for p in parts])
    lp = token_logprobs(model, ids, attn, mask, temps, vocab_limit, share_prefix=share_prefix)
    rows = lp.split([p[0].shape[0] for p in parts])
    return [r[:, :p[0].shape[1]] for r, p in zip(rows, parts)]


def vocab_limit_of(model, tokenizer):
    """len(tokenizer) when the model's head is wider than the vocabulary (Qwen), else None."""
    head = model.get_output_embeddings().weight.shape[0]
    return len(tokenizer) if head > len(tokenizer) else None


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Chat once with a student.")
    ap.add_argument("--student", default="smollm2-135m")
    ap.add_argument("--prompt", default="What is 12 + 30? End with 'The answer is N.'")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    args = ap.parse_args()
    model, tok = load_student(args.student)
    print(generate_text(model, tok, [[{"role": "user", "content": args.prompt}]],
                        args.max_new_tokens, temperature=args.temperature)[0])
