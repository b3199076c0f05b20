"""
The static-shape decode step (plumbing: a reader of the method can skip this file). sample.sample_ids
prefills as always, then hands its cache here when the flag is on; every decode step after that has
the same shapes, so torch.compile can compile it once (on CUDA: capture it as a CUDA graph and
replay it), and nothing in the token loop waits for the device but one check every STOP_EVERY tokens.

    from sample import sample_ids
    comps, logps = sample_ids(model, rows, 128, 1.0, eos, pad_id, static=True)    # compiled where it wins
    import decode; decode.STATS                       # {'compiles': 1, 'compile_s': 41.2, ...}
    python bench/rollout.py --students smollm2-135m --backends lean static static-compile --threads 1

What is static, and why:
  - the KV cache: per layer one (Bb, heads, S, dim) buffer, Bb = the batch and S = prompt + budget,
    each rounded up to a power of two, so a few shapes cover every turn and step (one compile each);
  - the mask: the prompt's padding is known after the prefill and every later slot is real, so a
    step's mask is `valid & (slot index <= current slot)`, computed in the step from two fixed tensors;
  - finished rows stay in the batch: their next token is forced to pad, with log-prob 0, and not
    counted (the lean sampler removes them, reindexing the whole cache each time);
  - sampling is on the device: the uniforms of every step are drawn once before the loop (the
    same numbers eager and compiled), the inverse CDF of pick() runs in the step.
What it does not do: sliding-window layers longer than S (Gemma 3 beyond its window) or caches
sample.py's _new_cache does not own: run() returns None and the lean loop goes on from the prefill.

Measured (bench/results/rollout-static-2026-12-07.md: 2-core CPU, 1 thread, fp32, loaded machine,
ms per decode step, lean sampler -> static compiled): micro 4.3 -> 0.6 at batch 1, 6.2 -> 1.2 at 4,
11.4 -> 1.5 at 16, 17.8 -> 12.1 at 64, compile 31-38 s a shape; SmolLM2-135M 61 -> 58 at batch 1,
219 -> 189 at 4, 308 -> 464 at 16, 771 -> 1519 at 64 (eager static: 67, 236, 448, 881), compile
112-154 s a shape. So on the CPU both flags default off: SmolLM2 does not win, and micro's gain pays
for its compiles only in long runs (train.py --decode compiled there). On CUDA they are on:
the win there is CUDA graphs and no host sync (bench/gpu_check.py --decode measures it).
"""

import functools
import time

import torch

# -----------------------------------------------------------------------------
# defaults

STATIC = {"cpu": False, "cuda": True}     # sample_ids(static=None) takes the static path on these devices
COMPILE = {"cpu": False, "cuda": True}    # ... and compiles its step (bench/results/rollout-static-*.md)
COMPILE_MODE = {"cuda": "reduce-overhead"}  # CUDA graphs; inductor's default elsewhere
STOP_EVERY = 8          # K: tokens between the host's checks that every row has finished
MIN_SLOTS = 64          # the smallest cache length bucket
STATS = {"compiles": 0, "compile_s": 0.0, "calls": 0}   # compile time paid in this process (first calls)
TRACE = None            # a list: run() appends time.perf_counter() before every step (bench/rollout.py)

# train.py --decode: (STATIC, COMPILE) of each mode
MODES = {"lean": (False, False), "static": (True, False), "compiled": (True, True)}
DEFAULTS = (dict(STATIC), dict(COMPILE))   # what --decode auto restores


def set_mode(device_type, mode):
    """train.py --decode: 'auto' the measured defaults above (DEFAULTS); 'lean' (the sampler that
    removes finished rows), 'static' (this step, eager) or 'compiled' (this step, torch.compile) for
    `device_type` in this process."""
    if mode == "auto":
        STATIC[device_type] = DEFAULTS[0].get(device_type, False)
        COMPILE[device_type] = DEFAULTS[1].get(device_type, False)
    else:
        STATIC[device_type], COMPILE[device_type] = MODES[mode]

# -----------------------------------------------------------------------------
# sampling: the one implementation (sample._pick calls it)


