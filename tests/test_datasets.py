"""Tests of data/real.py against the real files in ../shared/data (skipped when absent),
of its error paths on small temporary data folders, and of D_EI read back by `datasets`.

    python -m pytest -q tests/test_datasets.py
"""
import json
from functools import lru_cache

import pytest

from data import real
from data.real import DATASETS, ENV_VAR, ID_DATASETS, OOD_DATASETS, format_instruction, load_dataset
from rewards import ANSWER_TYPES, _last_boxed, _options, is_correct, reward

# row counts as stated in the README.md of the datasets folder
README_COUNTS = {
    ("strategyqa", "test"): 229, ("strategyqa", "train"): 1995,
    ("commonsenseqa", "test"): 1221, ("commonsenseqa", "train"): 6478,
    ("arc_challenge", "test"): 1172, ("arc_challenge", "train"): 1417,
    ("math", "test"): 500, ("math", "train"): 2827,  # test = MATH-500
    ("gsm8k", "test"): 1319, ("gsm8k", "train"): 7473,
    ("tabmwp", "test"): 7686,
    ("anli", "test"): 1200, ("anli", "train"): 883,
    ("date_understanding", "test"): 169, ("date_understanding", "train"): 200,
    ("boolq", "test"): 3270, ("openbookqa", "test"): 500, ("esnli", "test"): 9824, ("gsm8k_reversal", "test"): 777,
}
AUGMENTED = {("strategyqa", "train"), ("arc_challenge", "train"), ("anli", "train"), ("date_understanding", "train")}


@lru_cache(maxsize=None)
def _load(name, split, data_dir):
    return load_dataset(name, split, data_dir=data_dir)


# -----------------------------------------------------------------------------
# the registry


def test_registry_matches_the_paper():
    assert ID_DATASETS == ("strategyqa", "commonsenseqa", "arc_challenge", "math", "gsm8k", "tabmwp", "anli",
                           "date_understanding")
    assert OOD_DATASETS == ("boolq", "openbookqa", "esnli", "gsm8k_reversal")
    types = {n: s["answer_type"] for n, s in DATASETS.items()}
    assert types == {"strategyqa": "yesno", "commonsenseqa": "choice", "arc_challenge": "choice", "math": "math",
                     "gsm8k": "number", "tabmwp": "number", "anli": "choice", "date_understanding": "choice",
                     "boolq": "yesno", "openbookqa": "choice", "esnli": "choice", "gsm8k_reversal": "number"}
    assert {(n, s) for n, spec in DATASETS.items() for s in spec["files"]} == set(README_COUNTS)


@pytest.mark.parametrize("answer_type", ANSWER_TYPES)
def test_format_instruction_names_the_checked_phrase(answer_type):
    assert "The answer is" in format_instruction(answer_type)


def test_format_instruction_unknown_type():
    with pytest.raises(ValueError, match="choice"):
        format_instruction("letter")


# -----------------------------------------------------------------------------
# every split of the real data


@pytest.mark.parametrize("name,split", sorted(README_COUNTS))
def test_split_counts_and_records(shared_data, name, split):
    rows = _load(name, split, shared_data)
    assert len(rows) == README_COUNTS[name, split]
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert isinstance(r["question"], str) and r["question"].strip(), r["id"]
        assert isinstance(r["answer"], str) and r["answer"], r["id"]
        assert r["answer_type"] in ANSWER_TYPES and isinstance(r["reasoning"], str)
        # the gold, written as a model would, is accepted by the record's own checker ...
        assert is_correct(f"Let me think step by step. The answer is {r['answer']}.", r["answer"],
                          r["answer_type"], r["question"]), r["id"]
        # ... and repeating the question earns nothing
        assert reward(r["question"], r["answer"], r["answer_type"], r["question"]) == 0.0, r["id"]
        if (name, split) in AUGMENTED:  # RevThink's teacher reasoning, forward and backward
            assert r["reasoning"] and r["backward_question"] and r["backward_reasoning"], r["id"]
        else:
            assert "backward_question" not in r


