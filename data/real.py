"""
Loaders for the 12 real datasets of the paper, read from RevThink-layout files.

    from data.real import load_dataset, DATASETS, ID_DATASETS, OOD_DATASETS, format_instruction
    rows = load_dataset("arc_challenge", "train", limit=8)   # list of plain dicts
    ds = load_dataset("gsm8k", "test", as_dataset=True)      # a datasets.Dataset (map, filter, push_to_hub)
    python -m data.download                  # fetch the files (once; see data/download.py)
    python -m data.real                      # row counts of every split found
    python -m data.real gsm8k --data-dir /path/to/data

Where the data lives: the `data_dir` argument (the scripts' --data-dir flag), else the
environment variable EXGRPO_DATA_DIR, else ~/.cache/exgrpo/data (where `python -m
data.download` puts it), else a folder shared/data beside the checkout, when there is one (a CI
layout). The files are never committed (several licenses are non-commercial); data/download.py
pins each one to its public source: repository, commit, path and sha256.
Files are read through `datasets.load_dataset("json", ...)`: Arrow-cached and memory-mapped.

Every record is the project's uniform record:
    {"id": "arc_challenge-train-0", "question": "... (A) dry palms (B) wet palms ...",
     "answer": "A", "answer_type": "choice", "reasoning": "Here's the reasoning: ..."}
answer is the gold as a string, answer_type one of rewards.ANSWER_TYPES (checked by
rewards.reward), reasoning the teacher's reasoning or "". RevThink's augmented training
files (StrategyQA, ARC, ANLI, Date; teacher Gemini-1.5-Pro) also give "backward_question" and
"backward_reasoning", and their "forward_reasoning" is the record's reasoning.

Choices made here, where the files leave a choice:
- MATH test = MATH-500 (math_oai/test.jsonl): RevThink's MATH_test.json is absent from the
  copy (>= 4 MiB). MATH train = RevThink's question+gold file (no reasoning).
- GSM8K = the original openai files (gold after '#### '); the reasoning is the reference
  solution with its <<calculator>> marks removed and '#### N' rewritten 'The answer is N.'
- TabMWP is a number dataset whose multiple-choice rows (letter gold, options in the
  question) are records of answer_type "choice".
- e-SNLI and ANLI are choice questions: their options are written into the question.
- A row without a question or a gold answer is skipped and counted (one line on stderr naming
  the file and the first records, by index, with why), and so is a record that is not valid
  JSON: a JSONL line, or a record of a JSON array file (the parse resumes at the next record).
"""
import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from rewards import ANSWER_TYPES

ENV_VAR = "EXGRPO_DATA_DIR"
DOWNLOAD_CMD = "python -m data.download"  # data/download.py: fetches every file below, checksummed
USER_DATA_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "exgrpo" / "data"
SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data: this project's CI
# datasets' Arrow cache: None = its default (~/.cache/huggingface/datasets or $HF_DATASETS_CACHE)
ARROW_CACHE = None

# -----------------------------------------------------------------------------
# the datasets: answer type, in/out of distribution, {split: (file, row reader)}

_RT = "{}/revthink/test_data/{}_test.json"       # RevThink's eval split
_RTRAIN = "{}/revthink/training_data/{}.json"    # RevThink's training split


def _spec(answer_type, ood, test, train=None):
    files = {"test": test} if train is None else {"test": test, "train": train}
    return {"answer_type": answer_type, "ood": ood, "files": files}


DATASETS = {
    # in-distribution (paper order)
    "strategyqa": _spec("yesno", False, (_RT.format("strategyqa", "SQA"), "revthink"),
                        (_RTRAIN.format("strategyqa", "SQA"), "revthink")),
    "commonsenseqa": _spec("choice", False, (_RT.format("commonsenseqa", "CSQA"), "revthink"),
                           (_RTRAIN.format("commonsenseqa", "CSQA"), "revthink")),
    "arc_challenge": _spec("choice", False, (_RT.format("arc_challenge", "ARC"), "revthink"),
                           (_RTRAIN.format("arc_challenge", "ARC"), "revthink")),
    "math": _spec("math", False, ("math/math-evaluation-harness/math_oai/test.jsonl", "math500"),
                  (_RTRAIN.format("math", "MATH"), "revthink")),
    "gsm8k": _spec("number", False, ("gsm8k/test.jsonl", "gsm8k"), ("gsm8k/train.jsonl", "gsm8k")),
    "tabmwp": _spec("number", False, (_RT.format("tabmwp", "TabMWP"), "revthink")),
    "anli": _spec("choice", False, (_RT.format("anli", "ANLI"), "revthink"),
                  (_RTRAIN.format("anli", "ANLI"), "revthink")),
    "date_understanding": _spec("choice", False, (_RT.format("date_understanding", "Date"), "revthink"),
                                (_RTRAIN.format("date_understanding", "Date"), "revthink")),
    # out-of-distribution: test only
    "boolq": _spec("yesno", True, (_RT.format("boolq", "BoolQ"), "revthink")),  # closed-book: no passage
    "openbookqa": _spec("choice", True, (_RT.format("openbookqa", "OBQA"), "revthink")),
    "esnli": _spec("choice", True, (_RT.format("esnli", "ESNLI"), "revthink")),
    "gsm8k_reversal": _spec("number", True, (_RT.format("gsm8k_reversal", "GSM8K-Rev"), "revthink")),
}
ID_DATASETS = tuple(n for n, s in DATASETS.items() if not s["ood"])
OOD_DATASETS = tuple(n for n, s in DATASETS.items() if s["ood"])

