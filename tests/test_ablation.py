"""bench/ablation.py's statistics on hand-made results (no model runs)."""
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import ablation  # noqa: E402
import paired  # noqa: E402


def test_summarize_by_hand():
    """Two seeds on 4 questions against a reference:
        seed A: 1 1 0 0 (0.50)   seed B: 1 0 1 1 (0.75)   reference: 1 0 0 0 (0.25)
    mean 0.625, s.e. over seeds sqrt(((-.125)^2 + .125^2) / 1 / 2) = 0.125;
    per-question diffs (mean over seeds - reference): 0, 0.5, 0.5, 0.5 -> mean 0.375,
    s.e. sqrt((0.375^2 + 3 * 0.125^2) / 3 / 4) = 0.125."""
    ids = ["q0", "q1", "q2", "q3"]
    run = lambda xs: {"test_id": dict(zip(ids, map(float, xs)))}
    row = ablation.summarize([run([1, 1, 0, 0]), run([1, 0, 1, 1])], run([1, 0, 0, 0]))["test_id"]
    assert row["mean"] == pytest.approx(0.625) and row["se_seeds"] == pytest.approx(0.125)
    assert row["paired_diff"] == pytest.approx(0.375) and row["paired_se"] == pytest.approx(0.125)
    # per seed: A - ref = (0 + 1 + 0 + 0) / 4 = 0.25, B - ref = (0 + 0 + 1 + 1) / 4 = 0.5;
    # their s.e. sqrt((0.125^2 * 2) / 1 / 2) = 0.125 (seed noise: here the same size by chance)
    assert row["paired_per_seed"] == pytest.approx([0.25, 0.5]) and row["paired_se_seeds"] == pytest.approx(0.125)
    # a column one seed lacks is summarized over the seeds that have it, not a KeyError
    half = ablation.summarize([run([1, 1, 0, 0]), {}], run([1, 0, 0, 0]))["test_id"]
    assert half["seeds"] == 1 and half["paired_diff"] == pytest.approx(0.25)
    # one run's s.e. over its questions: (1,1,0,0): sd sqrt(4 * .25 / 3), / sqrt(4) -> 0.2887;
    # (1,0,1,1): squared deviations .0625 * 3 + .5625 = .75, sd sqrt(.75 / 3) = .5, / 2 -> 0.25
    assert row["se_binomial"] == pytest.approx((math.sqrt(1 / 3) / 2 + 0.25) / 2)


def test_paired_by_hand(tmp_path, capsys):
    """bench/paired.py: b - a per question, in points. a 1 0 0 1, b 1 1 0 1: diffs 0 1 0 0, mean
    0.25; s.e. sqrt((3 * 0.25^2 + 0.75^2) / 3 / 4) = 0.25 -> (25.0, 25.0). Catches: a - b (the
    sign), a missing x 100, files compared on ids they do not all hold."""
    assert paired.paired([1, 0, 0, 1], [1, 1, 0, 1]) == pytest.approx((25.0, 25.0))
    files = []
    for name, xs in (("a", [1, 0, 0, 1, 1]), ("b", [1, 1, 0, 1])):   # a has one id more: left out
        f = tmp_path / name / "predictions_EI-Test.jsonl"
        f.parent.mkdir()
        f.write_text("".join(json.dumps({"id": f"q{i}", "correct": bool(x)}) + "\n" for i, x in enumerate(xs)))
        files.append(f)
    out = tmp_path / "paired.md"
    paired.main([str(f) for f in files] + ["--out", str(out)])
    text = out.read_text()
    assert "4 shared ids" in text and "| a | 50.0 |" in text and "| b | 75.0 |" in text
    assert "| b − a | +25.0 | 25.0 |" in text
    with pytest.raises(SystemExit):
        paired.main([str(files[0]), "--names", "x,y"])   # one name a file
    assert "--names gives 2 names for 1 files" in capsys.readouterr().err
    other = tmp_path / "dei.jsonl"
    other.write_text(json.dumps({"question": "?"}) + "\n")    # not a predictions file
    with pytest.raises(SystemExit, match="not a predictions file"):
        paired.main([str(files[0]), str(other)])
    # train.py's files all sit in RUN/rl/: the default names add the run folder
    assert paired.default_names([Path("r1/rl/p.jsonl"), Path("r2/rl/p.jsonl")]) == ["r1/rl", "r2/rl"]