def test_limit_and_test_split_default(shared_data):
    rows = load_dataset("strategyqa", data_dir=shared_data, limit=5)
    assert [r["id"] for r in rows] == [f"strategyqa-test-{i}" for i in range(5)]
    assert {r["answer"] for r in _load("strategyqa", "test", shared_data)} == {"yes", "no"}


def test_tabmwp_multiple_choice_rows_are_choice_records(shared_data):
    rows = _load("tabmwp", "test", shared_data)
    kinds = [r["answer_type"] for r in rows]
    assert kinds.count("choice") == 1992 and kinds.count("number") == 7686 - 1992  # README: 1992 MC rows


@pytest.mark.parametrize("name,split", sorted(k for k in README_COUNTS if DATASETS[k[0]]["answer_type"] == "choice"))
def test_option_text_answers_are_accepted(shared_data, name, split):
    """Answering with the gold option's text instead of its letter counts (when the text is unique)."""
    checked = 0
    for r in _load(name, split, shared_data):
        options = _options(r["question"])
        assert r["answer"] in options, r["id"]  # every gold label is one of the parsed options
        text = options[r["answer"]]
        if list(options.values()).count(text) == 1:  # a few CSQA rows repeat an option
            assert is_correct(f"The answer is {text}.", r["answer"], "choice", r["question"]), r["id"]
            checked += 1
    assert checked >= 0.98 * README_COUNTS[name, split]


def test_gsm8k_reference_solutions_are_accepted(shared_data):
    lines = (shared_data / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1319
    for line in lines:
        row = json.loads(line)
        gold = row["answer"].split("#### ")[-1].strip()
        assert is_correct(row["answer"], gold, "number", row["question"]), row["answer"][-80:]
    # the loader's reasoning (calculator marks removed, 'The answer is N.') is accepted too
    for r in _load("gsm8k", "test", shared_data):
        assert "<<" not in r["reasoning"] and is_correct(r["reasoning"], r["answer"], "number", r["question"])


def test_math500_answers_match_their_boxed_solution(shared_data):
    lines = (shared_data / "math" / "math-evaluation-harness" / "math_oai" / "test.jsonl").read_text().splitlines()
    assert len(lines) == 500
    for line in lines:
        row = json.loads(line)
        boxed = _last_boxed(row["solution"])
        assert boxed is not None, row["unique_id"]
        assert is_correct(f"So we get $\\boxed{{{boxed}}}$.", row["answer"], "math", row["problem"]), row["unique_id"]


# -----------------------------------------------------------------------------
# error paths, on temporary data folders


def _write_revthink(root, rows):
    path = root / "strategyqa" / "revthink" / "test_data" / "SQA_test.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rows))
    return path


def test_missing_data_dir_names_the_flag_env_var_and_download_command(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=ENV_VAR) as err:
        load_dataset("gsm8k", data_dir=tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "--data-dir" in str(err.value)
    assert f"`python -m data.download --data-dir {tmp_path / 'nowhere'}`" in str(err.value)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "also_nowhere"))
    with pytest.raises(FileNotFoundError, match="also_nowhere"):
        load_dataset("gsm8k")


def test_missing_dataset_file_names_the_expected_path_and_download_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gsm8k[/\\]test\.jsonl") as err:
        load_dataset("gsm8k", data_dir=tmp_path)
    assert ENV_VAR in str(err.value)
    assert f"`python -m data.download --only gsm8k --data-dir {tmp_path}`" in str(err.value)


def test_default_data_dir_is_the_user_cache_then_shared_data(tmp_path, monkeypatch):
    user, shared = tmp_path / "cache" / "exgrpo" / "data", tmp_path / "shared" / "data"
    monkeypatch.setattr(real, "USER_DATA_DIR", user)
    monkeypatch.setattr(real, "SHARED_DATA_DIR", shared)
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match="python -m data.download") as err:
        real.resolve_data_dir()
    assert str(user) in str(err.value) and str(shared) in str(err.value)
    shared.mkdir(parents=True)
    assert real.resolve_data_dir() == shared  # this project's machines: ../shared/data
    user.mkdir(parents=True)
    assert real.resolve_data_dir() == user    # a user's download wins
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert real.resolve_data_dir() == tmp_path and real.resolve_data_dir(shared) == shared


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="strategyqa") as err:
        load_dataset("sqa")
    assert all(n in str(err.value) for n in DATASETS)
    with pytest.raises(ValueError, match="test"):
        load_dataset("boolq", "train")


