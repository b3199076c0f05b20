"""evaluate.py: predictions, accuracy, --resume, clear errors, the multi-row table, EI-Test.

Generation is replaced by a fake that answers from the prompt's text wherever the test
needs known outputs; one test runs the tiny random model for real."""
import json

import pytest

import evaluate
import report
import models
import sample
from sample import Generation

# -----------------------------------------------------------------------------
# helpers


def fake_generate(tok, answer_for, calls=None):
    """A stand-in for sample.generate: answer_for(prompt text) -> the completion text;
    every prompt it is asked is appended to `calls`."""
    def generate(model, tokenizer, prompts, n=1, max_new_tokens=128, temperature=1.0, batch_size=64):
        texts = [answer_for(tok.decode(p)) for p in prompts]
        if calls is not None:
            calls.extend(texts)
        return Generation(list(prompts), [[2]] * len(prompts), texts, [True] * len(prompts))
    return generate


def records3():
    """Three questions; the fake below gets the first two right and the third wrong."""
    return [{"id": f"q{i}", "question": f"What is {i} plus {i}?", "answer": str(2 * i),
             "answer_type": "number", "reasoning": ""} for i in (1, 2, 3)]


def answer_two_of_three(prompt):
    for i in (1, 2, 3):
        if f"What is {i} plus {i}?" in prompt:
            return f"{i} + {i} = {2 * i if i < 3 else 7}. The answer is {2 * i if i < 3 else 7}."
    return "I do not know."


def write_strategyqa(root, rows):
    path = root / "strategyqa" / "revthink" / "test_data" / "SQA_test.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rows))
    return root

# -----------------------------------------------------------------------------
# scoring


def test_predictions_rows_and_fields_with_the_tiny_model(tok, tiny, tmp_path):
    import data
    records = data.load("synth", "test_id", limit=3)
    path = tmp_path / "p.jsonl"
    res = evaluate.evaluate(tiny, tok, records, batch_size=2, max_new_tokens=4, predictions_path=path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in records)
    for row in rows:
        assert {"id", "question", "gold", "answer_type", "generated", "finished", "extracted", "correct"} <= set(row)
        assert isinstance(row["generated"], str) and isinstance(row["correct"], bool)
    assert res["n"] == 3 and res["generated"] == 3
    assert res["accuracy"] == sum(r["correct"] for r in rows) / 3


