"""Several processes (dist.py: torchrun + FSDP2), on the CPU with gloo: two processes take the
update one process takes on the same global batch (an SFT step, a GRPO step, an ExGRPO step),
train.py runs every stage under torchrun and resumes a killed run to the uninterrupted run's
weights, and a process that fails stops them all with one line.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_dist.py

Tolerance: float sums in another order. Metrics agree to 1e-4 (relative), weights after three
AdamW steps at lr 1e-3 to 2e-5 (a sign flip of one near-zero gradient would move a weight 2e-3).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
TINY = ["--student", "tiny", "--train-n", "8", "--eval-n", "4", "--G", "2", "--k", "2", "--max-new-tokens", "8",
        "--eval-max-new-tokens", "8", "--sft-batch", "4", "--sft-micro", "2", "--rl-micro", "2",
        "--rl-questions", "2", "--no-zero-shot"]


def run(cmd, timeout=240, **kw):
    return subprocess.run(cmd, cwd=ROOT, env={**ENV, **kw.pop("env", {})}, capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    """The worker's results, in one process and in two."""
    d = tmp_path_factory.mktemp("dist")
    r1 = run([sys.executable, "tests/dist_worker.py", str(d / "one.pt")])
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run(TORCHRUN + ["tests/dist_worker.py", str(d / "two.pt")])
    assert r2.returncode == 0, r2.stderr[-2000:]
    return [torch.load(d / f"{n}.pt", weights_only=False) for n in ("one", "two")]


@pytest.mark.parametrize("step", ["sft", "grpo", "exgrpo"])
def test_two_processes_log_what_one_process_logs(one_and_two, step):
    one, two = (r["rows"][step] for r in one_and_two)
    assert one_and_two[1]["world"] == 2
    keys = [k for k, v in one.items() if isinstance(v, (int, float)) and "second" not in k and "per_s" not in k]
    assert len(keys) >= 3
    for k in keys:
        assert two[k] == pytest.approx(one[k], rel=1e-4, abs=1e-7), k
    if step != "sft":   # the scripted groups hold right and wrong answers: a real policy gradient
        assert 0 < one["reward"] < 1 and one["adv_abs"] > 0 and one["kl"] > 0


def test_two_processes_end_with_the_weights_of_one(one_and_two):
    one, two = (r["weights"] for r in one_and_two)
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=2e-5, msg=name)


def test_a_failing_process_stops_every_process_in_one_line(tmp_path):
    t0 = time.time()
    r = run(TORCHRUN + ["tests/dist_worker.py", str(tmp_path / "x.pt")], env={"DIST_WORKER_FAIL_RANK": "1"})
    assert r.returncode != 0 and time.time() - t0 < 120   # no wait for a collective that never comes
    ours = [x for x in r.stderr.splitlines() if x.startswith("rank ")]
    assert ours == ["rank 1: error: RuntimeError: rank 1 fails on purpose"]
    assert "[rank1]: Traceback" not in r.stderr


def test_a_non_finite_loss_on_one_process_is_skipped_on_every_process(tmp_path):
    """Catches: a process that skips its non-finite micro-batch (P6) while the others run its
    backward, a collective under FSDP2: they would wait for it forever (or pair up the wrong
    micro-batches' gradients). Rank 1's first RL micro-batch loss is NaN: every process runs that
    backward (times 0), the poisoned gradient is not stepped on by any of them (the GRPO step's
    norm is not finite), the weights stay finite, and the next step (ExGRPO) trains as usual."""
    r = run(TORCHRUN + ["tests/dist_worker.py", str(tmp_path / "nan.pt")], env={"DIST_WORKER_NAN_RANK": "1"},
            timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    out = torch.load(tmp_path / "nan.pt", weights_only=False)
    grpo = out["rows"]["grpo"]
    assert grpo["skipped_micro"] == 2          # micro-batch 0 of each of the two processes
    assert not torch.isfinite(torch.tensor(grpo["grad_norm"]))   # the step was not taken, on either
    exg = out["rows"]["exgrpo"]
    assert exg["skipped_micro"] == 0 and torch.isfinite(torch.tensor(exg["grad_norm"])) and exg["grad_norm"] > 0
    assert all(torch.isfinite(w).all() for w in out["weights"].values())


def test_train_runs_every_stage_under_torchrun_and_resumes_a_killed_run(tmp_path):
    """An uninterrupted 2-process run, and one killed after its first RL checkpoint and resumed
    (by torchrun again): the same final weights, loadable by from_pretrained; one results table."""
    from transformers import AutoModelForCausalLM
    steps = ["--rl-steps", "3", "--save-every", "1"]
    whole = run(TORCHRUN + ["train.py", *TINY, *steps, "--out", str(tmp_path / "whole")], timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert (tmp_path / "whole" / "results.md").is_file()
    # the run to kill: after the checkpoint of RL step 1, every process of it
    proc = subprocess.Popen(TORCHRUN + ["train.py", *TINY, *steps, "--out", str(tmp_path / "killed")], cwd=ROOT,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = tmp_path / "killed" / "rl" / "ckpt" / "trainer.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    # torchrun starts each worker in a session of its own: kill them by their command line, then it
    subprocess.run(["pkill", "-9", "-f", str(tmp_path / "killed")], check=False)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (tmp_path / "killed" / "rl" / "final").exists(), "killed too late"
    resumed = run(TORCHRUN + ["train.py", "--resume", str(tmp_path / "killed")], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "whole" / "rl" / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "killed" / "rl" / "final").state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=2e-5, msg=name)
    rows = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["stage"] == "rl"] == [0, 1, 2]   # one line per step, none twice