def test_versus_by_hand():
    """A row against GRPO. a (2 seeds): 1 1 0 0 (0.50), 1 0 1 1 (0.75) -> 0.625 ± 0.125;
    GRPO (2 seeds): 1 0 0 0, 0 1 0 0 -> 0.25 ± 0 -> diff +0.375, se over seeds hypot(0.125, 0) = 0.125.
    Per question, seed means: a 1, .5, .5, .5; GRPO .5, .5, 0, 0 -> .5, 0, .5, .5: mean .375,
    s.e. sqrt((3 * .125^2 + .375^2) / 3 / 4) = 0.125."""
    ids = ["q0", "q1", "q2", "q3"]
    run = lambda xs: {"test_id": dict(zip(ids, map(float, xs)))}
    v = ablation.versus([run([1, 1, 0, 0]), run([1, 0, 1, 1])], [run([1, 0, 0, 0]), run([0, 1, 0, 0])])["test_id"]
    assert v["diff"] == pytest.approx(0.375) and v["se_seeds"] == pytest.approx(0.125)
    assert v["se_questions"] == pytest.approx(0.125) and v["seeds"] == [2, 2]
    # both rows' seed noise counts: GRPO at 0.25, 0.75 (se 0.25) -> hypot(0.125, 0.25)
    w = ablation.versus([run([1, 1, 0, 0]), run([1, 0, 1, 1])], [run([1, 0, 0, 0]), run([1, 1, 1, 0])])["test_id"]
    assert w["diff"] == pytest.approx(0.125) and w["se_seeds"] == pytest.approx(math.hypot(0.125, 0.25))


def test_table_has_the_sampled_column_paired_with_sft(tmp_path):
    """A fake ablation folder (predictions + cached sampled shares): the T = 1 column and its
    paired difference come out as computed by hand."""
    def fake(path, stage, greedy, shares):
        (path / stage).mkdir(parents=True)
        (path / "results.json").write_text("{}")
        (path / "config.json").write_text(json.dumps({"eval_n": 2, "level": 1, "eval_max_new_tokens": 8}))
        for split in ablation.SPLITS:
            (path / stage / f"predictions_{split}.jsonl").write_text(
                "".join(json.dumps({"id": f"q{i}", "correct": bool(c)}) + "\n" for i, c in enumerate(greedy)))
        (path / stage / "sampled_test_id_8_2.json").write_text(json.dumps({f"q{i}": x for i, x in enumerate(shares)}))
    fake(tmp_path / "sft", "sft", [1, 0], [0.5, 0.25])
    fake(tmp_path / "seed0" / ablation.slug("SFT + GRPO"), "rl", [1, 0], [0.75, 0.5])
    fake(tmp_path / "seed0" / ablation.slug("SFT + ExGRPO + aux + DSU"), "rl", [1, 1], [1.0, 0.5])
    fake(tmp_path / "seed0" / "fraction_0.1", "rl", [0, 0], [0.25, 0.0])   # scored like a variant
    fake(tmp_path / "seed0" / "fraction_0.1", "sft", [0, 1], [0.0, 0.5])   # the fraction's own warm-up
    text = ablation.table(tmp_path, [0], [0.1])
    rows = json.loads((tmp_path / "ablation.json").read_text())["rows"]
    frac = rows["SFT + ExGRPO on 10% of the data"]
    assert frac["test_id"]["paired_diff"] == pytest.approx(-0.5)
    assert frac[ablation.SAMPLED]["paired_diff"] == pytest.approx(-0.25)   # (-0.25 - 0.25) / 2
    warm = rows["SFT on 10% of the data"]                                     # its warm-up: (0, 1) vs (1, 0)
    assert warm["test_id"]["mean"] == pytest.approx(0.5) and warm["test_id"]["paired_diff"] == pytest.approx(0.0)
    assert list(rows).index("SFT on 10% of the data") < list(rows).index("SFT + ExGRPO on 10% of the data")
    cell = rows["SFT + GRPO"][ablation.SAMPLED]
    assert cell["mean"] == pytest.approx(0.625) and cell["paired_diff"] == pytest.approx(0.25)
    assert cell["paired_se"] == pytest.approx(0.0)                    # +0.25 on both questions
    assert rows["SFT + GRPO"]["test_id"]["paired_diff"] == 0          # greedy unchanged
    assert "62.5 ± 0.0" in text and "+25.0 ± 0.0 seeds, ± 0.0 questions" in text
    # the full method against GRPO: greedy (1, 1) - (1, 0) = +0.5; T = 1 (1.0, 0.5) - (0.75, 0.5) = +0.125
    vs = json.loads((tmp_path / "ablation.json").read_text())["versus"]["SFT + GRPO"]
    assert set(vs) == {"SFT + ExGRPO + aux + DSU"}                    # GRPO is not put against itself
    assert vs["SFT + ExGRPO + aux + DSU"]["test_id"]["diff"] == pytest.approx(0.5)
    assert vs["SFT + ExGRPO + aux + DSU"][ablation.SAMPLED]["diff"] == pytest.approx(0.125)
    assert "| SFT + ExGRPO + aux + DSU | +50.0 ± 0.0 seeds, ± 50.0 questions (1 vs 1) |" in text