def test_accuracy_of_a_hand_made_case(tok, tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(sample, "generate", fake_generate(tok, answer_two_of_three))
    res = evaluate.evaluate(tiny, tok, records3(), predictions_path=tmp_path / "p.jsonl")
    assert (res["correct"], res["n"]) == (2, 3) and res["accuracy"] == pytest.approx(2 / 3)
    assert res["stderr"] == pytest.approx((2 / 3 * 1 / 3 / 3) ** 0.5)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    assert rows["q1"]["extracted"] == "2" and rows["q3"]["extracted"] == "7" and not rows["q3"]["correct"]


def test_resume_skips_scored_ids_and_rescores_stale_ones(tok, tiny, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sample, "generate", fake_generate(tok, answer_two_of_three, calls))
    path = tmp_path / "p.jsonl"
    evaluate.evaluate(tiny, tok, records3()[:2], predictions_path=path)
    assert len(calls) == 2
    with open(path, "a") as f:
        f.write('{"id": "q3", "quest')  # a line cut by a crash
    res = evaluate.evaluate(tiny, tok, records3(), predictions_path=path, resume=True)
    assert len(calls) == 3 and res["generated"] == 1 and res["correct"] == 2
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["q1", "q2", "q3"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["correct"] = False  # a stale verdict: resumed texts are scored again
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = evaluate.evaluate(tiny, tok, records3(), predictions_path=path, resume=True)
    assert len(calls) == 3 and res["generated"] == 0 and res["accuracy"] == pytest.approx(2 / 3)
    changed = records3()
    changed[0]["question"] = "What is 1 plus 1? (reworded)"  # same id, another question: asked again
    evaluate.evaluate(tiny, tok, changed, predictions_path=path, resume=True)
    assert len(calls) == 4
    evaluate.evaluate(tiny, tok, records3(), predictions_path=path)  # no --resume: all asked again
    assert len(calls) == 7


def test_means_need_every_dataset_of_their_group():
    from data.real import ID_DATASETS, OOD_DATASETS
    scores = {n: 0.5 for n in ID_DATASETS} | {OOD_DATASETS[0]: 1.0}
    row = report.with_means(scores)
    assert row["ID mean"] == pytest.approx(0.5) and "OOD mean" not in row
    cols = report.ordered_columns({"a": row})
    assert cols == [*ID_DATASETS, "ID mean", OOD_DATASETS[0]]

# -----------------------------------------------------------------------------
# command line: errors, malformed rows, the table


@pytest.mark.parametrize("argv, expected", [
    (["--datasets", "strategyqa,nosuchset"], "unknown dataset nosuchset"),
    (["--datasets", "gsm8k", "--data-dir", "/nonexistent/exgrpo-data"], "--data-dir /nonexistent/exgrpo-data: no folder"),
    (["--ei-test", "/nonexistent/dei.jsonl", "--datasets", "none"], "--ei-test /nonexistent/dei.jsonl: no file at"),
    (["--datasets", "none"], "nothing to evaluate"),
])
def test_bad_arguments_exit_with_a_clear_message(argv, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, "load_student", lambda *a, **k: pytest.fail("model loaded before the data"))
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--student", "tiny", "--out", str(tmp_path), *argv])
    assert e.value.code == 2 and expected in capsys.readouterr().err


def test_missing_dataset_file_names_the_expected_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, "load_student", lambda *a, **k: pytest.fail("model loaded before the data"))
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--student", "tiny", "--datasets", "boolq", "--data-dir", str(tmp_path), "--out", str(tmp_path)])
    assert e.value.code == 2
    assert str(tmp_path / "boolq" / "revthink" / "test_data" / "BoolQ_test.json") in capsys.readouterr().err


def test_malformed_rows_are_counted_and_skipped(tok, tiny, tmp_path, monkeypatch, capsys):
    root = write_strategyqa(tmp_path / "data", [
        {"question": "Is the sky blue?", "gold_answer": True}, {"question": "", "gold_answer": True},
        {"gold_answer": False}, "not a row", {"question": "Is fire cold?", "gold_answer": False}])
    monkeypatch.setattr(models, "load_student", lambda *a, **k: (tiny, tok))
    monkeypatch.setattr(sample, "generate", fake_generate(tok, lambda p: "The answer is yes."))
    evaluate.main(["--student", "tiny", "--datasets", "strategyqa", "--data-dir", str(root), "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert "skipped 3 malformed rows" in captured.err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["rows"]["tiny"]["strategyqa"] == pytest.approx(0.5) and res["details"]["tiny"]["strategyqa"]["n"] == 2


def test_rows_merge_into_one_table(tok, tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "load_student", lambda *a, **k: (tiny, tok))
    right = fake_generate(tok, lambda p: "The answer is yes." if "sky" in p else "The answer is no.")
    root = write_strategyqa(tmp_path / "data", [{"question": "Is the sky blue?", "gold_answer": True},
                                                {"question": "Is fire cold?", "gold_answer": False}])
    out = tmp_path / "o"
    common = ["--student", "tiny", "--data-dir", str(root), "--out", str(out), "--limit", "2"]
    monkeypatch.setattr(sample, "generate", fake_generate(tok, lambda p: "The answer is yes."))
    evaluate.main(common + ["--datasets", "strategyqa", "--name", "zero-shot"])
    monkeypatch.setattr(sample, "generate", right)
    evaluate.main(common + ["--datasets", "strategyqa", "--name", "exgrpo"])
    evaluate.main(common + ["--datasets", "synth", "--name", "exgrpo", "--max-new-tokens", "4"])  # fills its row
    res = json.loads((out / "results.json").read_text())
    assert list(res["rows"]) == ["zero-shot", "exgrpo"]
    assert res["rows"]["zero-shot"] == {"strategyqa": 0.5}
    assert res["rows"]["exgrpo"]["strategyqa"] == 1.0 and "synth/test_id" in res["rows"]["exgrpo"]
    assert (out / "zero-shot" / "predictions_strategyqa.jsonl").exists()
    assert (out / "exgrpo" / "predictions_synth_test_ood.jsonl").exists()
    md = (out / "results.md").read_text().splitlines()
    assert md[0] == "| method | synth/test_id | synth/test_ood | strategyqa |"
    assert md[2] == "| zero-shot | - | - | 50.0 |" and md[3].startswith("| exgrpo |") and md[3].endswith("| 100.0 |")
    # --table merges several results.json files
    other = tmp_path / "other"
    report.write_results(other, report.merge_results(report.empty_results(),
                                                     {"rows": {"sft": {"strategyqa": 0.25}}}))
    merged = report.merge_tables([out / "results.json", other / "results.json"], tmp_path / "merged")
    assert list(merged["rows"]) == ["zero-shot", "exgrpo", "sft"]
    assert "| sft | - | - | 25.0 |" in (tmp_path / "merged" / "results.md").read_text()


def test_split_train_never_replaces_the_test_score_and_overwrite_is_explicit(tok, tiny, tmp_path, monkeypatch,
                                                                             capsys):
    """The result key is (--name, dataset, split): --split train lands beside the test score; the
    same key again is refused (nothing touched) unless --overwrite."""
    monkeypatch.setattr(models, "load_student", lambda *a, **k: (tiny, tok))
    root = write_strategyqa(tmp_path / "data", [{"question": "Is the sky blue?", "gold_answer": True},
                                                {"question": "Is fire cold?", "gold_answer": False}])
    train_file = root / "strategyqa" / "revthink" / "training_data" / "SQA.json"
    train_file.parent.mkdir(parents=True)
    train_file.write_text(json.dumps([{"question": q, "gold_answer": g} for q, g in
                                      (("Is ice cold?", True), ("Is snow white?", True), ("Is water dry?", False))]))
    monkeypatch.setattr(sample, "generate", fake_generate(tok, lambda p: "The answer is yes."))
    out = tmp_path / "o"
    common = ["--student", "tiny", "--datasets", "strategyqa", "--data-dir", str(root), "--out", str(out)]
    evaluate.main(common)                                   # test: sky right, fire wrong
    test_preds = (out / "tiny" / "predictions_strategyqa.jsonl").read_text()
    evaluate.main(common + ["--split", "train"])            # train: 2 of 3
    res = json.loads((out / "results.json").read_text())
    assert res["rows"]["tiny"] == {"strategyqa": 0.5, "strategyqa/train": pytest.approx(2 / 3)}
    assert (out / "tiny" / "predictions_strategyqa.jsonl").read_text() == test_preds
    assert len((out / "tiny" / "predictions_strategyqa_train.jsonl").read_text().splitlines()) == 3
    # the test split again: refused before the model loads, results and predictions untouched
    before = (out / "results.json").read_text(), (out / "results.md").read_text()
    monkeypatch.setattr(sample, "generate", fake_generate(tok, lambda p: "The answer is yes." if "sky" in p
                                                          else "The answer is no."))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        evaluate.main(common)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "already holds tiny's strategyqa" in err and "--overwrite" in err
    assert len(err.splitlines()) == 1
    assert ((out / "results.json").read_text(), (out / "results.md").read_text()) == before
    assert (out / "tiny" / "predictions_strategyqa.jsonl").read_text() == test_preds
    evaluate.main(common + ["--overwrite"])
    res = json.loads((out / "results.json").read_text())
    assert res["rows"]["tiny"] == {"strategyqa": 1.0, "strategyqa/train": pytest.approx(2 / 3)}



def test_answers_of_an_unfinished_run_are_never_thrown_away_unasked(tok, tiny, tmp_path, monkeypatch, capsys):
    """Catches: the same command typed again after a crash (results.json not yet written) starting
    the predictions file anew without a word, hours of answers lost. Refused in one line before the
    model loads; --resume keeps the answers (none generated), --overwrite asks again."""
    root = write_strategyqa(tmp_path / "data", [{"question": "Is the sky blue?", "gold_answer": True},
                                                {"question": "Is fire cold?", "gold_answer": False}])
    monkeypatch.setattr(sample, "generate", fake_generate(tok, lambda p: "The answer is yes."))
    out = tmp_path / "o"
    common = ["--student", "tiny", "--datasets", "strategyqa", "--data-dir", str(root), "--out", str(out)]
    monkeypatch.setattr(models, "load_student", lambda *a, **k: (tiny, tok))
    evaluate.main(common)
    (out / "results.json").unlink()                          # what a crash before the end leaves
    preds = (out / "tiny" / "predictions_strategyqa.jsonl").read_text()
    monkeypatch.setattr(models, "load_student", lambda *a, **k: pytest.fail("the model loaded"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        evaluate.main(common)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "holds answers of an unfinished run" in err
    assert (out / "tiny" / "predictions_strategyqa.jsonl").read_text() == preds
    monkeypatch.setattr(models, "load_student", lambda *a, **k: (tiny, tok))
    evaluate.main(common + ["--resume"])
    assert "(1/2; 0 generated" in capsys.readouterr().out

# -----------------------------------------------------------------------------
# EI-Test


def test_ei_test_on_synthetic_probes(tok, tiny, tmp_path, monkeypatch):
    import probes
    records = probes.load_records("synth", "test_id", limit=2)
    dei, _ = probes.build_dei(records, "oracle", rules="reverse,decompose,why", progress=False)
    gold = {p["question"]: p["answer"] for d in dei for p in d["probes"] if p["kept"]}
    assert gold, "the oracle keeps synthetic probes"

    from evaluate import ei_probe_records
    recs = ei_probe_records(dei)
    assert {r["rule"] for r in recs} <= {"reverse", "decompose", "why"}
    assert all(r["answer"] == gold[r["question"]] for r in recs)

    monkeypatch.setattr(models, "load_student", lambda *a, **k: (tiny, tok))
    calls = []
    by_q = {r["question"]: r["rule"] for r in recs}
    monkeypatch.setattr(sample, "generate", fake_generate(
        tok, lambda p: next((f"The answer is {gold[q]}." for q, rule in by_q.items()
                             if q in p and rule != "why"), "I cannot say."), calls))
    path = tmp_path / "dei_test.jsonl"
    probes.save_dei(path, dei)
    out = tmp_path / "o"
    evaluate.main(["--student", "tiny", "--datasets", "none", "--ei-test", str(path), "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    per_rule = res["details"]["tiny"]["EI-Test"]["per_rule"]
    assert len(calls) == len(recs)
    assert per_rule["why"]["accuracy"] == 0.0
    assert all(per_rule[r]["accuracy"] == 1.0 for r in per_rule if r != "why")
    n_right = sum(s["correct"] for s in per_rule.values())
    assert res["rows"]["tiny"]["EI-Test"] == pytest.approx(n_right / len(recs))
    assert res["ei_rules"]["tiny"]["why"] == 0.0
    assert "EI-Test, accuracy per probe rule" in (out / "results.md").read_text()

    # on the fly: the oracle builds the probes of synthetic test questions
    calls.clear()
    evaluate.main(["--student", "tiny", "--datasets", "none", "--ei-test", "synth", "--limit", "2",
                   "--rules", "reverse,decompose,why", "--out", str(out), "--name", "fly"])
    res = json.loads((out / "results.json").read_text())
    assert res["rows"]["fly"]["EI-Test"] == pytest.approx(res["rows"]["tiny"]["EI-Test"])
    assert (out / "fly" / "dei_test_id.jsonl").exists() and len(calls) == len(recs)

# -----------------------------------------------------------------------------
# pass@k: n samples per question at temperature 1


def test_pass_at_k_by_hand():
    assert evaluate.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)     # 1 - C(3,2)/C(4,2)
    assert evaluate.pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)    # 1 - C(3,3)/C(5,3)
    assert evaluate.pass_at_k(8, 2, 1) == pytest.approx(0.25)          # pass@1 = c / n
    assert evaluate.pass_at_k(8, 0, 8) == 0.0 and evaluate.pass_at_k(8, 1, 8) == 1.0


def test_sample_accuracy_counts_correct_samples_per_question(tok, tiny, tmp_path, monkeypatch):
    recs = records3()   # question i (1, 2, 3) has gold 2i; the fake gets i - 1 of its 4 samples right
    seen = []

    def generate(model, tokenizer, prompts, n=1, max_new_tokens=128, temperature=1.0, batch_size=64):
        seen.append((len(prompts), n, temperature))
        texts = []
        for p in prompts:  # rows grouped per prompt, as sample.generate returns them
            text = tok.decode(p)
            i = int(text.split("What is ")[1].split(" ")[0]) if "What is " in text else 0
            texts += [f"The answer is {2 * i if j < i - 1 else -1}." for j in range(n)]
        return Generation([q for q in prompts for _ in range(n)], [[2]] * len(texts), texts, [True] * len(texts))
    monkeypatch.setattr(sample, "generate", generate)
    res = evaluate.sample_accuracy(tiny, tok, recs, samples=4, batch_size=8)
    assert res["counts"] == [0, 1, 2]
    assert res["pass@1"] == pytest.approx((0 + 1 / 4 + 2 / 4) / 3)   # 0.25
    assert res["pass@4"] == pytest.approx(2 / 3)
    assert seen == [(2, 4, 1.0), (1, 4, 1.0)]  # 8 rows per call = 2 questions x 4 samples, at T = 1
    # the command line: --samples adds pass@1 / pass@N to the details of each column
    monkeypatch.setattr(models, "load_student", lambda *a, **k: (tiny, tok))
    out = tmp_path / "o"
    evaluate.main(["--student", "tiny", "--datasets", "synth", "--limit", "3", "--samples", "2",
                   "--max-new-tokens", "4", "--out", str(out)])
    details = json.loads((out / "results.json").read_text())["details"]["tiny"]["synth/test_id"]
    assert details["sampled"]["samples"] == 2 and len(details["sampled"]["counts"]) == 3
    assert 0 <= details["sampled"]["pass@1"] <= details["sampled"]["pass@2"] <= 1

# -----------------------------------------------------------------------------
# --plot: training curves of several runs in one PNG


def write_run(path, rewards_, evals=()):
    path.mkdir(parents=True)
    rows = [{"stage": "sft", "step": 0, "loss": 1.0}]
    rows += [{"stage": "rl", "step": s, "reward": r, "P_full": None if s % 2 else r, "P_partial": 0.1,
              "dsu_rate": 0.5, "kl": 0.01 * s} for s, r in enumerate(rewards_, 1)]
    rows += [{"stage": "rl_eval", "step": s, "test_id": a, "test_ood": a / 2} for s, a in evals]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"stage": "rl", "st')


def test_moving_average_by_hand():
    assert report.moving_average([1, 3, None, 5], 3) == [1.0, 2.0, 2.0, 4.0]
    assert report.moving_average([2, 4, 6], 1) == [2.0, 4.0, 6.0]
    out = report.moving_average([None, 1], 2)
    assert out[0] != out[0] and out[1] == 1.0   # NaN where no value yet


def test_plot_overlays_runs_in_one_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    a, b = tmp_path / "grpo" / "s0", tmp_path / "exgrpo" / "s0"
    write_run(a, [0.0, 0.5, 1.0], evals=[(0, 0.3), (2, 0.4)])
    write_run(b, [0.25, 0.25])
    rl, evals = report.read_curves(a)  # the line cut by a crash is skipped
    assert [r["step"] for r in rl] == [1, 2, 3] and evals[1] == {"stage": "rl_eval", "step": 2, "test_id": 0.4, "test_ood": 0.2}
    assert report.run_labels([a, b, tmp_path / "other"]) == ["grpo/s0", "exgrpo/s0", "other"]
    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "sft___grpo").symlink_to(a)   # a run linked into an ablation keeps its given name
    assert report.run_labels([tmp_path / "seed0" / "sft___grpo", tmp_path / "other"]) == ["sft___grpo", "other"]
    # the seeds of one variant share a color and one legend entry; other runs get the next colors
    runs = [tmp_path / "seed0" / "x", tmp_path / "seed1" / "x", tmp_path / "seed0" / "y", tmp_path / "z"]
    assert report.run_styles(runs) == [(0, "x (2 runs)"), (0, None), (1, "y"), (2, "z")]
    png = tmp_path / "plots" / "ablation.png"
    evaluate.main(["--plot", str(a), str(b), "--plot-out", str(png), "--smooth", "2"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    evaluate.main(["--plot", str(a)])   # default: inside the first run
    assert (a / "curves.png").exists()
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        evaluate.main(["--plot", str(a), str(tmp_path / "missing")])


def test_plot_groups_seeds_by_config_not_by_folder_name_alone(tmp_path):
    """Runs are seeds of one variant when their config.json differs only in seed, folder and plumbing:
    two seeds of GRPO share a color and a legend entry; an ExGRPO run that is called s0 too does not."""
    def run(path, method, seed):
        path.mkdir(parents=True)
        (path / "config.json").write_text(json.dumps({"method": method, "seed": seed, "out": str(path), "resume": None}))
        return path
    g0, g1 = run(tmp_path / "grpo" / "s0", "grpo", 0), run(tmp_path / "grpo2" / "s0", "grpo", 1)
    e0 = run(tmp_path / "exgrpo" / "s0", "exgrpo", 0)
    assert report.run_styles([g0, g1, e0]) == [(0, "s0 [1] (2 runs)"), (0, None), (1, "exgrpo/s0")]
    # ablation layout: seed{n}/<variant>; the folder name then calls the variant
    x0, x1 = run(tmp_path / "seed0" / "x", "grpo", 0), run(tmp_path / "seed1" / "x", "grpo", 1)
    y0 = run(tmp_path / "seed0" / "y", "exgrpo", 0)
    assert report.run_styles([x0, y0, x1]) == [(0, "x (2 runs)"), (1, "y"), (0, None)]
    # the same name and a different setting (not only the seed): two variants, two colors
    x2 = tmp_path / "seed2" / "x"
    x2.mkdir(parents=True)
    (x2 / "config.json").write_text(json.dumps({"method": "grpo", "seed": 2, "out": "o", "resume": None, "k": 5}))
    assert [c for c, _ in report.run_styles([x0, x1, x2])] == [0, 0, 1]
    # a seed that ran on another device, resumed, or logged more often is still a seed of x
    x3 = tmp_path / "seed3" / "x"
    x3.mkdir(parents=True)
    (x3 / "config.json").write_text(json.dumps({"method": "grpo", "seed": 3, "out": "o", "resume": "o",
                                                "device": "cuda", "eval_every": 7, "preset_why": "because"}))
    assert report.run_styles([x0, x1, x3]) == [(0, "x (3 runs)"), (0, None), (0, None)]


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    write_run(tmp_path / "r", [1.0])
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(SystemExit, match="pip install matplotlib"):
        evaluate.main(["--plot", str(tmp_path / "r")])


def test_synthetic_ei_test_follows_the_level():
    """--ei-test synth builds the probes of the test questions at the run's --level (it used to
    build level-2 probes whatever the level)."""
    import data
    from evaluate import load_ei_test
    for level in (1, 3):
        recs = load_ei_test("synth", "test_id", limit=5, level=level)
        ids = {r["id"].split("/")[0] for r in recs}
        assert ids <= {q["id"] for q in data.load("synth", "test_id", limit=5, level=level)} and ids
    assert {r["id"] for r in load_ei_test("synth", "test_id", limit=5, level=1)} != \
        {r["id"] for r in load_ei_test("synth", "test_id", limit=5, level=3)}


def test_a_train_py_results_file_is_refused_by_name_not_read_as_an_empty_table(tmp_path, capsys):
    """Catches: evaluate.py --table on train.py's results.json printing an empty table, and --out
    RUN replacing train.py's results.md with evaluate.py's: both write a results.json, in two
    formats; evaluate.py now refuses train.py's in one line, naming it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"table": [{"stage": "SFT warm-up", "test_id": 0.5}],
                                                  "timing": {"sft": 1.0}}))
    (run / "results.md").write_text("train.py's table\n")
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--table", str(run / "results.json")])
    assert "is train.py's results of one run" in str(e.value.code)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--student", "tiny", "--datasets", "synth", "--limit", "2", "--out", str(run)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "is train.py's results of one run" in err and len(err.strip().splitlines()) == 1
    assert (run / "results.md").read_text() == "train.py's table\n"
