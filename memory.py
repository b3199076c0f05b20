"""
The memory model of one training step: bytes of weights, optimizer state, reference model,
rollout KV cache and training activations, for an architecture (models.architecture) and a
Setup. train.py's dry run and presets.py use it to plan a run and to refuse one that will not
fit; bench/memory_table.py tabulates it for the 7B students and validates it against measured peaks.

    import memory, models
    memory.estimate(models.architecture("gemma-7b"), memory.Setup())["_peak"] / 1e9   # GB

What one ExGRPO step (exgrpo.exgrpo_step) holds on the GPU:
  persistent   the student's weights, its optimizer state (Adam m, v; fp32 master weights in
               the MasterWeightAdamW scheme), the frozen reference model pi_ref
  generation   the KV cache of the batched multi-turn rollouts (all 2 x G dialogues of one
               question together: Scenario A and B), plus one layer's prefill temporaries
  training     per micro-batch: the activations autograd saves (or, with gradient
               checkpointing, each layer's input plus one layer recomputed in backward), the
               fp32 log-softmax of every loss position (sample.token_logprobs saves one
               (n, V) fp32 block per chunk for backward), and the gradients (all of them
               until the step, or only the tensor being updated when the step is fused
               into backward; a tied embedding's gradient lives through the whole backward)
  peak = persistent + max(generation, training); reference log-probs are computed under
  no_grad, once per rollout batch, and never add more than a training micro-batch.

What grows with Q questions a step (presets.questions_that_fit sizes Q with it), per process:
  generation   nothing while rollouts are generated gen_batch rows at a time (gen_batch = 0,
               all 2 G Q rows at once: the KV cache grows by 2 G T kv_per_token a question)
  training     the aux batch: one teacher-forced dialogue per question, all on micro-batch 0
               (exgrpo.policy_update), budgeted like a rollout (T tokens, all loss positions);
               with checkpointing each adds about
                   T (L H wb + 4 H + 12 + 2 H wb + T wb + 4 V) bytes
               its layer inputs, the final norm's, its padding mask and its fp32 logits.
               Example, gemma-7b (L 28, H 3072, V 256000, bf16) at the preset's T = 1440:
               1440 x (172,032 + 24,588 + 2,880 + 1,024,000) = 1440 x 1,223,500 = 1.76 GB
  held         the reference and old log-probs of all 2 G Q rollouts, fp32, for the whole
               update: 2 x 2 G Q T x 4 bytes (Q = 32: 2 x 512 x 1440 x 4 = 5.9 MB)
  (host)       the packed rollouts (ids, mask, loss mask: int64 on the CPU, one micro-batch
               moved at a time): not GPU memory
So with gen_batch > 0 and aux off (--no-aux, --no-probes) the peak grows only by `held`.

Every coefficient below is read off the code (HF Llama/Gemma/Qwen2 layers under torch
autograd, SDPA attention with a padding mask, so k and v are repeated to all heads) and checked
on CPU against measured peaks: python bench/memory_table.py --validate.
"""

from dataclasses import dataclass, replace

from optim import SR_CHUNK
from sample import LOGPROB_CHUNK

# -----------------------------------------------------------------------------
# defaults

GPU_BYTES = 80e9          # "80 GB" (an H100 80GB reports 85.0e9 bytes: the difference is slack)
GPU_RESERVE = 1.5e9       # CUDA context, cuBLAS workspaces, allocator slack

# Setup()'s defaults, the 7B step bench/memory_table.py tabulates: G = 8 per scenario, 1,024 tokens
# per dialogue, one question per step
G, DIALOGUE_TOKENS, QUESTIONS, PROMPT_TOKENS = 8, 1024, 1, 128


def param_count(c):
    """Parameters of an architecture dict (models.architecture); a tied head counts once."""
    H, d = c["hidden"], c["head_dim"]
    q, kv = c["heads"] * d, c["kv_heads"] * d
    attn = H * q + 2 * H * kv + q * H + ((q + 2 * kv) if c["qkv_bias"] else 0)
    layer = attn + 3 * H * c["intermediate"] + 2 * H
    return c["vocab"] * H * (1 if c["tied"] else 2) + c["layers"] * layer + H

# -----------------------------------------------------------------------------
# the model


