"""
The memory model (memory.py) of full-parameter ExGRPO training on one GPU: its table, and
its check against measured peaks on CPU.

    python bench/memory_table.py                 # the table: gemma-7b, qwen2.5-7b, as the code is and fitted
    python bench/memory_table.py --validate      # modelled vs measured peak memory, tiny + SmolLM2 on CPU (10+ min: bf16 is slow on CPU)
    python bench/memory_table.py --validate --only tiny

What the model counts, and how each coefficient was read off the code: memory.py's docstring.
--validate runs one configuration per fresh subprocess, resets the peak RSS
(/proc/self/clear_refs) after the setup and a warm-up step, and compares VmHWM minus the RSS
after imports with the model for the same configuration. glibc is told to give freed blocks
back (MALLOC_MMAP_THRESHOLD_), so RSS follows live tensors the way torch.cuda.max_memory_allocated
does; the allocator's slack on a GPU is budgeted apart.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # the project root, when run as a script
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, GemmaConfig, LlamaConfig, Qwen2Config  # noqa: E402

import exgrpo  # noqa: E402
import models  # noqa: E402
import optim  # noqa: E402
import sample  # noqa: E402
from memory import (DIALOGUE_TOKENS, G, GPU_BYTES, GPU_RESERVE, Setup,  # noqa: E402
                    estimate)

# the architectures tabulated and validated here (models.py holds them: one table)
CONFIGS = {name: models.architecture(name) for name in ("gemma-7b", "qwen2.5-7b", "smollm2-135m", "tiny")}


def build_meta_model(name):
    """The real transformers architecture of a config, on the meta device (no memory, no weights)."""
    c = CONFIGS[name]
    cls = {"gemma": GemmaConfig, "qwen2": Qwen2Config, "llama": LlamaConfig}[c["arch"]]
    cfg = cls(vocab_size=c["vocab"], hidden_size=c["hidden"], num_hidden_layers=c["layers"],
              num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"], head_dim=c["head_dim"],
              intermediate_size=c["intermediate"], tie_word_embeddings=c["tied"])
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)

# -----------------------------------------------------------------------------
# the table for the 7B students


def scheme(name):
    """'as is': train.py today (MasterWeightAdamW, no checkpointing, --rl-micro 8 rollouts + aux);
    'fitted': BF16AdamW fused into backward, checkpointing, --rl-micro 1 (+ the aux dialogue);
    'fitted, rollouts by 8': the same, generating G = 8 rows per generate() call, not 2 G."""
    if name == "as is":
        return Setup(optimizer="master", fused=False, ckpt=False, micro_seqs=9)
    if name == "fitted, rollouts by 8":
        return Setup(gen_batch=8)
    return Setup()


def table():
    gb = lambda b: f"{b / 1e9:6.1f}"
    rows = ["parameters", "reference model", "optimizer state (m, v)", "master weights", "gradients",
            "activations + logits (training)", "KV cache (generation)"]
    cols = [("gemma-7b", "as is"), ("gemma-7b", "fitted"), ("gemma-7b", "fitted, rollouts by 8"),
            ("qwen2.5-7b", "as is"), ("qwen2.5-7b", "fitted")]
    est = {k: estimate(CONFIGS[k[0]], scheme(k[1])) for k in cols}
    budget = GPU_BYTES - GPU_RESERVE
    lines = [f"ExGRPO step: G = {G} per scenario (2 x {G} dialogues of one question rolled out together), "
             f"{DIALOGUE_TOKENS} tokens per dialogue, bf16 weights, reference model on the GPU.",
             f"Budget: {GPU_BYTES / 1e9:.0f} GB - {GPU_RESERVE / 1e9:.1f} GB reserve = {budget / 1e9:.1f} GB. "
             f"GB = 1e9 bytes.", "",
             "| GB | " + " | ".join(f"{m} {sch}" for m, sch in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for r in rows:
        lines.append(f"| {r} | " + " | ".join(gb(est[k][r]) for k in cols) + " |")
    for r, key in (("peak in generation", "_generation"), ("peak in training", "_training")):
        lines.append(f"| **{r}** | " + " | ".join(gb(est[k]["_persistent"] + est[k][key]) for k in cols) + " |")
    lines.append("| **fits in 80 GB** | " + " | ".join(
        "yes" if est[k]["_peak"] <= budget else "no" for k in cols) + " |")
    lines += ["", "Largest G per scenario that fits (fitted scheme; all 2 x G dialogues generated at once):", "",
              "| tokens per dialogue | " + " | ".join(m for m in ("gemma-7b", "qwen2.5-7b")) + " |", "|---:|---:|---:|"]
    for T in (512, 1024, 2048, 4096, 8192):
        cells = []
        for m in ("gemma-7b", "qwen2.5-7b"):
            best = 0
            for g in range(1, 513):
                s = replace(Setup(), seq_len=T, gen_len=T, gen_prompt=T - 128, gen_rows=2 * g)
                if estimate(CONFIGS[m], s)["_peak"] <= budget:
                    best = g
            cells.append(f"{best} ({2 * best * T:,} tokens)" if best else "none")
        lines.append(f"| {T} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

# -----------------------------------------------------------------------------
# validation on CPU: one configuration per fresh subprocess


VALIDATION = [  # (model, dtype, optimizer, fused, ckpt, rows, seq_len, prompt, phase)
    ("tiny", "fp32", "master", False, False, 8, 512, 64, "train"),
    ("tiny", "bf16", "bf16", True, True, 8, 512, 64, "train"),
    ("tiny", "fp32", None, None, None, 64, 320, 256, "generate"),
    ("smollm2-135m", "fp32", "master", False, False, 4, 256, 32, "train"),
    ("smollm2-135m", "bf16", "bf16", True, True, 4, 256, 32, "train"),
    ("smollm2-135m", "fp32", None, None, None, 16, 160, 128, "generate"),
]


def _status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _phase(spec, tok, mini=False):
    """Build one VALIDATION configuration and return the function that runs its phase once.
    mini=True: the same code path on a 2-layer model with a 256-token vocabulary (for the baseline)."""
    name, dtype, opt_name, fused, ckpt, rows, T, prompt, phase = spec

    def load():
        if mini:
            m = models.tiny_model(tok, vocab_size=256).to({"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
        else:
            m = models.load_student(name, dtype=dtype, device="cpu")[0]
        with torch.no_grad():   # own every weight in anonymous memory (a load may leave file-backed pages)
            for p in m.parameters():
                p.data = p.data.clone()
        return m
    model = load()
    vocab = model.config.vocab_size
    if phase == "generate":
        cfg = sample.generation_config(tok, T - prompt, 1.0)
        cfg.min_new_tokens = T - prompt     # the full length every time: the worst case sample.generate meets
        cfg.eos_token_id = [e for e in cfg.eos_token_id if e < vocab]
        ids = torch.randint(3, vocab, (rows, prompt))

        def run():
            model.eval()
            with torch.no_grad():
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
        return run
    ref = load().eval().requires_grad_(False)
    if ckpt:
        model.activation_checkpointing_enable({"use_reentrant": False})
    model.train()
    opt = (optim.MasterWeightAdamW(model.parameters(), lr=1e-6) if opt_name == "master" else
           optim.BF16AdamW(model.parameters(), lr=1e-6, fused=fused))
    ids = torch.randint(3, vocab, (rows, T))
    attn = torch.ones_like(ids)
    mask = attn.clone()
    mask[:, :prompt] = 0
    adv = torch.randn(rows)

    def run():   # exgrpo.policy_update's work on one micro-batch
        with torch.no_grad():
            ref_lp = sample.token_logprobs(ref, ids, attn, mask)
        lp = sample.token_logprobs(model, ids, attn, mask)
        loss, _ = exgrpo.exgrpo_loss(lp, lp.detach(), ref_lp, adv, mask)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return run


def measure(spec):
    """Runs inside a fresh subprocess: the peak bytes of one phase above the RSS after imports.

    "After imports" includes what the phase imports lazily (transformers' generation and
    masking modules, kernels): the same phase first runs on a mini model, which is dropped."""
    import gc
    torch.manual_seed(0)
    tok = models.smollm2_tokenizer()
    run = _phase(spec, tok, mini=True)
    run()
    run()
    del run
    gc.collect()
    base = _status("VmRSS")
    run = _phase(spec, tok)
    run()                    # warm-up: optimizer state exists, kernels are initialized
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")         # reset the peak RSS (VmHWM) to the current RSS
    held = _status("VmRSS") - base
    t0 = time.time()
    run()
    return {"peak_bytes": _status("VmHWM") - base, "held_bytes": held, "seconds": time.time() - t0}


def predict(spec):
    """(modelled bytes held between steps, modelled peak) for one VALIDATION row."""
    name, dtype, opt_name, fused, ckpt, rows, T, prompt, phase = spec
    c, wb = CONFIGS[name], {"fp32": 4, "bf16": 2}[dtype]
    if phase == "generate":
        s = Setup(dtype_bytes=wb, ref=False, optimizer="bf16", gen_rows=rows, gen_prompt=prompt, gen_len=T)
        e = estimate(c, s)
        return e["parameters"], e["parameters"] + e["_generation"]
    s = Setup(dtype_bytes=wb, optimizer=opt_name, fused=fused, ckpt=ckpt, micro_seqs=rows, seq_len=T,
              loss_frac=(T - prompt) / T, gen_rows=0)
    e = estimate(c, s)
    return e["_persistent"], e["_persistent"] + e["_training"]


def validate(only=None):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", MALLOC_ARENA_MAX="2",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    lines = ["| model | dtype | optimizer | ckpt | phase | batch | held MB (model / measured) | "
             "peak MB, modelled | peak MB, measured | measured / modelled |",
             "|---|---|---|---|---|---|---:|---:|---:|---:|"]
    worst = 0.0
    for spec in VALIDATION:
        if only and spec[0] != only:
            continue
        proc = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"measuring {spec} failed:\n{proc.stderr[-3000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        got, held = res["peak_bytes"], res["held_bytes"]
        want_held, want = predict(spec)
        name, dtype, opt_name, fused, ckpt, rows, T, prompt, phase = spec
        worst = max(worst, abs(got / want - 1))
        opt = "-" if phase == "generate" else (opt_name + (" fused" if fused else ""))
        lines.append(f"| {name} | {dtype} | {opt} | {'yes' if ckpt else 'no'} | {phase} | {rows} x {T} | "
                     f"{want_held / 1e6:,.0f} / {held / 1e6:,.0f} | {want / 1e6:,.0f} | {got / 1e6:,.0f} | {got / want:.3f} |")
        print(lines[-1], flush=True)
    lines.append(f"\nlargest deviation: {100 * worst:.1f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--validate", action="store_true", help="measure peaks on CPU and compare")
    ap.add_argument("--only", default=None, help="validate one model (tiny, smollm2-135m)")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)   # internal: one subprocess
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
    elif args.validate:
        print(validate(args.only))
    else:
        print(table())
