"""The whole-split check of the answer checker: every test item of the 12 datasets, its gold
answer written in the layouts models use, must score 1; a wrong answer of the same type,
written the same ways, must score 0. Skipped when ../shared/data is absent.

    python -m pytest -q tests/test_rewards_datasets.py
    python tests/test_rewards_datasets.py          # the counts per dataset and layout
"""
import re
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from data.real import DATASETS, load_dataset  # noqa: E402
from rewards import _options, reward  # noqa: E402

REASONING = "Let me think step by step. We read the question carefully and work it out.\n\n"


def _option_text(record, label):
    return _options(record["question"]).get(label, "")


def layouts(record, answer):
    """{layout: model output} stating `answer` (a gold-like string) in four common layouts."""
    kind = record["answer_type"]
    if kind == "choice":
        said = f"({answer})"
        full = f"({answer}) {_option_text(record, answer)}".strip()
    else:
        said = full = answer
    inline = f"${answer}$" if kind in ("number", "math") else answer
    return {
        # the prompt's own format (data/real.py's instruction line)
        "prompt": REASONING + (f"The answer is $\\boxed{{{answer}}}$." if kind == "math" else f"The answer is {said}."),
        # reasoning then a bold answer line; for choices the option's text after its label
        "bold": REASONING + f"**Answer:** {full if kind != 'math' else inline}",
        # Minerva's format
        "minerva": REASONING + f"Final Answer: The final answer is {inline}. I hope it is correct.",
        # the answer phrase, then display math on the next lines
        "display": REASONING + f"The final answer is:\n\\[\n\\boxed{{{answer}}}\n\\]",
    }


def _bump_number(gold):
    """A near miss of a number gold: one more in its last written place ('18' -> '19', '1.25' -> '1.26')."""
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?", gold)
    token = m.group().replace(",", "")
    if "/" in token:
        num, den = token.split("/")
        return f"{int(num) + 1}/{den}"
    places = len(token.split(".")[1]) if "." in token else 0
    value = Fraction(token) + Fraction(1, 10**places)
    return f"{float(value):.{places}f}" if places else str(int(value))


def wrong_answer(record):
    """A wrong answer of the same type, as close to the gold as the type allows."""
    gold, kind = record["answer"], record["answer_type"]
    if kind == "number":
        return _bump_number(gold)
    if kind == "yesno":
        return "no" if gold.lower() in ("yes", "true") else "yes"
    if kind == "choice":
        labels = list(_options(record["question"]))
        return labels[(labels.index(gold) + 1) % len(labels)]
    digit = re.search(r"\d", gold)  # math: the first digit changed, else the opposite
    if digit:
        return gold[:digit.start()] + str((int(digit.group()) + 1) % 10) + gold[digit.end():]
    return f"-\\left({gold}\\right)"


def check_dataset(name, data_dir=None):
    """{(layout, 'correct'/'false_accept'): count} and the failures of one dataset's test split."""
    counts, failures = Counter(), []
    for r in load_dataset(name, "test", data_dir=data_dir):
        q, gold, kind = r["question"], r["answer"], r["answer_type"]
        for side, answer in (("correct", gold), ("false_accept", wrong_answer(r))):
            for layout, text in layouts(r, answer).items():
                got = reward(text, gold, kind, q)
                counts[layout, side] += got
                counts[layout, "n"] += side == "correct"
                if got != (side == "correct"):
                    failures.append((r["id"], layout, side, answer, gold))
    return counts, failures


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_test_item_in_every_layout(name, shared_data):
    counts, failures = check_dataset(name, shared_data)
    assert counts["prompt", "n"] > 0
    assert not failures, f"{len(failures)} failures, e.g. {failures[:5]}"


def test_wrong_answers_are_wrong_by_construction():
    assert _bump_number("18") == "19" and _bump_number("1.25") == "1.26" and _bump_number("19.4%") == "19.5"
    assert _bump_number("1,454.36") == "1454.37" and _bump_number("5/11") == "6/11" and _bump_number("-5") == "-4"
    assert wrong_answer({"answer": "\\frac{14}{3}", "answer_type": "math"}) == "\\frac{24}{3}"
    assert wrong_answer({"answer": "yes", "answer_type": "yesno"}) == "no"
    q = "Where? (A) bank (B) library (C) mall"
    assert wrong_answer({"answer": "C", "answer_type": "choice", "question": q}) == "A"


if __name__ == "__main__":
    names = sys.argv[1:] or list(DATASETS)
    print("| dataset | items | " + " | ".join(f"{lay} ok / false acc." for lay in ("prompt", "bold", "minerva", "display"))
          + " | seconds |\n|---|---:|" + "---:|" * 5)
    for name in names:
        t0 = time.time()
        c, fails = check_dataset(name)
        cells = [f"{c[lay, 'correct']:.0f} / {c[lay, 'false_accept']:.0f}" for lay in ("prompt", "bold", "minerva", "display")]
        print(f"| {name} | {c['prompt', 'n']} | " + " | ".join(cells) + f" | {time.time() - t0:.1f} |", flush=True)
        for f in fails[:5]:
            print("   FAIL", f)