# the line a prompt ends with: the answer format rewards.py checks
_INSTRUCTIONS = {
    "number": 'Give the final answer as a single number. End with "The answer is N."',
    "yesno": 'Answer yes or no. End with "The answer is yes." or "The answer is no."',
    "choice": 'Answer with the letter of the correct option. End with "The answer is (X)."',
    "math": 'Give the final answer in LaTeX. End with "The answer is $\\boxed{ANSWER}$."',
}
assert set(_INSTRUCTIONS) == set(ANSWER_TYPES)


def format_instruction(answer_type: str) -> str:
    """One line telling the model the answer format it will be checked against."""
    if answer_type not in _INSTRUCTIONS:
        raise ValueError(f"unknown answer_type {answer_type!r}; known: {', '.join(ANSWER_TYPES)}")
    return _INSTRUCTIONS[answer_type]


# -----------------------------------------------------------------------------
# row readers: raw row -> (question, gold, reasoning, extra fields); gold None = malformed


def _gold_str(v):
    """Gold as the checkers' string: True -> 'yes', 18.0 -> '18', ' B ' -> 'B'."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip() if isinstance(v, (str, int, float)) else None   # a dict or list: malformed


def _read_revthink(row):
    extra = {k: row[k] for k in ("backward_question", "backward_reasoning") if row.get(k) is not None}
    return row.get("question"), _gold_str(row.get("gold_answer")), row.get("forward_reasoning") or "", extra


def _read_gsm8k(row):
    solution = row.get("answer")
    if not isinstance(solution, str) or "#### " not in solution:
        return row.get("question"), None, "", {}
    steps, gold = solution.rsplit("#### ", 1)
    gold = gold.strip()
    steps = re.sub(r"<<[^>]*>>", "", steps).strip()  # '= <<16-3-4=9>>9' -> '= 9'
    return row.get("question"), gold, f"{steps}\nThe answer is {gold}.", {}


def _read_math500(row):
    return row.get("problem"), _gold_str(row.get("answer")), row.get("solution") or "", {}


_READERS = {"revthink": _read_revthink, "gsm8k": _read_gsm8k, "math500": _read_math500}

# -----------------------------------------------------------------------------
# loading


def resolve_data_dir(data_dir=None):
    """The data folder: the argument, else $EXGRPO_DATA_DIR, else ~/.cache/exgrpo/data, else
    ../shared/data; the first two must exist, the last two are taken when they do."""
    chosen = data_dir or os.environ.get(ENV_VAR)
    if chosen:
        path = Path(chosen)
        if not path.is_dir():
            how = "given" if data_dir else f"from ${ENV_VAR}"
            raise FileNotFoundError(f"data directory not found: {path} ({how}); fetch the datasets into "
                                    f"it with `{DOWNLOAD_CMD} --data-dir {path}`, or pass --data-dir / "
                                    f"data_dir= or set {ENV_VAR} to the folder holding the RevThink-layout "
                                    f"datasets")
        return path
    for path in (USER_DATA_DIR, SHARED_DATA_DIR):
        if path.is_dir():
            return path
    raise FileNotFoundError(f"no data directory: neither {USER_DATA_DIR} nor {SHARED_DATA_DIR} exists; "
                            f"fetch the datasets with `{DOWNLOAD_CMD}` (into {USER_DATA_DIR}), or pass "
                            f"--data-dir / data_dir= or set {ENV_VAR} to the folder holding the "
                            f"RevThink-layout datasets")


class Broken(str):
    """A record that is not valid JSON, in place of its row: the text says where and why."""


def _json_error(e):
    return f"line {e.lineno} column {e.colno}: {e.msg}"


def _array_rows(path, text):
    """Records of a JSON array file. A broken record becomes a Broken row and the parse resumes
    at the next ", {" that starts a record that parses (what a broken record spans is unknown:
    each later candidate is tried in turn); a file that is not an array is an error naming it."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        first = e
    else:
        if not isinstance(rows, list):
            raise ValueError(f"{path}: not a JSON array of records but a JSON {type(rows).__name__}")
        return rows
    start = re.match(r"\s*\[", text)
    if start is None:
        raise ValueError(f"{path}: not a JSON array of records ({_json_error(first)})")
    dec, rows, pos = json.JSONDecoder(), [], start.end()
    while True:
        pos = re.compile(r"\s*").match(text, pos).end()
        if pos >= len(text) or text[pos] == "]":
            return rows
        try:
            row, end = dec.raw_decode(text, pos)
            follow = re.compile(r"\s*([,\]]|$)").match(text, end)
            if follow is None:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, end)
            rows.append(row)
            pos = follow.end() if follow.group(1) == "," else follow.start(1)
        except json.JSONDecodeError as e:
            rows.append(Broken(f"record {len(rows)} is not valid JSON ({_json_error(e)})"))
            pos = _resync(dec, text, e.pos)
            if pos is None:
                return rows


