"""Presets by student and device, the start-up block, the memory check, --dry-run, --random-init.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_presets.py
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import checks  # noqa: E402
import memory  # noqa: E402
import models  # noqa: E402
import presets  # noqa: E402
import probes  # noqa: E402
import sample  # noqa: E402
import teachers  # noqa: E402
import train  # noqa: E402

MEM = memory   # the memory model (memory.py)
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")


def _run(*argv):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)

# -----------------------------------------------------------------------------
# which preset, and who wins


def test_cpu_preset_is_the_default():
    a = train.get_args([])
    assert a.preset == "cpu" and a.student == "smollm2-135m"
    assert (a.G, a.k, a.rl_steps, a.train_n, a.optimizer) == (train.G, train.K, train.RL_STEPS, train.TRAIN_N, "master")


def test_a_7b_student_gets_the_papers_recipe():
    for student in ("gemma-7b", "qwen2.5-7b"):
        a = train.get_args(["--student", student])
        assert a.preset == "gpu-7b"
        assert (a.k, a.G, a.sft_epochs, a.dtype, a.level) == (5, 8, 3, "bf16", 3)
        assert a.rl_steps >= 100 and a.grad_checkpointing


@pytest.mark.parametrize("argv, want", [
    (["--student", "gemma-7b", "--G", "4"], dict(G=4)),          # 4 is also train.py's own default
    (["--student", "gemma-7b", "--k", "3", "--sft-epochs", "1", "--rl-steps", "7"], dict(k=3, sft_epochs=1, rl_steps=7)),
    (["--student", "gemma-7b", "--optimizer", "master", "--dtype", "fp32"], dict(optimizer="master", dtype="fp32")),
    (["--student", "gemma-7b", "--rollout-batch", "0"], dict(rollout_batch=0)),
    (["--student", "tiny", "--rl-steps", "5", "--train-n", "3"], dict(rl_steps=5, train_n=3)),
    (["--student", "tiny", "--max-new-tokens", "80"], dict(max_new_tokens=80)),   # = the CPU default
])
def test_an_explicit_flag_beats_the_preset(argv, want):
    a = train.get_args(argv)
    assert {k: getattr(a, k) for k in want} == want
    assert presets.GIVEN >= set(want)


def test_the_scheme_is_the_best_one_that_fits_the_device(monkeypatch):
    """80 GB: bf16 AdamW fused into backward; a device with room for everything: fp32 master weights."""
    a = train.get_args(["--student", "gemma-7b"])
    assert a.optimizer == "bf16-fused" and presets.estimate(a)["peak"] <= MEM.GPU_BYTES - MEM.GPU_RESERVE
    master = train.get_args(["--student", "gemma-7b", "--optimizer", "master", "--rl-micro", "4", "--rollout-batch", "0"])
    assert presets.estimate(master)["peak"] > MEM.GPU_BYTES   # why it was not chosen
    monkeypatch.setattr(presets, "device_budget", lambda device, student: (1e12, 1e12, "a huge GPU"))
    big = train.get_args(["--student", "gemma-7b"])
    assert (big.scheme, big.optimizer, big.rl_micro) == ("fp32 master weights", "master", 4)


# -----------------------------------------------------------------------------
# the memory model as presets.py uses it


def test_dialogue_tokens_by_hand():
    a = train.get_args(["--student", "gemma-7b"])
    assert presets.dialogue_tokens(a) == 6 * (presets.USER_TURN_TOKENS + 128)   # k + 1 = 6 turns
    assert presets.estimate(a)["rows"] == 16                                    # 2 scenarios x G = 8
    a.no_probes = True
    assert presets.dialogue_tokens(a) == presets.USER_TURN_TOKENS + 128


def test_the_architecture_table_reads_the_published_configs():
    """The one architecture table (models.RANDOM_INIT_CONFIGS, read through models.architecture)
    against the numbers of each model's published config.json, written out by hand here."""
    assert models.architecture("gemma-7b") == dict(arch="gemma", vocab=256000, hidden=3072, layers=28, heads=16,
                                                   kv_heads=16, head_dim=256, intermediate=24576, tied=True,
                                                   qkv_bias=False)
    assert models.architecture("qwen2.5-7b") == dict(arch="qwen2", vocab=152064, hidden=3584, layers=28, heads=28,
                                                     kv_heads=4, head_dim=128, intermediate=18944, tied=False,
                                                     qkv_bias=True)
    assert models.architecture("smollm2-135m") == dict(arch="llama", vocab=49152, hidden=576, layers=30, heads=9,
                                                       kv_heads=3, head_dim=64, intermediate=1536, tied=True,
                                                       qkv_bias=False)


