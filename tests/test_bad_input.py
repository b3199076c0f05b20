"""Bad input to the three command lines (train.py, probes.py, evaluate.py): every bad value fails
right after parsing, with exit status 2 and one line naming the flag, before any data is read, a
model loads, a teacher is asked or a folder is made (checks.py).

    python -m pytest -q tests/test_bad_input.py

In process, the work a bad value must never reach is replaced by a function that fails the test;
three cases also run as real processes (python train.py --nu 0.5, ...) for the exit status, the
single stderr line and the wall time, interpreter start and imports included."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import data
import evaluate
import probes
import runs
import models
import teachers
import train

ROOT = Path(__file__).resolve().parent.parent
URL = "http://127.0.0.1:9/v1"   # never asked: every case fails before a teacher exists
LIMIT_S = 10.0                  # the bound: "within seconds"; a parse takes milliseconds
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")

TRAIN = [
    (["--nu", "0.5"], "--nu 0.5: must be >= 1"),
    (["--G", "1"], "--G 1: must be >= 2"),
    (["--delta", "-1"], "--delta -1.0: must be >= 0"),
    (["--rl-steps", "-3"], "--rl-steps -3: must be >= 1 (or --no-rl)"),
    (["--sft-epochs", "0"], "--sft-epochs 0: must be >= 1 (or --no-sft)"),
    (["--k", "0"], "--k 0: must be >= 1"),
    (["--rl-questions", "0"], "--rl-questions 0: must be >= 1"),
    (["--data-fraction", "0"], "--data-fraction 0.0: must be in (0, 1]"),
    (["--dataset", "imagenet"], "--dataset imagenet: unknown; choose one of"),
    (["--k", "1"], "--k 1: ExGRPO needs k >= 2 (Scenario B keeps k' in [1, k-1]"),
    (["--k", "3", "--k-partial", "3"], "--k-partial must be in [1, k-1] = [1, 2], got 3"),
    (["--k", "3", "--k-partial", "0"], "--k-partial must be in [1, k-1] = [1, 2], got 0"),
    (["--rules", "notarule"], "--rules notarule: unknown rule notarule"),
    (["--teacher-url", URL], "needs both --teacher-url and --teacher-model"),
    (["--teacher", "openai"], "needs --teacher-url"),
    (["--teacher", "gpt9"], "unknown teacher 'gpt9'"),
    (["--teacher", "hf:./no/such/teacher"], "--teacher hf:./no/such/teacher: no folder at"),
    (["--teacher", "hf:runs/no/such/final"], "--teacher hf:runs/no/such/final: no folder at"),   # not a hub id
    (["--teacher", "hf:nobody/no-such-model"], "hub id nobody/no-such-model is not in the local hub cache"),
    (["--teacher-url", "localhost:8000", "--teacher-model", "m"], "must start with http:// or https://"),
    (["--teacher-timeout", "0"], "--teacher-timeout 0.0: must be > 0 seconds"),
    (["--teacher-concurrency", "0"], "--teacher-concurrency 0: must be >= 1"),
    (["--teacher-retries", "-1"], "--teacher-retries -1: must be >= 0"),
    (["--teacher-deadline", "-5"], "--teacher-deadline -5.0: must be >= 0 seconds"),
    (["--teacher-max-tokens", "0"], "--teacher-max-tokens 0: must be >= 1"),
    (["--dataset", "strategyqa"], "--teacher oracle: answers only the synthetic world"),
    (["--train-n", "-1"], "--train-n -1: must be >= 0"),
    (["--eval-n", "0"], "--eval-n 0: must be >= 1"),
    (["--tau-hard", "1.5"], "--tau-hard 1.5: must be in [0, 1]"),
    (["--temperature", "0"], "--temperature 0.0: must be > 0"),
    (["--sft-lr", "nan"], "--sft-lr nan: must be > 0"),
    (["--rl-micro", "0"], "--rl-micro 0: must be >= 1"),
    (["--save-minutes", "0"], "--save-minutes 0.0: must be > 0"),
    (["--level", "9"], "--level 9: must be one of"),
    (["--data-dir", "/no/such/data"], "--data-dir /no/such/data: no folder at"),
    (["--sft-from", "/no/such/sft"], "--sft-from /no/such/sft: no checkpoint there"),
    (["--resume", "/no/such/run"], "--resume /no/such/run: no run there to resume"),
    (["--gpus", "-1"], "--gpus -1: must be >= 0"),
    (["--student", "no-such-model"], "--student no-such-model: unknown student 'no-such-model'"),
    (["--difficulty-student", "./nowhere"], "--difficulty-student ./nowhere: unknown student"),
    pytest.param(["--device", "cuda"], "--device cuda: no CUDA device here", marks=NO_CUDA),
    (["--G", "abc"], "argument --G: invalid int value: 'abc'"),
    (["--agg", "nope"], "argument --agg: invalid choice: 'nope'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
]

PROBES = [
    (["--rules", "notarule"], "--rules notarule: unknown rule notarule"),
    (["--teacher-url", URL], "needs both --teacher-url and --teacher-model"),
    (["--teacher", "gpt9"], "unknown teacher 'gpt9'"),
    (["--teacher-concurrency", "0"], "--teacher-concurrency 0: must be >= 1"),
    (["--limit", "-1"], "--limit -1: must be >= 1"),
    (["--limit", "0"], "--limit 0: must be >= 1"),
    (["--tau-hard", "2"], "--tau-hard 2.0: must be in [0, 1]"),
    (["--chunk", "0"], "--chunk 0: must be >= 1"),
    (["--dataset", "imagenet"], "--dataset imagenet: unknown"),
    (["--dataset", "strategyqa"], "--teacher oracle: answers only the synthetic world"),
    (["--data-dir", "/no/such/data"], "--data-dir /no/such/data: no folder at"),
    (["--student", "./nowhere"], "--student ./nowhere: unknown student"),
    (["--split", "nope"], "--split nope: synth has train, test_id, test_ood"),
    (["--dataset", "tabmwp", "--split", "train", "--teacher-url", URL, "--teacher-model", "m"],
     "--split train: tabmwp has test"),
]

EVALUATE = [
    (["--limit", "-1"], "--limit -1: must be >= 0 (0 = the whole split)"),
    (["--batch-size", "0"], "--batch-size 0: must be >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0: must be >= 1"),
    (["--samples", "-2"], "--samples -2: must be >= 0"),
    (["--datasets", "nosuchset"], "--datasets nosuchset: unknown dataset nosuchset"),
    (["--datasets", "all", "--split", "train"], "--split train: tabmwp has test"),
    (["--datasets", "synth", "--split", "test"], "--split test: synth has test_id, test_ood"),
    (["--datasets", "none"], "nothing to evaluate: --datasets none and no --ei-test"),
    (["--data-dir", "/no/such/data"], "--data-dir /no/such/data: no folder at"),
    (["--ei-test", "/no/such/dei.jsonl", "--datasets", "none"], "--ei-test /no/such/dei.jsonl: no file at"),
    (["--ei-test", "synth", "--rules", "x"], "--rules x: unknown rule x"),
    (["--student", "no-such-model"], "unknown student 'no-such-model'"),
    (["--student", "runs/no/such/final"], "nor a hub id (org/name), and no folder at"),   # not hub advice
    (["--dtype", "int8"], "--dtype int8: must be fp32, bf16 or fp16"),
    (["--level", "9"], "--level 9: must be one of"),
    pytest.param(["--device", "cuda"], "--device cuda: no CUDA device here", marks=NO_CUDA),
    (["--limit", "lots"], "argument --limit: invalid int value: 'lots'"),
]


@pytest.fixture()
def no_work(monkeypatch):
    """Everything a bad flag must never reach fails the test at once."""
    def forbidden(what):
        def fn(*a, **k):
            pytest.fail(f"{what} before the flags were checked")
        return fn
    monkeypatch.setattr(models, "load_student", forbidden("a model loaded"))
    monkeypatch.setattr(teachers.EndpointTeacher, "_post", forbidden("the teacher was asked"))
    monkeypatch.setattr(teachers.TeacherCache, "__init__", forbidden("a teacher cache was opened"))
    monkeypatch.setattr(runs, "open_run", forbidden("the run folder was made"))
    monkeypatch.setattr(train, "sft_stage", forbidden("SFT started"))
    monkeypatch.setattr(probes, "build_dei", forbidden("EI started"))


def fails_in_one_line(main, argv, message, capsys):
    capsys.readouterr()
    t0 = time.time()
    with pytest.raises(SystemExit) as e:
        main(argv)
    elapsed = time.time() - t0
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert ": error: " in err and message in err, err
    assert elapsed < LIMIT_S


@pytest.mark.parametrize("argv, message", TRAIN)
def test_train_bad_flag(argv, message, tmp_path, no_work, monkeypatch, capsys):
    monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("data read before the flags were checked"))
    fails_in_one_line(train.main, argv + ["--out", str(tmp_path / "run")], message, capsys)
    assert not (tmp_path / "run").exists()


def _folders(tmp_path):
    """A train.py run folder (config.json of real flags), a model folder, a cut config, a file."""
    run = tmp_path / "run0"
    run.mkdir()
    runs.write_atomic(run / "config.json", json.dumps(vars(train.get_args(["--student", "tiny", "--rl-steps", "3"]))))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "float32"}))
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text('{"student": "tiny", ')
    (tmp_path / "a.jsonl").write_text("")
    return run, model, cut, tmp_path / "a.jsonl"


def test_train_bad_paths(tmp_path, no_work, monkeypatch, capsys):
    """Catches: --resume on a model folder (its keys merged into the flags) or on a cut config.json
    (a JSONDecodeError traceback), --sft-from a run folder or a folder without weights (a transformers
    traceback after zero-shot and EI), --out a file (NotADirectoryError): each one line, at once."""
    monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("data read before the flags were checked"))
    run, model, cut, afile = _folders(tmp_path)
    out = ["--out", str(tmp_path / "new")]
    tiny = tmp_path / "tiny"   # a tiny warm-up's folder: its config.json and a (dummy) weights file
    tiny.mkdir()
    (tiny / "config.json").write_text(json.dumps(dict(models.TINY_CONFIG, model_type="llama", vocab_size=49152)))
    (tiny / "model.safetensors").write_bytes(b"")
    for argv, message in [
            (["--resume", str(model)], "is not a train.py run's (a model folder?"),
            (["--resume", str(cut)], "config.json does not parse"),
            (["--sft-from", str(run)] + out, f"that is a run folder; its warm-up is {run / 'sft' / 'final'}"),
            (["--sft-from", str(model)] + out, "no checkpoint there (a model folder holds config.json and"),
            (["--student", "micro", "--sft-from", str(tiny)] + out, "a warm-up of another shape than --student micro"),
            (["--student", "tiny", "--out", str(afile)], "a file is there, not a folder"),
            (["--student", str(run)] + out, f"that is a run folder; its trained model is {run / 'rl' / 'final'}")]:
        fails_in_one_line(train.main, argv, message, capsys)
    assert not (tmp_path / "new").exists()


def test_resume_refuses_a_written_flag_that_differs_and_takes_plumbing_anew(tmp_path, capsys):
    """Catches: --resume RUN --rl-steps N silently dropped when N is the default the resume parses
    with (the saved 3 won; the start-up block even showed rl_steps=3*), and a resume refused a new
    --teacher-url or --save-minutes (a preempted run whose teacher moved could not go on)."""
    run, *_ = _folders(tmp_path)
    default = train.get_args([]).rl_steps   # the cpu preset's, which a bare --resume once parsed with
    assert default != 3 and train.get_args(["--resume", str(run)]).rl_steps == 3
    fails_in_one_line(train.main, ["--resume", str(run), "--rl-steps", str(default)],
                      f"--rl-steps {default} differs from the resumed run's 3", capsys)
    argv = ["--resume", str(run), "--save-minutes", "7", "--teacher-concurrency", "3"]
    args = train.get_args(argv)
    import presets
    merged, path = runs.resolve_run(args, presets.GIVEN & runs.RESUME_MAY_CHANGE)
    assert path == run and merged.rl_steps == 3 and merged.student == "tiny"          # the run's own flags
    assert (merged.save_minutes, merged.teacher_concurrency) == (7.0, 3)             # plumbing taken anew
    assert "resume: --save-minutes 7.0" in capsys.readouterr().out
    # the teacher moved: a new address alone, the run's --teacher-model kept (it was refused: "needs both")
    ep = tmp_path / "endpoint"
    ep.mkdir()
    runs.write_atomic(ep / "config.json", json.dumps(vars(train.get_args(
        ["--student", "tiny", "--teacher-url", URL, "--teacher-model", "m"]))))
    new = "http://127.0.0.1:10/v1"
    merged, _ = runs.resolve_run(train.get_args(["--resume", str(ep), "--teacher-url", new]), {"teacher_url"})
    assert (merged.teacher_url, merged.teacher_model, merged.teacher) == (new, "m", "openai")
    # a flag given again with the run's own value passes; --sft-from is checked against the run's student
    micro = tmp_path / "micro-run"
    micro.mkdir()
    warm = tmp_path / "micro-warm"
    warm.mkdir()
    (warm / "config.json").write_text(json.dumps(dict(models.TINY_CONFIG, **models.MICRO_CONFIG,
                                                      model_type="llama", vocab_size=866)))
    (warm / "model.safetensors").write_bytes(b"")
    runs.write_atomic(micro / "config.json", json.dumps(vars(train.get_args(
        ["--student", "micro", "--sft-from", str(warm)]))))
    assert train.get_args(["--resume", str(micro), "--sft-from", str(warm)]).student == "micro"


@pytest.mark.parametrize("argv, message", PROBES)
def test_probes_bad_flag(argv, message, tmp_path, no_work, capsys):
    fails_in_one_line(probes.main, argv + ["--no-progress", "--out", str(tmp_path / "dei.jsonl")], message, capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", EVALUATE)
def test_evaluate_bad_flag(argv, message, tmp_path, no_work, monkeypatch, capsys):
    monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("data read before the flags were checked"))
    fails_in_one_line(evaluate.main, ["--student", "tiny", "--out", str(tmp_path / "eval"), *argv], message, capsys)
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("script, argv, message", [
    ("train.py", ["--nu", "0.5"], "train.py: error: --nu 0.5: must be >= 1"),
    ("probes.py", ["--rules", "notarule"], "probes.py: error: --rules notarule: unknown rule notarule"),
    ("evaluate.py", ["--limit", "-1"], "evaluate.py: error: --limit -1: must be >= 0"),
])
def test_a_real_process_exits_2_with_one_line(script, argv, message, tmp_path):
    out = tmp_path / "out"
    t0 = time.time()
    r = subprocess.run([sys.executable, script, *argv, "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    elapsed = time.time() - t0
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith(message) and "Traceback" not in r.stderr and r.stdout == ""
    assert not out.exists() and elapsed < LIMIT_S


def test_k_1_is_fine_where_no_scenario_b_is_built():
    """--k 1 is refused for ExGRPO (above) but not for plain GRPO or a run without RL."""
    import train
    for extra in (["--no-probes"], ["--no-rl"], ["--teacher", "none"]):
        assert train.get_args(["--student", "tiny", "--k", "1", *extra]).k == 1


def test_a_home_folder_written_with_a_tilde_is_a_folder_not_a_hub_id(tmp_path, monkeypatch):
    """Catches: --teacher hf:~/x (the shell leaves '~' after 'hf:' unexpanded) reported as a hub id
    missing from the offline cache, and --student ~/x as 'no folder at', naming the folder that is
    there: '~' is expanded before every existence test."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps(dict(models.TINY_CONFIG, model_type="llama")))
    assert models.is_path("~/x") and not models.is_path("google/gemma-7b-it") and models.is_path("runs/a/b")
    assert train.get_args(["--student", "tiny", "--teacher", "hf:~/x"]).teacher == "hf:~/x"
    assert train.get_args(["--student", "~/x", "--no-rl", "--teacher", "none"]).student == "~/x"