def test_table_has_the_ei_test_column_paired_with_sft(tmp_path, monkeypatch):
    """--ei-n: the EI-Test column from each run's cached probe scores, paired with SFT on the same
    probes. By hand: SFT right on probes (p0, p1, p2, p3) = (1, 0, 0, 1), the variant's seeds
    (1, 1, 0, 1) and (1, 1, 1, 1): means 0.75 and 1.0 -> 0.875 ± 0.125; per probe (seeds averaged)
    minus SFT: 0, 1, 0.5, 0 -> +0.375; per seed: +0.25 and +0.5 -> s.e. 0.125. A run without a
    cache is scored once (the scorer's n is --ei-n), and no column without --ei-n."""
    asked = []

    def fake(path, stage, ei):
        (path / stage).mkdir(parents=True)
        (path / "results.json").write_text("{}")
        (path / "config.json").write_text(json.dumps({"eval_n": 2, "level": 1, "dataset": "synth", "seed": 0,
                                                      "eval_max_new_tokens": 8}))
        (path / stage / "predictions_test_id.jsonl").write_text(json.dumps({"id": "q0", "correct": True}) + "\n")
        if ei is not None:
            (path / stage / "ei_test_4.json").write_text(json.dumps({f"p{i}": float(x) for i, x in enumerate(ei)}))
    fake(tmp_path / "sft", "sft", [1, 0, 0, 1])
    fake(tmp_path / "seed0" / ablation.slug("SFT + GRPO"), "rl", [1, 1, 0, 1])
    fake(tmp_path / "seed1" / ablation.slug("SFT + GRPO"), "rl", None)     # not scored yet
    real = ablation.ei_scores

    def scorer(path, stage, n=0, *a):   # the model's part: only where no cache is (seed 1, all right)
        if not (path / stage / f"ei_test_{n}.json").exists():
            asked.append((path.parent.name, n))
            (path / stage / f"ei_test_{n}.json").write_text(json.dumps({f"p{i}": 1.0 for i in range(4)}))
        return real(path, stage, n)
    monkeypatch.setattr(ablation, "ei_scores", scorer)
    assert ablation.EI not in ablation.table(tmp_path, [0, 1], [], samples=0)   # no --ei-n: no column, nothing scored
    assert asked == []
    text = ablation.table(tmp_path, [0, 1], [], samples=0, ei_n=4, flags={"rl": "--rl-steps 3"})
    assert asked == [("seed1", 4)]
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["flags"] == {"rl": "--rl-steps 3"}            # what reproduces the table travels with it
    cell = saved["rows"]["SFT + GRPO"][ablation.EI]
    assert cell["mean"] == pytest.approx(0.875) and cell["se_seeds"] == pytest.approx(0.125)
    assert cell["paired_diff"] == pytest.approx(0.375) and cell["paired_se_seeds"] == pytest.approx(0.125)
    assert f"{ablation.EI} (%)" in text.splitlines()[0]


def test_rescore_scores_a_final_model_once_and_caches_it(tmp_path):
    """Greedy 0/1 and sampled shares (multiples of 1/samples) on the first n fixed questions,
    keyed by question id; the second call reads the cache instead of generating."""
    from models import micro_model, micro_tokenizer
    tok = micro_tokenizer()
    micro_model(tok, seed=0).save_pretrained(tmp_path / "rl" / "final")
    tok.save_pretrained(tmp_path / "rl" / "final")
    (tmp_path / "config.json").write_text(json.dumps({"eval_n": 500, "level": 1, "eval_max_new_tokens": 6}))
    greedy = ablation.rescore(tmp_path, "rl", "test_id", n=3)
    shares = ablation.rescore(tmp_path, "rl", "test_id", samples=4, n=3)
    import data
    ids = [r["id"] for r in data.load("synth", "test_id", limit=3, level=1)]
    assert list(greedy) == ids and set(greedy.values()) <= {0.0, 1.0}
    assert list(shares) == ids and all(4 * x == int(4 * x) and 0 <= x <= 1 for x in shares.values())
    cache = tmp_path / "rl" / "greedy_test_id_3.json"
    cache.write_text(json.dumps({"x": 1.0}))
    assert ablation.rescore(tmp_path, "rl", "test_id", n=3) == {"x": 1.0}