def test_largest_fit_is_the_largest():
    a = train.get_args(["--student", "gemma-7b", "--G", "32", "--rollout-batch", "0"])
    budget = MEM.GPU_BYTES - MEM.GPU_RESERVE
    fits = presets.largest_fit(a, budget)
    g = int(fits[0].split()[1])
    peak = lambda **kw: presets.estimate(type(a)(**{**vars(a), **kw}))["peak"]
    assert fits[0].startswith("--G") and 2 <= g < 32
    assert peak(G=g) <= budget < peak(G=g + 1)


# -----------------------------------------------------------------------------
# the commands of the issue


@no_gpu
def test_dry_run_of_gemma_7b_on_the_cpu_prints_the_gpu_preset(tmp_path):
    out = tmp_path / "run"
    p = _run("--student", "gemma-7b", "--dry-run", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "preset   gpu-7b" in p.stdout and "memory   peak" in p.stdout and "fits" in p.stdout
    assert "G=8" in p.stdout and "k=5" in p.stdout and "sft_epochs=3" in p.stdout
    assert "EI: 2000 questions" in p.stdout
    assert not out.exists()   # nothing written, nothing loaded


def test_dry_run_default_prints_the_cpu_preset():
    p = _run("--dry-run", "--G", "6")
    assert p.returncode == 0, p.stderr
    assert "preset   cpu" in p.stdout and "G=6*" in p.stdout and "student  smollm2-135m" in p.stdout


@no_gpu
def test_gemma_7b_without_a_gpu_stops_with_one_line():
    p = _run("--student", "gemma-7b")
    assert p.returncode != 0 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "CPU" in lines[0] and "GB" in lines[0] and "--force" in lines[0]


def test_a_run_that_does_not_fit_stops_with_what_fits(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--student", "gemma-7b", "--G", "32", "--dry-run"])
    msg = str(e.value.code)
    assert msg.startswith("error: this run needs about") and "--G " in msg and "--force" in msg
    assert "\n" not in msg


def _cache_one_probe(a, record):
    """Write the answer to the first counterfactual probe of `record` into the teacher's shared cache."""
    teacher = teachers.from_args(a, cache=False)
    probe = probes.make_probes(record, ["counterfactual"])[0]
    key = teachers.cache_key(teacher.id, teachers.user(probes.format_question(probe["question"], probe["answer_type"])),
                             teacher.sampling)
    path = Path(teachers.cache_path(a, teacher))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "answer": "x"}) + "\n")


def test_ei_plan_counts_cached_teacher_calls(tmp_path):
    """A real teacher: its calls are counted, and the prompts already in its shared cache are found."""
    a = train.get_args(["--teacher", "hf:nowhere", "--train-n", "3", "--rules", "counterfactual",
                        "--teacher-cache", str(tmp_path / "cache")])
    train_records, _ = train.load_data(a)
    _cache_one_probe(a, train_records[0])
    text = probes.ei_plan(a, lambda: (train_records, None))
    # the synthetic world ships its reasoning: 3 counterfactual probes are the prompts known before any
    # answer (their consistency checks hold the answers); one of them is cached
    assert "EI: 3 questions, 1 rules" in text and "up to 3 calls (0 for questions" in text and "1 of the 3 prompts" in text


