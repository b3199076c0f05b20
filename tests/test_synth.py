"""The synthetic world: seeded, correct by independent recomputation, OOD really out of distribution."""
import re

import pytest

from data import synth


def test_seeded_reproducibility():
    assert synth.generate("train", 50, seed=3) == synth.generate("train", 50, seed=3)
    assert synth.generate("train", 50, seed=3) != synth.generate("train", 50, seed=4)
    assert synth.generate("test_id", 20)[0]["question"] != synth.generate("train", 20)[0]["question"]


def _recompute(problem):
    # independent of synth.apply_op/trace: plain Python arithmetic on the structure
    value = problem["start"]
    for kind, n in problem["ops"]:
        value = {"add": value + n, "sub": value - n, "mul": value * n}.get(kind, None) \
            if kind != "div" else value / n
        assert value == int(value) and 1 <= value <= synth.MAX_VALUE   # whole, positive amounts
        value = int(value)
    return problem["start"] if problem["reverse"] else value


@pytest.mark.parametrize("split", synth.SPLITS)
def test_answers_of_1000_problems_recomputed_independently(split):
    for r in synth.generate(split, 1000, seed=0):
        assert r["answer"] == str(_recompute(r["problem"]))
        # the oracle solution ends with the answer, in the fixed style
        assert r["reasoning"].endswith(f"The answer is {r['answer']}.")
        # every number in the question text is a premise of the structure
        nums = set(map(int, re.findall(r"\d+", r["question"])))
        assert r["problem"]["start"] in nums or r["problem"]["reverse"]


def test_solution_steps_are_correct_arithmetic():
    for r in synth.generate("test_ood", 300, seed=1):
        for a, op, b, c in re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", r["reasoning"]):
            a, b, c = int(a), int(b), int(c)
            assert {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op] == c
            assert op != "/" or a % b == 0


def test_split_shapes():
    train = synth.generate("train", 500)
    ood = synth.generate("test_ood", 500)
    assert {len(r["problem"]["ops"]) for r in train} == set(synth.ID_STEPS)
    assert {len(r["problem"]["ops"]) for r in ood} == set(synth.OOD_STEPS)
    assert not any(r["problem"]["reverse"] for r in train)
    assert 0.1 < sum(r["problem"]["reverse"] for r in ood) / 500 < 0.4
    # the OOD templates never appear in train or test_id, and do appear in test_ood
    for split in ("train", "test_id"):
        assert not {r["problem"]["template"] for r in synth.generate(split, 500)} & set(synth.OOD_TEMPLATES)
    assert set(synth.OOD_TEMPLATES) <= {r["problem"]["template"] for r in ood}
    for r in train:
        assert set(r) >= {"id", "question", "answer", "answer_type", "reasoning"}


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        synth.generate("dev", 3)
    with pytest.raises(ValueError, match="seed must be an integer"):
        synth.generate("train", 3, seed="7")
    with pytest.raises(ValueError, match="unknown template 'pirates'"):
        synth.problem_for_template("pirates", 2)
