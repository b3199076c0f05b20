"""train.py end to end on the tiny model: stages, checkpoints, kill + resume, bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import data
import decode
import exgrpo
import models
import probes
import train

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--student", "tiny", "--train-n", "6", "--eval-n", "2", "--eval-max-new-tokens", "6",
        "--sft-batch", "4", "--rl-questions", "1", "--G", "2", "--k", "2", "--max-new-tokens", "6",
        "--save-every", "1"]


def _metrics(run, stage):
    rows = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r["stage"] == stage]


def test_tiny_run_end_to_end(tmp_path):
    out = tmp_path / "run"
    train.main(TINY + ["--rl-steps", "2", "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    assert [row["stage"] for row in res["table"]] == ["zero-shot", "SFT warm-up", "ExGRPO"]
    assert _metrics(out, "rl") == [0, 1]
    n_sft = len(_metrics(out, "sft"))
    assert n_sft >= 2 and _metrics(out, "sft") == list(range(n_sft))
    # checkpoints load with plain transformers, and each stage changed the weights
    from transformers import AutoModelForCausalLM
    sft = AutoModelForCausalLM.from_pretrained(out / "sft" / "final")
    rl = AutoModelForCausalLM.from_pretrained(out / "rl" / "final")
    init = models.tiny_model(models.smollm2_tokenizer(), seed=0)
    w = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(sft.state_dict()[w], init.state_dict()[w])
    assert not torch.equal(rl.state_dict()[w], sft.state_dict()[w])
    assert not (out / "rl" / "ckpt").exists()  # the step checkpoint is gone once the stage is final
    # the D_EI of the run is kept beside it, with probes
    dei = [json.loads(x) for x in (out / "dei.jsonl").read_text().splitlines()]
    assert len(dei) == 6 and all(d["probes"] for d in dei)
    # a finished run folder is never overwritten, and nothing in it is touched
    before = (out / "results.json").read_text()
    with pytest.raises(SystemExit, match="already holds a finished run"):
        train.main(TINY + ["--out", str(out)])
    with pytest.raises(SystemExit, match="finished run; nothing to resume"):
        train.main(["--resume", str(out)])
    assert (out / "results.json").read_text() == before


def test_kill_and_resume_after_a_damaged_checkpoint_loses_and_repeats_no_step(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "train.py"] + TINY + ["--rl-steps", "5", "--out", str(out)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "rl" / "ckpt.prev" / "trainer.pt").exists():   # two checkpoints on disk
        assert proc.poll() is None, "the run ended before its first RL checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # a crash: no cleanup, no final save
    proc.wait()
    assert not (out / "results.json").exists()
    killed_at = _metrics(out, "rl")
    assert len(killed_at) < 5
    # the newest checkpoint is damaged on top of the crash: resume falls back to the previous one
    newest = out / "rl" / "ckpt"
    if newest.exists():
        with open(newest / "model.safetensors", "r+b") as f:
            f.truncate(100)
    subprocess.run([sys.executable, "train.py", "--resume", str(out)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert _metrics(out, "rl") == [0, 1, 2, 3, 4]         # every step once, none lost, none repeated
    state = json.loads((out / "state.json").read_text())
    assert set(state["done"]) >= {"zero_shot", "ei", "sft", "eval_sft", "rl", "eval_rl"}
    # ...and it ends where a run that was never killed ends: the same weights, the same rewards
    whole = tmp_path / "whole"
    subprocess.run(cmd[:-1] + [str(whole)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    from safetensors.torch import load_file
    a, b = load_file(out / "rl" / "final" / "model.safetensors"), load_file(whole / "rl" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    rewards_of = lambda run: [r["reward"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                              if r["stage"] == "rl"]
    assert rewards_of(out) == rewards_of(whole)


def test_a_resumed_run_reports_the_time_of_its_killed_attempt(tmp_path, monkeypatch):
    """Catches: results.json's stage time counting only the last process of a resumed run.
    A fake clock that only the RL steps move, 10 s a step; --save-every 1 checkpoints after steps
    0, 1, 2; the first attempt dies inside step 3 (its 10 s are redone, not counted); the resume
    runs steps 3 and 4. By hand: 3 x 10 before the checkpoint + 2 x 10 after = 50 s (not 20)."""
    now = [0.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    step = exgrpo.exgrpo_step

    def ticking(args, model, ref, tok, opt, questions, i):
        now[0] += 10.0
        if i == 3 and not ticking.resumed:
            raise RuntimeError("killed in step 3")
        return step(args, model, ref, tok, opt, questions, i)

    ticking.resumed = False
    monkeypatch.setattr(exgrpo, "exgrpo_step", ticking)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="killed in step 3"):
        train.main(TINY + ["--rl-steps", "5", "--no-zero-shot", "--out", str(out)])
    ticking.resumed = True
    train.main(["--resume", str(out)])
    assert _metrics(out, "rl") == [0, 1, 2, 3, 4]
    assert json.loads((out / "results.json").read_text())["timing"]["rl"] == 50.0


def test_the_reference_of_stage_3_is_the_sft_checkpoint(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM
    seen = []
    real_step = exgrpo.exgrpo_step
    monkeypatch.setattr(exgrpo, "exgrpo_step", lambda cfg, model, ref, *a, **k: seen.append(
        {n: p.detach().clone() for n, p in ref.named_parameters()}) or real_step(cfg, model, ref, *a, **k))
    out = tmp_path / "run"
    train.main(TINY + ["--rl-steps", "2", "--no-zero-shot", "--out", str(out)])
    sft = dict(AutoModelForCausalLM.from_pretrained(out / "sft" / "final").named_parameters())
    untouched = dict(train.models.load_student("tiny", seed=0)[0].named_parameters())
    assert len(seen) == 2
    for name, p in seen[-1].items():   # after an RL step, the reference is still the warm-up
        assert torch.equal(p, sft[name].detach()), name
    assert any(not torch.equal(sft[n], untouched[n]) for n in sft)   # and the warm-up did move


def test_resume_refuses_a_flag_that_differs_from_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(vars(train.get_args(["--G", "4"]))))
    assert train.get_args(["--resume", str(out), "--G", "4"]).G == 4   # the same value is fine
    with pytest.raises(SystemExit) as e:
        train.get_args(["--resume", str(out), "--G", "8"])
    assert e.value.code == 2
    assert "--G 8 differs from the resumed run's 4" in capsys.readouterr().err


# (the full table of bad flags of the three command lines is tests/test_bad_input.py)
@pytest.mark.parametrize("argv, message", [
    (["--student", "no-such-model"], "unknown student 'no-such-model'"),
    (["--student", "/no/such/folder"], "no folder at"),
    (["--dataset", "imagenet"], "--dataset imagenet: unknown; choose one of"),
    (["--k", "0"], "must be >= 1"),
])
def test_bad_flags_exit_with_a_clear_message(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(argv + ["--out", str(tmp_path / "run")])
    assert message in str(e.value) + capsys.readouterr().err
    assert not (tmp_path / "run").exists()   # nothing written for a run that never started


def test_folder_without_a_model_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no model weights found"):
        train.main(["--student", str(empty), "--out", str(tmp_path / "run")])


def test_dataset_with_zero_usable_rows(tmp_path):
    d = tmp_path / "data" / "strategyqa" / "revthink"
    (d / "training_data").mkdir(parents=True)
    (d / "test_data").mkdir(parents=True)
    (d / "training_data" / "SQA.json").write_text(json.dumps([{"question": "", "gold_answer": "yes"},
                                                              {"gold_answer": "no"}]))
    (d / "test_data" / "SQA_test.json").write_text(json.dumps([{"question": "Is it?", "gold_answer": "yes"}]))
    with pytest.raises(SystemExit, match=r"strategyqa train: no usable record in .*SQA\.json \(2 malformed"):
        train.main(["--student", "tiny", "--dataset", "strategyqa", "--data-dir", str(tmp_path / "data"),
                    "--teacher", "none", "--out", str(tmp_path / "run")])   # the oracle knows no text dataset
    assert not (tmp_path / "run").exists()


def test_length_grouped_batches_cover_each_example_once_with_less_padding():
    import random
    assert sorted(map(sorted, train.length_grouped_batches([5, 50, 6, 49], 2, seed=0))) == [[0, 2], [1, 3]]
    lengths = [random.Random(i).randint(10, 300) for i in range(200)]
    batches = train.length_grouped_batches(lengths, 8, seed=3)
    assert sorted(j for b in batches for j in b) == list(range(200))          # each example once
    assert batches == train.length_grouped_batches(lengths, 8, seed=3)        # same on resume
    assert batches != train.length_grouped_batches(lengths, 8, seed=4)        # a new order each epoch
    padded = sum(len(b) * max(lengths[j] for j in b) for b in batches)
    order = random.Random(3).sample(range(200), 200)
    padded_random = sum(8 * max(lengths[j] for j in order[i:i + 8]) for i in range(0, 200, 8))
    assert padded < 0.85 * padded_random


def test_sft_dialogues_are_stage_3_dialogues_answered_by_the_teacher(capsys):
    """--sft-dialogues N: per question N more SFT examples in Scenario A/B's form: 1..k RL probes
    (kept, never stating Q's answer), each with the teacher's answer, then Q with its reasoning."""
    import argparse
    recs = data.load("synth", "train", limit=30, seed=0, level=1)
    dei, _ = probes.build_dei(recs, "oracle", probe_writer="template", progress=False)
    args = argparse.Namespace(seed=0, sft_probes=0, sft_dialogues=2, k=3)
    pairs = train.sft_examples(args, recs, dei)
    with_probes = [r for r in dei if probes.rl_probes(r)]
    assert len(pairs) == len(dei) + 2 * len(with_probes) and len(with_probes) > 20
    by_q = {data.user_message(r): r for r in dei}
    dialogues = [t for t in pairs if len(t) > 1]
    assert len(dialogues) == 2 * len(with_probes) and {len(t) for t in dialogues} <= {2, 3, 4}
    assert {len(t) for t in dialogues} == {2, 3, 4}                # j uniform in [1, k]: all appear
    for turns in dialogues:
        r = by_q[turns[-1][0]]
        assert turns[-1][1] == r["reasoning"]                       # the question comes last
        safe = {exgrpo.probe_message(p): p["teacher_reasoning"] for p in probes.rl_probes(r)}
        assert all(safe.get(u) == a for u, a in turns[:-1])         # only leak-free probes, teacher answers
        assert len({u for u, _ in turns[:-1]}) == len(turns) - 1    # drawn without replacement
    assert len(train.sft_examples(argparse.Namespace(seed=0, sft_probes=0, sft_dialogues=0, k=3), recs, dei)) \
        == len(dei)


def test_decode_flag_picks_the_decode_loop(tmp_path, monkeypatch):
    """--decode: the default (auto) is decode.py's measured default, the lean sampler on the CPU,
    even after something in the process turned the static step on; --decode static sends the RL
    rollouts through decode.py's static step (eagerly, no compile)."""
    assert decode.DEFAULTS[0]["cpu"] is False and decode.DEFAULTS[1]["cpu"] is False
    monkeypatch.setitem(decode.STATIC, "cpu", True)       # set by an earlier run; restored after the test
    monkeypatch.setitem(decode.COMPILE, "cpu", False)
    in_rl = []                                            # static decode calls made inside an RL step
    step = exgrpo.exgrpo_step

    def counted(*a, **k):
        before = decode.STATS["calls"]
        out = step(*a, **k)
        in_rl.append(decode.STATS["calls"] - before)
        return out
    monkeypatch.setattr(exgrpo, "exgrpo_step", counted)
    quick = TINY + ["--rl-steps", "1", "--no-zero-shot", "--sft-epochs", "1", "--eval-n", "1"]
    train.main(quick + ["--out", str(tmp_path / "auto")])
    assert in_rl == [0] and decode.STATIC["cpu"] is False
    train.main(quick + ["--decode", "static", "--out", str(tmp_path / "static")])
    assert in_rl[1] > 0
    assert (decode.STATIC["cpu"], decode.COMPILE["cpu"]) == (True, False)


def test_an_evaluation_stage_killed_midway_keeps_its_answers_on_resume(tmp_path, tok):
    """Catches: train.py's zero_shot / eval_sft / eval_rl stages regenerating every answer after a
    kill (their predictions file was started anew), while the held-out evals inside RL must start
    anew (their step is redone with other weights). Question 0's answer is planted as a killed
    attempt would leave it, 'The answer is <gold>.': the stage keeps and scores it (1 of 1 right,
    where the untrained model answers nothing right), the held-out eval does not."""
    import runs
    args = train.get_args(["--student", "tiny", "--eval-max-new-tokens", "4"])
    rec = data.load("synth", "test_id", limit=1)[0]
    model = models.tiny_model(tok, seed=0).eval()
    run = runs.Run(tmp_path)
    for stage, resume, want in (("sft", True, 1.0), ("rl/eval_step5", False, 0.0)):
        path = tmp_path / stage / "predictions_test_id.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"id": rec["id"], "question": rec["question"],
                                    "generated": f"The answer is {rec['answer']}.", "finished": True}) + "\n")
        accs = train.eval_all(args, run, stage, model, tok, {"test_id": [rec]}, quiet=True, resume=resume)
        assert accs["test_id"] == want, stage