def test_dry_run_of_a_resumed_run_counts_its_cached_answers(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    a = train.get_args(["--teacher", "hf:nowhere", "--train-n", "2", "--rules", "counterfactual", "--out", str(run),
                        "--teacher-cache", str(tmp_path / "cache")])
    (run / "config.json").write_text(json.dumps(vars(a)))          # as runs.open_run writes it
    _cache_one_probe(a, train.load_data(a)[0][1])
    with pytest.raises(SystemExit) as e:
        train.main(["--resume", str(run), "--dry-run"])
    assert e.value.code == 0 and "1 of the 2 prompts known now are already cached" in capsys.readouterr().out


# -----------------------------------------------------------------------------
# --random-init


def test_random_init_builds_the_7b_architectures_without_memory():
    for name, cls in (("gemma-7b", "GemmaForCausalLM"), ("qwen2.5-7b", "Qwen2ForCausalLM")):
        model, tok = models.load_student(name, dtype="bf16", device="meta", random_init=True)
        n = sum(p.numel() for p in model.parameters())
        assert type(model).__name__ == cls and n == MEM.param_count(models.architecture(name))
    assert n == 7_615_616_512   # Qwen2.5-7B's published count (7.61B)


def test_random_init_smollm2_is_seeded_and_shaped_like_the_real_one():
    a, tok = models.load_student("smollm2-135m", random_init=True, seed=1)
    b, _ = models.load_student("smollm2-135m", random_init=True, seed=1)
    assert sum(p.numel() for p in a.parameters()) == 134_515_008
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    ids = torch.tensor([sample.chat_ids(tok, [{"role": "user", "content": "2 + 3?"}])])
    assert a(ids).logits.shape[-1] == 49152


# -----------------------------------------------------------------------------
# bench/gpu_check.py: its CPU-runnable parts


def _gpu_check():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_measures_a_step_and_puts_the_memory_model_beside_it(tmp_path):
    gc = _gpu_check()
    res = gc.main(["--device", "cpu", "--student", "tiny", "--G", "2", "--k", "2", "--max-new-tokens", "4",
                   "--steps", "1", "--skip-pipeline", "--out-dir", str(tmp_path)])
    assert sample.rollout_dialogues is gc.Meter("cpu").real            # the wrapper is taken off again
    s, p = res["step"], res["predicted"]
    assert s["student_tokens"] > 0 and s["dialogue_tokens"] > s["student_tokens"]
    assert s["gen_tokens_per_s"] > 0 and s["train_tokens_per_s"] > 0 and s["parameters"] > 0
    assert p["rollouts"] == 4 and s["dialogue_tokens"] <= p["rollouts"] * p["dialogue_tokens_budgeted"]
    saved = json.loads((tmp_path / f"gpu_check-{res['date']}-cpu-tiny.json").read_text())
    assert saved["args"]["G"] == 2 and "| peak (GB) |" in (tmp_path / f"gpu_check-{res['date']}-cpu-tiny.md").read_text()


def test_gpu_check_keeps_what_it_measured_when_the_step_fails(tmp_path, monkeypatch):
    # an out-of-memory 7B step must still leave (c) and the error on disk, not a traceback alone
    gc = _gpu_check()

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(gc, "one_step", oom)
    res = gc.main(["--device", "cpu", "--student", "tiny", "--G", "2", "--k", "2", "--skip-pipeline",
                   "--out-dir", str(tmp_path), "--tag", "oom"])
    assert res["step"]["error"].startswith("OutOfMemoryError: CUDA out of memory")
    md = (tmp_path / f"gpu_check-{res['date']}-cpu-tiny-oom.md").read_text()
    assert "(b) stopped: OutOfMemoryError" in md and res["predicted"]["rollouts"] == 4


def test_gpu_check_memory_cap_needs_cuda(capsys):
    with pytest.raises(SystemExit):
        _gpu_check().main(["--device", "cpu", "--student", "tiny", "--memory-cap", "80", "--skip-step", "--skip-pipeline"])
    assert "--memory-cap needs a CUDA --device" in capsys.readouterr().err


def test_gpu_check_peak_flops_and_pipeline_time_limit():
    gc = _gpu_check()
    assert gc.peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and gc.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gc.peak_flops("NVIDIA H200") == 989e12 and gc.peak_flops("cpu") is None
    assert gc.pipeline("cpu", limit=1)["rc"] == "timeout"

# -----------------------------------------------------------------------------
# the preset from the model: a hub id or a local folder plans like its alias


def _hub_cache_with(tmp_path, repo_id, config):
    """A local hub cache (the layout huggingface_hub reads offline) holding one config.json."""
    root = tmp_path / "hub"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text(json.dumps(config))
    return root


def test_a_hub_id_and_a_folder_get_the_preset_and_the_memory_estimate_of_their_alias(tmp_path, monkeypatch):
    gemma = dict(models.RANDOM_INIT_CONFIGS["gemma-7b"], architectures=["GemmaForCausalLM"])
    monkeypatch.setenv("HF_HUB_CACHE", str(_hub_cache_with(tmp_path, "google/gemma-7b-it", gemma)))
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(gemma))
    alias = train.get_args(["--student", "gemma-7b"])
    for student in ("google/gemma-7b-it", str(folder)):
        assert models.architecture(student) == models.architecture("gemma-7b")
        a = train.get_args(["--student", student])
        assert a.preset == "gpu-7b" and "8.54B parameters" in a.preset_why
        assert (a.G, a.k, a.rl_steps, a.dtype, a.optimizer) == (alias.G, alias.k, alias.rl_steps, alias.dtype,
                                                                alias.optimizer)
        assert presets.estimate(a)["peak"] == presets.estimate(alias)["peak"]