@dataclass
class Setup:
    """One configuration of the training step."""
    dtype_bytes: int = 2          # 2 = bf16 weights (GPU default), 4 = fp32 (CPU default)
    optimizer: str = "bf16"       # "master": optim.MasterWeightAdamW; "bf16": optim.BF16AdamW;
                                  # "fsdp": torch AdamW over FSDP2 shards (dist.py), `shards` processes
    shards: int = 1               # processes (GPUs) the fsdp scheme shards weights, grads, moments over
    fused: bool = True            # optimizer step inside backward (BF16AdamW(fused=True))
    ckpt: bool = True             # gradient checkpointing (activation_checkpointing_enable)
    ref: bool = True              # a frozen reference model (beta > 0)
    micro_seqs: int = 2           # sequences in the largest micro-batch (exgrpo.policy_update: the aux
                                  # teacher dialogue rides on the first micro-batch)
    seq_len: int = DIALOGUE_TOKENS
    loss_frac: float = 1.0        # share of a sequence's tokens in a loss mask (upper bound 1)
    gen_rows: int = 2 * G * QUESTIONS
    gen_batch: int = 0            # rows per generate() call (rollout_dialogues' batch_size); 0 = all
    gen_prompt: int = DIALOGUE_TOKENS - 128   # the last turn's prefill (the whole dialogue so far)
    gen_len: int = DIALOGUE_TOKENS


def layer_saved_bytes(c, wb):
    """Bytes autograd saves per token in one decoder layer (no checkpointing):
    per RMSNorm: its fp32 input, rsqrt, and the normed output twice in the model dtype (the
    weight multiply and the next Linear; Gemma multiplies in fp32 first: + 4H); attention:
    q, k, v (repeated to all heads), the output, fp32 log-sum-exp per head; MLP: gate,
    act(gate), up, act * up (4 I)."""
    H, I, q = c["hidden"], c["intermediate"], c["heads"] * c["head_dim"]
    norm = 4 * H + 4 + 2 * H * wb + (4 * H if c["arch"] == "gemma" else 0)
    return 2 * norm + 4 * q * wb + 4 * c["heads"] + 4 * I * wb


def estimate(c, s):
    """Bytes of each part and the two phase peaks, for config c and Setup s."""
    P, V, H, L = param_count(c), c["vocab"], c["hidden"], c["layers"]
    wb = s.dtype_bytes
    largest = V * H                                     # the embedding is the largest tensor
    if s.optimizer == "fsdp":
        return estimate_fsdp(c, s)
    out = {"parameters": P * wb, "reference model": P * wb if s.ref else 0}
    if s.optimizer == "master":                         # fp32 m, v; fp32 master copy + its grads
        out["optimizer state (m, v)"] = 8 * P
        out["master weights"] = 4 * P if wb != 4 else 0
    else:
        out["optimizer state (m, v)"] = 2 * P * wb
        out["master weights"] = 0
    persistent = sum(out.values())

    # --- generation: KV cache of the rows generated together, one layer's prefill temporaries,
    # sampling over V (left padding: every row is as long as the longest)
    rows = min(s.gen_batch or s.gen_rows, s.gen_rows)
    kv_per_token = 2 * L * c["kv_heads"] * c["head_dim"] * wb
    out["KV cache (generation)"] = rows * s.gen_len * kv_per_token
    # one layer's prefill under no_grad: the MLP's act(gate), up and their product (3 I) or attention's
    # q, k, v, out (4 heads x head_dim), whichever is larger, beside the residual stream (2 H)
    width = max(3 * c["intermediate"], 4 * c["heads"] * c["head_dim"]) + 2 * H
    prefill = rows * s.gen_prompt * width * wb
    prefill += rows * s.gen_prompt ** 2 * wb            # the (B, 1, T, T) padding mask
    gen = out["KV cache (generation)"] + prefill + 4 * rows * V * 4

    # --- training: one micro-batch
    tokens = s.micro_seqs * s.seq_len
    n_loss = int(tokens * s.loss_frac)
    chunk = LOGPROB_CHUNK
    # final norm, ids, mask
    fixed = tokens * (4 * H + 4 + 2 * H * wb + 8) + s.micro_seqs * s.seq_len ** 2 * wb
    layer = tokens * layer_saved_bytes(c, wb)
    # sample.token_logprobs saves each chunk's fp32 log_softmax output (n, V) for backward; the
    # backward of chunk i (they run last to first) holds the saved blocks up to i plus two more of
    # its size (the gather's grad and log_softmax's grad); the forward peaks the same way (the
    # previous chunk's logits, the new logits and their / T)
    sizes = [min(chunk, n_loss - s) for s in range(0, n_loss, chunk)] or [0]
    logits_peak = max(sum(sizes[:i + 1]) + 2 * n for i, n in enumerate(sizes)) * V * 4
    logits_saved = n_loss * V * 4
    logits_bwd = logits_peak - logits_saved
    head_grad = V * H * wb                              # lm_head / tied embedding gradient
    if s.ckpt:
        acts = L * tokens * H * wb + fixed              # each layer's input
        recompute = layer + tokens * (2 * c["intermediate"] + 2 * H) * wb   # + its backward temporaries
    else:
        acts = L * layer + fixed
        recompute = 0
    grads_all = P * wb
    if s.optimizer == "master":
        step = grads_all + P * 4 * (wb != 4) + largest * 4     # grads, fp32 master grads, one temp
    elif s.fused:
        step = 7 * 4 * min(SR_CHUNK, largest) + (head_grad if c["tied"] else 0)
    else:
        step = grads_all + 7 * 4 * min(SR_CHUNK, largest)
    # start of backward: everything saved + the logit temporaries + the head's gradient; late in
    # backward: the gradients (unfused: nearly all; fused: a tied embedding's and one MLP matrix)
    # and the last layer's activations (recomputed, with checkpointing); at the step: see above
    start = acts + logits_saved + logits_bwd + head_grad
    grads_late = grads_all if not s.fused else (head_grad if c["tied"] else 0) + H * c["intermediate"] * wb
    late = (acts + recompute if s.ckpt else layer + fixed) + grads_late
    # the reference and old log-probs of every rollout of the step, fp32, held through the update
    # (policy_update: old only when frozen; counted always, an upper bound)
    held = ((1 if s.ref else 0) + 1) * s.gen_rows * s.seq_len * 4
    train = max(start, late, step) + held
    out["held log-probs (training)"] = held
    out["activations + logits (training)"] = acts + logits_saved + logits_bwd
    out["gradients"] = 0 if s.fused else grads_all
    out["_persistent"], out["_generation"], out["_training"] = persistent, gen, train
    out["_peak"] = persistent + max(gen, train)
    return out