def pick(logits, temperature, u=None):
    """(next id, its log-prob) per row of logits (n, V): argmax at T = 0, else one draw from
    softmax(logits / T) by inverse CDF, one uniform number per row: u (n,) in [0, 1), drawn here
    when None. (torch.multinomial draws one exponential per vocabulary entry: 30 ms a step for 16
    rows of SmolLM2's 49k on this CPU.) The log-prob is z[id] - logsumexp(z) with z = logits / T in
    fp32, the value sample.token_logprobs computes (greedy ids are scored at T = 1, as it does)."""
    z = logits.float() if temperature in (0, 1) else logits.float() / temperature
    if temperature == 0:
        ids, norm = z.argmax(-1), torch.logsumexp(z, -1)
    else:
        top = z.amax(-1, keepdim=True)
        # fp64: an fp32 sum of 49k terms blurs the tail
        cdf = (z - top).exp_().cumsum(-1, dtype=torch.float64)
        u = (torch.rand(cdf.shape[0], 1, dtype=cdf.dtype, device=cdf.device) if u is None
             else u.to(cdf.dtype)[:, None])
        ids = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)
        norm = top.squeeze(1) + cdf[:, -1].log().float()
    return ids, z.gather(-1, ids[:, None]).squeeze(1) - norm

# -----------------------------------------------------------------------------
# the cache: fixed buffers, written at one slot per step


class Slots:
    """What the model's attention layers see as its cache: update() writes the step's keys and
    values at `slot` (a (1,) tensor, so the compiled step never specializes on it) and returns
    the whole buffers; the mask hides what is not yet written. keys, values: per layer (Bb, H, S, D)."""

    def __init__(self, keys, values, slot):
        self.keys, self.values, self.slot = keys, values, slot

    def update(self, k, v, layer_idx, *args, **kwargs):
        self.keys[layer_idx].index_copy_(2, self.slot, k)
        self.values[layer_idx].index_copy_(2, self.slot, v)
        return self.keys[layer_idx], self.values[layer_idx]


def bucket(n, least=1):
    """The next power of two >= max(n, least): 5 -> 8, 64 -> 64."""
    return max(least, 1 << max(n - 1, 0).bit_length())


def _sliding(model):
    """The smallest sliding window of the model's layers (None: every layer attends to everything)."""
    cfg = model.config.get_text_config()
    if "sliding_attention" not in (getattr(cfg, "layer_types", None) or []):
        return None
    return getattr(cfg, "sliding_window", None)


def _step(model, ids, pos, slot, valid, index, u, keys, values, temperature, vocab_limit, sliding):
    """One decode step, the part that is compiled: feed ids (Bb, 1) at positions pos (Bb, 1) into
    cache slot `slot`, then pick each row's next id. Returns (ids (Bb,), log-probs (Bb,))."""
    mask = valid & (index <= slot)                                         # (Bb, S)
    bias = torch.zeros(mask.shape, dtype=keys[0].dtype, device=mask.device)
    bias = bias.masked_fill(~mask, torch.finfo(bias.dtype).min)[:, None, None, :]   # (Bb, 1, 1, S)
    attn = {"full_attention": bias, "sliding_attention": bias} if sliding else bias
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, cache=Slots(keys, values, slot),
                   use_cache=True).logits[:, -1]
    return pick(logits[:, :vocab_limit], temperature, u)

# -----------------------------------------------------------------------------
# compiled steps, one per model and shape, kept for the life of the process

_COMPILED = {}


def _compiled(model, key, device):
    """torch.compile'd _step for this model and shape key (compiled on its first call)."""
    fn = _COMPILED.get(key)
    if fn is None:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)  # one per shape
        fn = torch.compile(functools.partial(_step, model), mode=COMPILE_MODE.get(device.type), dynamic=False)
        fn.fresh = True
        _COMPILED[key] = fn
    return fn


def release():
    """Forget the compiled steps (the next call of each shape compiles again)."""
    _COMPILED.clear()

# -----------------------------------------------------------------------------
# the token loop


def usable(cache, width, max_new_tokens, model):
    """Can run() take over this prefilled cache? Only layers that hold every prefilled position
    (sample._new_cache's own, or a sliding window wider than the whole rollout)."""
    window = _sliding(model)
    if window is not None and width + max_new_tokens >= window - 1:
        return False
    return all(getattr(layer, "keys", None) is not None and layer.keys.shape[-2] == width
               for layer in cache.layers)