def test_malformed_rows_are_skipped_and_counted(tmp_path, monkeypatch, capsys):
    _write_revthink(tmp_path, [
        {"question": "Is water wet?", "gold_answer": "yes"},
        {"gold_answer": "no"},                              # no question
        {"question": "   ", "gold_answer": "no"},           # blank question
        {"question": "Is fire cold?"},                      # no gold
        {"question": "Is fire cold?", "gold_answer": None},
        {"question": "Is fire cold?", "gold_answer": ""},
        "not a row",
        {"question": "Is ice cold?", "gold_answer": True},  # a bool gold becomes 'yes'
    ])
    monkeypatch.setenv(ENV_VAR, str(tmp_path))  # the env var is the fallback for data_dir
    rows = load_dataset("strategyqa")
    assert [(r["id"], r["answer"]) for r in rows] == [("strategyqa-test-0", "yes"), ("strategyqa-test-7", "yes")]
    err = capsys.readouterr().err
    assert "skipped 6 malformed rows" in err and len(err.strip().splitlines()) == 1


def test_malformed_gsm8k_lines_are_skipped_and_counted(tmp_path, capsys):
    path = tmp_path / "gsm8k" / "test.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join([
        json.dumps({"question": "2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"}),
        "{not json",
        json.dumps({"question": "3+3?", "answer": "no final line"}),
        "",
        json.dumps({"question": "1,000+1?", "answer": "#### 1,001"}),
    ]))
    rows = load_dataset("gsm8k", data_dir=tmp_path)
    assert [r["answer"] for r in rows] == ["4", "1,001"]
    assert rows[0]["reasoning"] == "2+2=4\nThe answer is 4."
    assert "skipped 2 malformed rows" in capsys.readouterr().err


def test_rows_of_the_wrong_type_are_skipped_and_an_empty_file_is_named(tmp_path, capsys):
    """Catches: a GSM8K answer that is a number (TypeError: argument of type 'int' is not
    iterable, naming no file), a reasoning that is not text (a transformers traceback mid-SFT), a
    dict gold taken as the string "{'x': 1}", and an empty file reported as 'Instruction "train"
    corresponds to no data!' for a test split. Each row is skipped and counted; no rows at all is
    one error naming the file."""
    gsm = tmp_path / "gsm8k" / "test.jsonl"
    gsm.parent.mkdir()
    gsm.write_text(json.dumps({"question": "x?", "answer": 5}) + "\n"
                   + json.dumps({"question": "2+2?", "answer": "#### 4"}) + "\n")
    assert [r["answer"] for r in load_dataset("gsm8k", data_dir=tmp_path)] == ["4"]
    assert "skipped 1 malformed rows" in capsys.readouterr().err
    _write_revthink(tmp_path, [{"question": "Is a?", "gold_answer": True, "forward_reasoning": 5},
                               {"question": "Is b?", "gold_answer": {"x": 1}},
                               {"question": "Is c?", "gold_answer": [True]},
                               {"question": "Is d?", "gold_answer": False, "forward_reasoning": "No."}])
    assert [r["question"] for r in load_dataset("strategyqa", data_dir=tmp_path)] == ["Is d?"]
    err = capsys.readouterr().err
    assert "skipped 3 malformed rows" in err and "reasoning field that is not text" in err
    gsm.write_text("")
    with pytest.raises(ValueError, match=r"gsm8k test: no usable record in .*test\.jsonl \(the file holds none\)"):
        load_dataset("gsm8k", data_dir=tmp_path)
    (tmp_path / "strategyqa" / "revthink" / "test_data" / "SQA_test.json").write_text("[]")
    with pytest.raises(ValueError, match=r"strategyqa test: no usable record in .*SQA_test\.json \(the file"):
        load_dataset("strategyqa", data_dir=tmp_path)