def _resync(dec, text, pos):
    """Where the next whole record starts after a broken one (None: nothing more can be read)."""
    for m in re.compile(r",\s*(?=\{)").finditer(text, pos):
        try:
            _, end = dec.raw_decode(text, m.end())
        except json.JSONDecodeError:
            continue
        if re.compile(r"\s*(,|\]\s*$|$)").match(text, end):  # a record of the array, not one nested in it
            return m.end()
    return None


def _raw_rows(path):
    """Rows of a JSON array file or a JSONL file; a record or line that is not JSON becomes a
    Broken row (skipped and counted by load_dataset)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return _array_rows(path, text)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                rows.append(Broken(f"line {n} is not valid JSON ({e.msg} at column {e.colno})"))
    return rows


@contextmanager
def _quiet_datasets():
    """No progress bars and no logged tracebacks from datasets while it reads one small file."""
    import datasets
    bars, level = datasets.is_progress_bar_enabled(), datasets.utils.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity(logging.CRITICAL)
    try:
        yield datasets
    finally:
        datasets.utils.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def _rows(path):
    """Rows of a file through datasets' Arrow cache (memory-mapped; built once per file). A file
    Arrow cannot type (a broken JSONL line, a row that is not an object, mixed types in a column)
    is read by plain json instead, so its bad rows are skipped and counted like any other."""
    with _quiet_datasets() as datasets:
        try:
            table = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=ARROW_CACHE)
        except Exception:   # anything Arrow cannot read (an empty file too): the plain reader says what
            return _raw_rows(path)
    return (dict(zip(batch, row)) for batch in table.iter(batch_size=1024)  # by batch: 15x faster than by row
            for row in zip(*batch.values()))


def load_dataset(name: str, split: str = "test", data_dir=None, limit: int | None = None, as_dataset=False):
    """Records of one dataset split (see the module docstring), in file order: a list of dicts,
    or with as_dataset=True the same records as a datasets.Dataset."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if split not in spec["files"]:
        raise ValueError(f"{name} has no {split!r} split; it has: {', '.join(spec['files'])}")
    rel, reader = spec["files"][split]
    root = resolve_data_dir(data_dir)
    path = root / rel
    if not path.is_file():
        raise FileNotFoundError(f"{name} {split}: expected {path}, not found; fetch it with `{DOWNLOAD_CMD} "
                                f"--only {name} --data-dir {root}`, or pass --data-dir / data_dir= or set "
                                f"{ENV_VAR} to the folder holding the RevThink-layout datasets")
    records, bad = [], []
    for i, row in enumerate(_rows(path)):
        if limit is not None and len(records) >= limit:
            break
        question, gold, reasoning, extra = (_READERS[reader](row) if isinstance(row, dict)
                                            else (None, None, "", {}))
        if not isinstance(question, str) or not question.strip() or not gold:
            bad.append(row if isinstance(row, Broken) else f"record {i} has no question or no gold answer")
            continue
        if not isinstance(reasoning, str) or not all(isinstance(v, str) for v in extra.values()):
            bad.append(f"record {i} has a reasoning field that is not text")
            continue
        answer_type = spec["answer_type"]
        if name == "tabmwp" and re.fullmatch(r"[A-Z]", gold) and "(A)" in question:
            answer_type = "choice"  # TabMWP's multiple-choice rows
        records.append({"id": f"{name}-{split}-{i}", "question": question, "answer": gold,
                        "answer_type": answer_type, "reasoning": reasoning, **extra})
    if bad:
        more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
        print(f"data/real.py: {name} {split}: skipped {len(bad)} malformed rows in {path}: "
              f"{'; '.join(bad[:3])}{more}", file=sys.stderr)
    if not records and limit != 0:
        raise ValueError(f"{name} {split}: no usable record in {path}"
                         + (f" ({len(bad)} malformed, above)" if bad else " (the file holds none)"))
    if as_dataset:
        import datasets
        return datasets.Dataset.from_list(records)
    return records


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="row counts of the real datasets")
    parser.add_argument("names", nargs="*", default=list(DATASETS))
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    for n in args.names:
        for s in DATASETS[n]["files"]:
            rows = load_dataset(n, s, args.data_dir)
            kind = "ood" if DATASETS[n]["ood"] else "id"
            print(f"{n:20s} {s:5s} {len(rows):6d} rows  {kind:3s} {DATASETS[n]['answer_type']}")