@torch.no_grad()
def run(model, cache, logits, attn, pos, max_new_tokens, temperature, eos, pad_id, vocab_limit=None,
        keep=False, compile=None):
    """Decode from a prefilled cache with static shapes; None where it cannot (usable()).

    cache: the prefill's cache, every layer's .keys / .values (B, H, W, D); logits (B, V) at the
    last prompt position; attn (B, W) 1 on real ids; pos (B, 1) the last prompt position of each row.
    Returns (completions, logprobs, kept): per row the sampled ids cut after the first EOS (kept),
    their log-probs, and with keep=True per row (per layer (k, v) at real positions, n) for
    sample.Past, else None. compile: None = COMPILE for the device."""
    B, W = attn.shape
    if not usable(cache, W, max_new_tokens, model):
        return None
    device = logits.device
    compile = COMPILE.get(device.type, False) if compile is None else compile
    Bb, S = bucket(B), bucket(W + max_new_tokens, MIN_SLOTS)
    # the buffers: the prefill's keys and values in slots [0, W), rows B..Bb padding (never read)
    keys, values = [], []
    for layer in cache.layers:
        k, v = layer.keys, layer.values
        keys.append(k.new_zeros(Bb, k.shape[1], S, k.shape[3]))
        values.append(v.new_zeros(Bb, v.shape[1], S, v.shape[3]))
        keys[-1][:B, :, :W], values[-1][:B, :, :W] = k, v
        if compile:
            torch._dynamo.mark_static_address(keys[-1])    # mutated in place: no copy into the graph
            torch._dynamo.mark_static_address(values[-1])
    valid = torch.ones(Bb, S, dtype=torch.bool, device=device)
    valid[:B, :W] = attn.bool()                         # the prompts' left padding; padding rows see all
    index = torch.arange(S, device=device)
    slot = torch.full((1,), W - 1, dtype=torch.long, device=device)   # advanced before each step, as pos
    pos = torch.cat([pos, pos.new_zeros(Bb - B, 1)]).clone()
    # every step's uniforms at once: the same numbers eager and compiled, no RNG in the graph
    u = torch.rand(max_new_tokens, Bb, dtype=torch.float64, device=device) if temperature else None
    eos = torch.tensor(list(eos), dtype=torch.long, device=device)
    out_ids = torch.full((Bb, max_new_tokens), pad_id, dtype=torch.long, device=device)
    out_lp = torch.zeros((Bb, max_new_tokens), dtype=torch.float32, device=device)
    lengths = torch.zeros(Bb, dtype=torch.long, device=device)
    done = torch.zeros(Bb, dtype=torch.bool, device=device)
    done[B:] = True
    step = functools.partial(_step, model)
    if compile:
        step = _compiled(model, (id(model), Bb, S, float(temperature), vocab_limit, str(device)), device)
    STATS["calls"] += 1
    first = logits.new_zeros(Bb, logits.shape[1])
    first[:B] = logits
    nxt, lp = pick(first[:, :vocab_limit], temperature, None if u is None else u[0])
    for t in range(max_new_tokens):
        if TRACE is not None:
            TRACE.append(time.perf_counter())
        if t:
            if device.type == "cuda" and compile:
                torch.compiler.cudagraph_mark_step_begin()
            t0 = time.perf_counter() if getattr(step, "fresh", False) else None
            nxt, lp = step(nxt[:, None], pos, slot, valid, index, None if u is None else u[t], keys, values,
                           temperature, vocab_limit, _sliding(model))
            if t0 is not None:   # the first call of a new shape: compile (and one step)
                step.fresh = False
                STATS["compiles"] += 1
                STATS["compile_s"] += time.perf_counter() - t0
        nxt = nxt.masked_fill(done, pad_id)              # finished rows: pad, log-prob 0, not counted
        out_ids[:, t], out_lp[:, t] = nxt, lp.masked_fill(done, 0.0)
        lengths += ~done
        done = done | torch.isin(nxt, eos)
        if t + 1 == max_new_tokens or ((t + 1) % STOP_EVERY == 0 and bool(done.all())):   # the one sync
            break
        pos = pos + 1
        slot = slot + 1
    lengths, out_ids, out_lp = lengths[:B].tolist(), out_ids[:B].cpu(), out_lp[:B].cpu()
    comps = [out_ids[i, :n].tolist() for i, n in enumerate(lengths)]
    logps = [out_lp[i, :n].tolist() for i, n in enumerate(lengths)]
    kept = None
    if keep:   # row i holds its real prompt slots and every sampled id it fed (all but its last)
        kept = []
        for i, n in enumerate(lengths):
            real = torch.cat([attn[i].bool(), torch.ones(n - 1, dtype=torch.bool, device=device)])
            kv = [(k[i, :, :W + n - 1][:, real], v[i, :, :W + n - 1][:, real]) for k, v in zip(keys, values)]
            kept.append((kv, int(real.sum())))
    return comps, logps, kept
