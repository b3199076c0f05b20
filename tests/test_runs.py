"""runs.py: checkpoints that survive corruption (each file truncated, emptied or overwritten with
random bytes in turn), the fallback to the previous checkpoint, and the one-line error.

    python -m pytest tests/test_runs.py -q
"""
import os

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