def _strategyqa_text(tmp_path, text):
    path = tmp_path / "strategyqa" / "revthink" / "test_data" / "SQA_test.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_a_json_array_with_broken_records_skips_and_counts_them(tmp_path, capsys):
    """Each broken record is skipped and counted, named by file, index and the JSON error; every
    other record is read, with its own index as its id."""
    rows = [json.dumps({"question": f"Is {i} even? (a, {{b}})", "gold_answer": i % 2 == 0}) for i in range(6)]
    rows[2] = '{"question": "Is 2 even? (a, {b})" "gold_answer": true}'   # missing comma
    rows[4] = '{"question": "Is 4 even?", "gold_answer": tru}'            # bad literal
    path = _strategyqa_text(tmp_path, "[\n" + ",\n".join(rows) + "\n]\n")
    got = load_dataset("strategyqa", data_dir=tmp_path)
    assert [r["id"] for r in got] == ["strategyqa-test-0", "strategyqa-test-1", "strategyqa-test-3",
                                      "strategyqa-test-5"]
    assert [r["answer"] for r in got] == ["yes", "no", "no", "no"]
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "skipped 2 malformed rows" in err and str(path) in err
    assert "record 2 is not valid JSON (line 4 column" in err and "Expecting ',' delimiter" in err
    assert "record 4 is not valid JSON (line 6 column" in err


def test_a_json_array_cut_short_keeps_the_whole_records(tmp_path, capsys):
    rows = [json.dumps({"question": f"Is {i} even?", "gold_answer": i % 2 == 0}) for i in range(3)]
    _strategyqa_text(tmp_path, "[" + ", ".join(rows)[:-20])   # the last record cut mid-way, no ']'
    assert [r["question"] for r in load_dataset("strategyqa", data_dir=tmp_path)] == ["Is 0 even?", "Is 1 even?"]
    assert "skipped 1 malformed rows" in capsys.readouterr().err


@pytest.mark.parametrize("text, why", [("hello", "not a JSON array of records (line 1 column 1"),
                                       ('"hello"', "not a JSON array of records but a JSON str")])
def test_a_file_that_is_no_json_array_is_an_error_naming_it(tmp_path, text, why):
    path = _strategyqa_text(tmp_path, text)
    with pytest.raises(ValueError) as e:
        load_dataset("strategyqa", data_dir=tmp_path)
    assert str(e.value).startswith(f"{path}: {why}")


# -----------------------------------------------------------------------------
# through `datasets`: the Arrow cache, a datasets.Dataset, D_EI read back unchanged


def test_files_are_read_through_the_arrow_cache(tmp_path, monkeypatch):
    rows = [{"question": f"Is {i} even?", "gold_answer": "yes" if i % 2 == 0 else "no"} for i in range(6)]
    _write_revthink(tmp_path / "data", rows)
    monkeypatch.setattr(real, "ARROW_CACHE", str(tmp_path / "arrow"))
    recs = load_dataset("strategyqa", data_dir=tmp_path / "data")
    assert [r["answer"] for r in recs] == ["yes", "no"] * 3
    assert list((tmp_path / "arrow").rglob("*.arrow"))  # built once, memory-mapped after


def test_a_split_as_a_datasets_dataset(tmp_path):
    import datasets
    rows = [{"question": "Is water wet?", "gold_answer": "yes"}, {"question": "", "gold_answer": "no"},
            {"question": "Is fire cold?", "gold_answer": "no"}]
    _write_revthink(tmp_path, rows)
    ds = load_dataset("strategyqa", data_dir=tmp_path, as_dataset=True)
    assert isinstance(ds, datasets.Dataset) and len(ds) == 2  # the bad row is skipped here too
    assert ds.to_list() == load_dataset("strategyqa", data_dir=tmp_path)
    assert ds.filter(lambda r: r["answer"] == "no")["id"] == ["strategyqa-test-2"]


def test_dei_reads_back_unchanged_through_datasets(tmp_path):
    import datasets

    import probes
    from data import synth
    dei, _ = probes.build_dei(synth.generate("train", 12, 0), "oracle", progress=False)
    assert len(dei) == 12 and all(d["probes"] for d in dei)
    path = tmp_path / "dei.jsonl"
    probes.save_dei(path, dei)
    back = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "arrow"))
    assert back.to_list() == json.loads(json.dumps(dei))  # every field, no key added, no type changed
    assert back.to_list() == probes.load_dei(path, kept_only=False)