def test_the_papers_hub_ids_plan_like_their_alias_without_a_cached_config(tmp_path, monkeypatch):
    """Catches: --student google/gemma-7b-it planned with the CPU preset (and no memory estimate,
    and no 7B-on-CPU stop) when its config is not in the hub cache, as before its gated download."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    for hub, alias in ((h, a) for a, h in models.HUB_IDS.items()):
        assert models.hub_config(hub) is None
        assert models.architecture(hub) == models.architecture(alias)
        assert train.get_args(["--student", hub]).preset == "gpu-7b"


def test_dry_run_of_a_hub_id_prints_its_preset_and_memory(tmp_path):
    gemma = dict(models.RANDOM_INIT_CONFIGS["gemma-7b"], architectures=["GemmaForCausalLM"])
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(_hub_cache_with(tmp_path, "google/gemma-7b-it", gemma)))
    p = subprocess.run([sys.executable, "train.py", "--student", "google/gemma-7b-it", "--dry-run"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "preset   gpu-7b (8.54B parameters (gemma, 28 layers))" in p.stdout
    assert "memory   peak" in p.stdout and "no estimate" not in p.stdout


def test_an_unknown_architecture_says_which_preset_and_why(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a = train.get_args(["--student", "someone/unknown-model"])
    assert a.preset == "cpu" and "no architecture known for someone/unknown-model" in a.preset_why
    assert presets.estimate(a) is None

# -----------------------------------------------------------------------------
# --help


def test_help_is_short_grouped_and_says_what_every_flag_does():
    ap = checks.one_line(presets.add_flags(train.parser()))
    text = ap.format_help()
    assert len(text.splitlines()) <= 120
    flags = [a for a in ap._actions if a.option_strings and a.dest != "help"]
    assert len(flags) > 60 and all(a.help for a in flags), [a.dest for a in flags if not a.help]
    titles = [g.title for g in ap._action_groups]
    assert [t.split(":")[0] for t in titles if t.startswith("stage")] == ["stage 1", "stage 2", "stage 3"]


def test_help_of_a_student_shows_its_presets_values():
    p = _run("--student", "gemma-7b", "--help")
    assert p.returncode == 0
    assert re.search(r"--G N +rollouts per scenario \(default: 8\)", p.stdout), p.stdout
    assert re.search(r"--rl-steps N +optimizer steps \(default: 300\)", p.stdout)
    assert "the gpu-7b preset's, for --student gemma-7b" in p.stdout
    assert re.search(r"--G N +rollouts per scenario \(default: 4\)", _run("--help").stdout)

# -----------------------------------------------------------------------------
# a real dataset: the budgets from its own rationales


def test_real_data_budgets_are_the_rationales_p90_and_p99(shared_data, tok):
    from data.real import load_dataset
    texts = [r["reasoning"] for r in load_dataset("strategyqa", "train", data_dir=shared_data) if r.get("reasoning")]
    n = sorted(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    p90, p99 = n[int(0.9 * len(n))], n[int(0.99 * len(n))]
    assert 200 < p90 < 300   # StrategyQA's Gemini rationales: far above the preset's 80-token turn
    turn, teacher, why = presets.data_budgets("smollm2-135m", "strategyqa", shared_data)
    assert (turn, teacher) == (-(-p90 // 16) * 16, -(-p99 // 16) * 16) and f"p90 ({p90})" in why
    a = train.get_args(["--dataset", "strategyqa", "--data-dir", str(shared_data), "--teacher", "none"])
    assert (a.max_new_tokens, a.teacher_max_tokens, a.eval_max_new_tokens) == (turn, teacher, max(turn, 128))
    b = train.get_args(["--dataset", "strategyqa", "--data-dir", str(shared_data), "--teacher", "none",
                        "--max-new-tokens", "100"])
    assert b.max_new_tokens == 100 and b.teacher_max_tokens == teacher   # a flag still wins
    assert train.get_args(["--teacher", "none"]).max_new_tokens == train.RL_MAX_NEW_TOKENS   # synth: unchanged
    assert presets.data_budgets("smollm2-135m", "commonsenseqa", shared_data) is None   # question + gold only


def test_gpu_preset_on_real_data_shrinks_g_until_it_fits(shared_data):
    argv = ["--student", "gemma-7b", "--dataset", "strategyqa", "--data-dir", str(shared_data),
            "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m"]
    a = train.get_args(argv)
    budget = MEM.GPU_BYTES - MEM.GPU_RESERVE
    assert a.max_new_tokens == 256 and 2 <= a.G < 8 and presets.estimate(a)["peak"] <= budget
    assert presets.estimate(type(a)(**{**vars(a), "G": a.G + 1, "rollout_batch": a.G + 1}))["peak"] > budget
    assert f"G 8 -> {a.G} to fit" in a.scheme and a.teacher == "openai"
    assert train.get_args(argv + ["--G", "8"]).G == 8   # a G on the command line is never changed

# -----------------------------------------------------------------------------
# several GPUs: the memory model per GPU, and how many cards the plain algorithm needs


def test_fsdp_memory_per_gpu_by_hand():
    """fp32 weights (4), gradients (4), AdamW m and v (8) and the fp32 reference (4): 20 bytes per
    parameter, split over N GPUs; generation adds the whole bf16 weights (2 bytes per parameter)."""
    c = models.architecture("gemma-7b")
    P = MEM.param_count(c)
    for n in (2, 4, 8):
        e = MEM.estimate(c, MEM.Setup(optimizer="fsdp", shards=n))
        assert e["_persistent"] == pytest.approx(20 * P / n)
        one = MEM.estimate(c, MEM.Setup(optimizer="bf16", fused=False))
        assert e["_generation"] == pytest.approx(one["_generation"] + 2 * P)
    assert MEM.estimate(c, MEM.Setup(optimizer="fsdp", shards=8))["_peak"] < MEM.GPU_BYTES - MEM.GPU_RESERVE


def test_dry_run_plans_for_several_gpus_and_says_what_the_plain_algorithm_needs():
    one, four = _run("--student", "gemma-7b", "--dry-run"), _run("--student", "gemma-7b", "--gpus", "4", "--dry-run")
    assert one.returncode == 0 and four.returncode == 0, four.stderr
    assert "memory scheme: FSDP2 over 4 GPUs" in four.stdout and "per GPU, 4 GPUs (FSDP2)" in four.stdout
    for p in (one, four):   # 20 bytes a parameter over 80 GB cards: 4 of them for gemma-7b's 8.5B
        assert "clipping on (FSDP2 past one GPU): 4 GPU(s) like this one" in p.stdout
    assert "update   CHANGED by the memory scheme" in one.stdout and "CHANGED" not in four.stdout


def test_real_training_questions_are_a_seeded_draw_and_more_is_a_superset(shared_data):
    ids = lambda *flags: [r["id"] for r in train.load_data(train.get_args(
        ["--dataset", "strategyqa", "--data-dir", str(shared_data), "--teacher", "none", *flags]))[0]]
    five, six = ids("--train-n", "5"), ids("--train-n", "6")
    assert len(five) == 5 and six[:5] == five                     # --train-n 6 adds one question
    assert five != ids("--train-n", "5", "--data-seed", "1")       # the seed picks them
    assert five != [f"strategyqa-train-{i}" for i in range(5)]     # not the file's first five

# -----------------------------------------------------------------------------
# questions a step: the gpu-7b preset sizes them with the memory model (presets.questions_that_fit)

H200 = 149.3e9   # what torch reports for a 141 GB H200 (about 139 GiB)


def _on(monkeypatch, total):
    monkeypatch.setattr(presets, "device_budget", lambda device, preset: (total - MEM.GPU_RESERVE, total, "x"))


def test_what_grows_with_questions_by_hand():
    """memory.py's "What grows with Q", each equation by hand on gemma-7b (L 28, H 3072, V 256000,
    bf16, dialogues of T = 1440 tokens)."""
    c = models.architecture("gemma-7b")
    T = 1440
    # held: reference + old log-probs of 2 G Q = 512 rollouts, fp32: 2 x 512 x 1440 x 4
    e = MEM.estimate(c, MEM.Setup(seq_len=T, gen_rows=512, gen_batch=16))
    assert e["held log-probs (training)"] == 2 * 512 * 1440 * 4 == 5_898_240
    assert MEM.estimate(c, MEM.Setup(seq_len=T, gen_rows=512, ref=False))["held log-probs (training)"] == 2_949_120
    # one aux dialogue more on micro-batch 0: T (L H wb + 4 H + 12 + 2 H wb + T wb + 4 V)
    #   = 1440 x (172,032 + 24,588 + 2,880 + 1,024,000) = 1440 x 1,223,500 = 1.76184e9 bytes
    train = lambda q: MEM.estimate(c, MEM.Setup(seq_len=T, micro_seqs=1 + q, gen_rows=16, gen_batch=8,
                                                gen_prompt=T - 128, gen_len=T))["_training"]
    assert (train(32) - train(1)) / 31 == pytest.approx(1440 * 1_223_500, rel=0.01)   # logit chunks: < 1%
    # generation by G: the KV cache of 8 rows whatever the questions; all at once (gen_batch 0): 2 G Q rows
    kv = lambda rows, b: MEM.estimate(c, MEM.Setup(seq_len=T, gen_rows=rows, gen_batch=b, gen_len=T))[
        "KV cache (generation)"]
    assert kv(16, 8) == kv(512, 8) == 8 * 1440 * (2 * 28 * 16 * 256 * 2)     # 8 x 1440 x 458,752 = 5.28 GB
    assert kv(512, 0) == 512 * 1440 * 458_752


def test_questions_per_process_and_group_rows_by_hand():
    a = train.get_args(["--student", "gemma-7b"])
    b = type(a)(**{**vars(a), "rl_questions": 32, "gpus": 3, "rollout_batch": 0})
    assert presets.per_process(b) == 11                    # 32 dealt over 3: 11, 11, 10
    assert presets.group_rows(b) == 16                     # 2 scenarios x G 8
    assert presets.estimate(b)["rows"] == 11 * 16          # the memory model plans the busiest GPU
    assert presets.bounded(b).rollout_batch == 16          # more than one question a GPU: a group at a time
    assert presets.group_rows(type(b)(**{**vars(b), "no_probes": True})) == 8


def test_gpu_preset_rolls_out_the_cap_where_memory_allows(monkeypatch):
    """A 141 GB H200: bf16 AdamW, 32 questions a step, generated one question's 16 rollouts at a time;
    80 GB: the leanest scheme is already over 95% of the card at 1 question and each more adds its aux
    dialogue (+1.76 GB): 1; without the aux batch nothing grows and it takes the cap."""
    _on(monkeypatch, H200)
    a = train.get_args(["--student", "gemma-7b"])
    assert (a.rl_questions, a.rollout_batch, a.optimizer) == (presets.RL_QUESTIONS_CAP, 16, "bf16") == (32, 16, "bf16")
    assert presets.estimate(a)["peak"] <= presets.SCHEME_MARGIN * (H200 - MEM.GPU_RESERVE)
    assert a.questions_why.startswith("memory: the cap, 32")
    _on(monkeypatch, MEM.GPU_BYTES)
    a = train.get_args(["--student", "gemma-7b"])
    assert (a.rl_questions, a.rollout_batch) == (1, 8)
    assert "1 already needs 75.3 GB and 2 would need 77.0 GB, > 74.6 GB (95% of 78.5 GB)" in a.questions_why
    no_aux = train.get_args(["--student", "gemma-7b", "--no-aux"])
    assert no_aux.rl_questions == 32 and "the peak stays 75.3 GB (generation)" in no_aux.questions_why
    assert presets.estimate(no_aux)["peak"] - presets.estimate(a)["peak"] < presets.SMALL_BYTES


def test_a_smaller_card_gets_fewer_questions_the_most_that_fit(monkeypatch):
    _on(monkeypatch, 120e9)
    a = train.get_args(["--student", "gemma-7b"])
    limit = presets.SCHEME_MARGIN * (120e9 - MEM.GPU_RESERVE)
    peak = lambda q: presets.estimate(presets.bounded(type(a)(**{**vars(a), "rl_questions": q})))["peak"]
    assert 1 < a.rl_questions < 32 and peak(a.rl_questions) <= limit < peak(a.rl_questions + 1)
    assert f"{a.rl_questions + 1} would need" in a.questions_why


def test_rl_questions_on_the_command_line_wins(monkeypatch):
    _on(monkeypatch, H200)
    a = train.get_args(["--student", "gemma-7b", "--rl-questions", "5"])
    assert a.rl_questions == 5 and "written on the command line" in a.questions_why
    assert train.get_args(["--student", "gemma-7b", "--rl-questions", "1"]).rl_questions == 1   # = the floor
    b = train.get_args(["--student", "gemma-7b", "--rollout-batch", "0"])   # all rows at once: KV grows
    assert b.rollout_batch == 0 and b.rl_questions < 32
    _on(monkeypatch, MEM.GPU_BYTES)
    with pytest.raises(SystemExit) as e:   # 5 does not fit 80 GB: the error names the questions that do
        train.main(["--student", "gemma-7b", "--rl-questions", "5", "--dry-run"])
    assert "--rl-questions 3" in str(e.value.code)


def test_several_gpus_size_questions_per_gpu(monkeypatch):
    """FSDP2 over 4 cards of 80 GB: 73.8 GB per GPU from 1 to 8 questions a GPU (generation, with the
    gathered weights, stays above training): the cap, 8 a GPU; over 2 cards nothing fits: one a GPU."""
    _on(monkeypatch, MEM.GPU_BYTES)
    a = train.get_args(["--student", "gemma-7b", "--gpus", "4"])
    assert (a.rl_questions, a.rollout_batch, presets.per_process(a)) == (32, 16, 8)
    assert "the peak stays 73.8 GB (generation)" in a.questions_why
    assert train.get_args(["--student", "gemma-7b", "--gpus", "2"]).rl_questions == 2


@no_gpu
def test_dry_run_prints_the_questions_a_step_and_why():
    p = _run("--student", "gemma-7b", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert ("rl       1 question a step x G 8 (16 rollouts; memory: 1 already needs 75.3 GB and 2 would need "
            "77.0 GB, > 74.6 GB (95% of 78.5 GB); training 6.8 GB -> 61.4 GB from 1 to 32 questions, the aux "
            "batch") in p.stdout


def test_a_micro_batch_larger_than_its_batch_is_charged_as_the_batch():
    """Catches: --rl-micro 1000 on a step of 8 rollouts planned as 1,000 sequences at once (85 GB,
    refused) while the run peaked at 0.9 GB: a micro-batch holds at most the step's rows (and an
    SFT micro-batch at most --sft-batch)."""
    base = ["--student", "tiny", "--rl-questions", "1", "--G", "4", "--k", "2"]   # 1 x 2 scenarios x 4 = 8
    whole = presets.estimate(train.get_args(base + ["--rl-micro", "8", "--sft-micro", "4", "--sft-batch", "4"]))
    huge = presets.estimate(train.get_args(base + ["--rl-micro", "1000", "--sft-micro", "1000", "--sft-batch", "4"]))
    assert whole["rows"] == 8
    assert huge["rl"]["_peak"] == whole["rl"]["_peak"] and huge["sft"]["_peak"] == whole["sft"]["_peak"]