def estimate_fsdp(c, s):
    """The fsdp scheme per GPU (dist.py): fp32 weights, fp32 gradients and AdamW moments, each a
    1/N shard; the reference a 1/N fp32 shard; compute in the model dtype (bf16 on GPUs).
    Generation gathers the whole weights once (dist.gathered: P x model dtype on every GPU);
    training gathers two decoder layers at a time (the one running, the one prefetched) and keeps
    the root's embedding and head gathered. Activations, logits and the KV cache as in estimate().
    Example: gemma-7b (8.54e9 parameters) on 8 GPUs: 16 bytes/param / 8 + 4 / 8 (reference)
    = 21 GB persistent per GPU, before activations."""
    P, V, H, N, wb = param_count(c), c["vocab"], c["hidden"], s.shards, s.dtype_bytes
    one = replace(s, optimizer="bf16", fused=False, shards=1)
    base = estimate(c, one)   # its activations, logits, KV cache and prefill are the same per process
    layer_params = (P - V * H * (1 if c["tied"] else 2)) / c["layers"]
    out = {"parameters": 4 * P / N, "reference model": 4 * P / N if s.ref else 0,
           "optimizer state (m, v)": 8 * P / N, "master weights": 0, "gradients": 4 * P / N}
    persistent = sum(out.values())
    out["KV cache (generation)"] = base["KV cache (generation)"]
    gen = base["_generation"] + P * wb                          # + the whole weights, gathered
    root = V * H * (1 if c["tied"] else 2) * wb                 # embedding (and head), kept gathered
    gathered = 2 * layer_params * wb + root + layer_params * 4  # two layers; one layer's fp32 grads
    act = base["activations + logits (training)"]
    step = 4 * P / N                                            # AdamW's foreach denominator on a shard
    held = base["held log-probs (training)"]
    train = max(act + gathered + V * H * 4, step) + held        # + the head's fp32 gradient before its reduce
    out["activations + logits (training)"], out["held log-probs (training)"] = act, held
    out["_persistent"], out["_generation"], out["_training"] = persistent, gen, train
    out["_peak"] = persistent + max(gen, train)
    return out
