"""runs.py: checkpoints that survive corruption (each file truncated, emptied or overwritten with
random bytes in turn), the fallback to the previous checkpoint, and the one-line error.

    python -m pytest tests/test_runs.py -q
"""
import importlib.util
import os
import sys

import pytest
import torch

import optim
import runs
import models


@pytest.fixture()
def run_with_two_checkpoints(tmp_path, tok):
    model = models.tiny_model(tok, seed=0)
    opt = optim.make_optimizer(model, 1e-3)
    run = runs.Run(tmp_path)
    runs.save_trainer(run, "rl", model, tok, opt, 1)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    runs.save_trainer(run, "rl", model, tok, opt, 2)
    return run, model, opt


def test_a_resumed_stage_counts_its_killed_attempt_up_to_the_checkpoint(tmp_path, tok, monkeypatch):
    """Catches: a resumed run reporting only its last process's seconds as the stage's time (the
    killed attempt's were lost), or counting the redone work after the checkpoint twice.
    By hand: attempt 1 starts at t = 1000 and checkpoints at t = 1100 (100 s), then dies at 1300
    (those 200 s are redone); attempt 2 starts at 5000 and is asked at 5050: 100 + 50 = 150 s."""
    now = [1000.0]
    monkeypatch.setattr(runs.time, "time", lambda: now[0])
    model = models.tiny_model(tok, seed=0)
    opt = optim.make_optimizer(model, 1e-3)
    run = runs.Run(tmp_path)
    run.start_clock()
    now[0] = 1100.0
    runs.save_trainer(run, "rl", model, tok, opt, 3)
    now[0] = 5000.0                                   # (died at 1300) a new process, a new Run
    again = runs.Run(tmp_path)
    again.start_clock()
    assert runs.resume_trainer(again, "rl", model, opt) == 3
    now[0] = 5050.0
    assert again.seconds() == pytest.approx(150.0)


def _damage(path, how):
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if how == "truncate":
            f.truncate(size // 2)
        elif how == "empty":
            f.truncate(0)
        else:   # random bytes over the middle of the file, same length
            f.seek(size // 4)
            f.write(os.urandom(max(size // 2, 1)))


def test_a_sound_checkpoint_is_the_newest(run_with_two_checkpoints):
    run, model, opt = run_with_two_checkpoints
    assert run.checkpoint("rl") == run.path / "rl" / "ckpt"
    assert runs.resume_trainer(run, "rl", model, opt) == 2


@pytest.mark.parametrize("how", ["truncate", "empty", "random"])
def test_each_damaged_file_falls_back_to_the_previous_checkpoint(run_with_two_checkpoints, how, capsys):
    run, model, opt = run_with_two_checkpoints
    files = sorted(p.name for p in (run.path / "rl" / "ckpt").iterdir())
    assert {"model.safetensors", "trainer.pt", "config.json", "checksums.json"} <= set(files)
    for name in files:
        backup = (run.path / "rl" / "ckpt" / name).read_bytes()
        _damage(run.path / "rl" / "ckpt" / name, how)
        assert run.checkpoint("rl") == run.path / "rl" / "ckpt.prev", name
        assert "is unusable" in capsys.readouterr().out
        (run.path / "rl" / "ckpt" / name).write_bytes(backup)
    assert runs.resume_trainer(run, "rl", model, opt) == 2     # restored: the newest again


def test_non_finite_weights_are_caught_even_with_matching_checksums(run_with_two_checkpoints, tok):
    run, model, opt = run_with_two_checkpoints
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    runs.save_trainer(run, "rl", model, tok, opt, 3)
    assert runs.verify(run.path / "rl" / "ckpt") == "model.safetensors holds non-finite weights"
    assert runs.resume_trainer(run, "rl", model, opt) == 2      # the previous checkpoint, step 2


def test_both_damaged_is_one_line_naming_the_folder_to_delete(run_with_two_checkpoints):
    run, model, opt = run_with_two_checkpoints
    for name in ("ckpt", "ckpt.prev"):
        _damage(run.path / "rl" / name / "trainer.pt", "truncate")
    with pytest.raises(SystemExit) as e:
        runs.resume_trainer(run, "rl", model, opt)
    msg = str(e.value)
    assert "\n" not in msg and "no usable checkpoint of stage rl" in msg and f"delete {run.path / 'rl'}" in msg

_spec = importlib.util.find_spec   # the real one, for every other package

# -----------------------------------------------------------------------------
# --report-to: the scalars of metrics.jsonl, mirrored to a tracker


class FakeWandb:
    """Stands in for the wandb package: records init, every log call and finish."""

    def __init__(self):
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kw):
        self.inits.append(kw)
        return self

    def log(self, scalars, step):
        self.logged.append((step, scalars))

    def finish(self):
        self.finished += 1


def test_report_to_wandb_logs_the_scalars_of_metrics_jsonl(tmp_path, monkeypatch):
    import json
    import train
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else _spec(name, *a))
    out = tmp_path / "run"
    train.main(["--student", "tiny", "--train-n", "4", "--eval-n", "2", "--eval-max-new-tokens", "4", "--sft-batch", "4",
                "--rl-steps", "2", "--G", "2", "--k", "2", "--max-new-tokens", "4", "--no-zero-shot",
                "--report-to", "wandb", "--out", str(out)])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    want = [(r["step"], {f"{r['stage']}/{k}": float(v) for k, v in r.items()
                         if isinstance(v, (int, float)) and k != "step" and v == v}) for r in rows]
    assert fake.logged == want and len(want) >= 3            # every row, every numeric field, in order
    assert any("rl/reward" in s for _, s in fake.logged) and any("sft/loss" in s for _, s in fake.logged)
    assert fake.inits[0]["project"] == "exgrpo" and fake.inits[0]["config"]["report_to"] == "wandb"
    assert fake.finished == 1


def test_report_to_tensorboard_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is optional (pip install tensorboard)")
    tr = runs.Tracker("tensorboard", tmp_path, {})
    tr.log({"stage": "rl", "step": 3, "reward": 0.5, "note": "text is skipped"})
    tr.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_report_to_a_missing_package_is_one_line(capsys, monkeypatch):
    import train
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else _spec(name, *a))
    with pytest.raises(SystemExit) as e:
        train.get_args(["--student", "tiny", "--report-to", "wandb"])
    assert e.value.code == 2
    assert "--report-to wandb: the package is not installed; pip install wandb" in capsys.readouterr().err


def test_trim_log_skips_a_line_cut_by_a_crash(tmp_path, capsys):
    """Catches: --resume ending in a JSONDecodeError because a kill (or a full disk) cut the last
    line of metrics.jsonl. trim_log keeps every whole row outside the redone steps, drops the cut
    line, says so on stderr, and leaves no temp file behind."""
    import json
    path = tmp_path / "metrics.jsonl"
    rows = [{"stage": "sft", "step": 0}, {"stage": "rl", "step": 0}, {"stage": "rl", "step": 1},
            {"stage": "rl_eval", "step": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"stage": "rl", "step": 2, "loss": 0.1')
    runs.Run(tmp_path).trim_log("rl", 1)
    assert [json.loads(x) for x in path.read_text().splitlines()] == rows[:2]
    assert "1 metrics line(s) that do not parse" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