def test_jobs_run_side_by_side_after_the_warm_up(tmp_path, monkeypatch):
    # --jobs 2: the shared warm-up first, alone, on every core; then the RL and fraction runs,
    # at most 2 at once, each on its share of the cores
    import threading
    import time
    running, peak, order, lock, seen_threads = [0], [0], [], threading.Lock(), []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(ablation.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})

    def fake_launch(path, flags, log, threads=None):
        with lock:
            order.append((path.relative_to(tmp_path).as_posix(), running[0]))
            seen_threads.append(threads)
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return path
    monkeypatch.setattr(ablation, "launch", fake_launch)
    monkeypatch.setattr(ablation, "table", lambda *a: "")
    monkeypatch.setattr(sys, "argv", ["ablation.py", "--out", str(tmp_path), "--jobs", "2", "--seeds", "0,1",
                                      "--variants", "SFT + GRPO,SFT + ExGRPO + aux + DSU", "--fractions", "0.1"])
    ablation.main()
    assert order[0] == ("sft", 0)                                   # alone: every RL run needs it
    assert sorted(p for p, _ in order[1:]) == ["seed0/fraction_0.1", "seed0/sft___exgrpo___aux___dsu",
                                               "seed0/sft___grpo", "seed1/sft___exgrpo___aux___dsu", "seed1/sft___grpo"]
    # longest first: the fraction run (SFT + RL) starts with the warm-up done, the GRPO runs go last
    assert order[1][0] == "seed0/fraction_0.1" and {p for p, _ in order[-2:]} == {"seed0/sft___grpo", "seed1/sft___grpo"}
    assert peak[0] == 2
    assert seen_threads == [None] + [2] * 5                        # the warm-up all cores, then 4 // 2 each


def test_a_failed_run_stops_the_jobs(tmp_path, monkeypatch):
    # with --jobs 2, the first RL run fails: the run beside it finishes, no new run starts
    import time
    started = []

    def fake_launch(path, flags, log, threads=None):
        started.append(path.name)
        if path.as_posix().endswith("seed0/sft___exgrpo___aux___dsu"):   # the first RL run queued
            raise SystemExit(f"error: {path} failed")
        time.sleep(0.2 * (path.name != "sft"))   # a run takes a while: the failure lands while one is going
        return path
    monkeypatch.setattr(ablation, "launch", fake_launch)
    monkeypatch.setattr(sys, "argv", ["ablation.py", "--out", str(tmp_path), "--jobs", "2", "--seeds", "0,1,2",
                                      "--variants", "SFT + GRPO,SFT + ExGRPO + aux + DSU", "--fractions", ""])
    with pytest.raises(SystemExit, match="failed"):
        ablation.main()
    assert started[0] == "sft" and len(started) <= 4     # of 1 + 6: at most one more got going


def test_launch_writes_its_log_beside_a_run_folder_that_does_not_exist_yet(tmp_path, monkeypatch):
    # --jobs gives each run its log <seed folder>/<run>.log before train.py has made that folder
    calls = []
    monkeypatch.setattr(ablation.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)) or
                        type("Done", (), {"returncode": 0})())
    run = tmp_path / "seed0" / "sft___grpo"
    assert ablation.launch(run, ["--no-probes"], run.parent / "sft___grpo.log", threads=1) == run
    assert (tmp_path / "seed0" / "sft___grpo.log").exists()
    cmd, kw = calls[0]
    assert cmd[1:] == ["train.py", "--no-probes", "--out", str(run)] and kw["env"]["OMP_NUM_THREADS"] == "1"


def test_the_gkd_row_needs_its_teacher_and_gets_it(tmp_path, monkeypatch):
    """'SFT + GKD (reference)': not in the default variants; named without --gkd-teacher, a one-line
    error before anything runs; with it, the run gets --method gkd, the teacher and the warm-up."""
    launched = {}
    monkeypatch.setattr(ablation, "launch", lambda path, flags, log, threads=None: launched.setdefault(
        path.relative_to(tmp_path).as_posix(), flags) and path)
    monkeypatch.setattr(ablation, "table", lambda *a: "")
    assert ablation.GKD not in ablation.DEFAULT_VARIANTS
    argv = ["ablation.py", "--out", str(tmp_path), "--seeds", "0", "--fractions", "", "--variants", ablation.GKD]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="--gkd-teacher"):
        ablation.main()
    assert launched == {}
    monkeypatch.setattr(sys, "argv", argv + ["--gkd-teacher", "hf:runs/methods/teacher/sft/final"])
    ablation.main()
    flags = launched["seed0/sft___gkd__reference"]
    assert flags[flags.index("--method") + 1] == "gkd"
    assert flags[flags.index("--gkd-teacher") + 1] == "hf:runs/methods/teacher/sft/final"
    assert flags[flags.index("--sft-from") + 1] == str(tmp_path / "sft" / "sft" / "final")
