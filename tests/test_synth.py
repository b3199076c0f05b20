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


def test_evaluation_sets_ignore_the_training_seed_and_are_prefix_stable():
    import data
    for split in synth.TEST_SPLITS:
        five_hundred = data.load("synth", split, limit=500, seed=0)
        assert data.load("synth", split, limit=200, seed=7) == five_hundred[:200]  # another seed, a prefix
        assert five_hundred == synth.generate(split, 500, seed=synth.EVAL_SEED)
    # the training questions do follow the seed
    assert data.load("synth", "train", limit=20, seed=1) != data.load("synth", "train", limit=20, seed=2)
    assert data.load("synth", "train", limit=20, seed=3) == data.load("synth", "train", limit=50, seed=3)[:20]


@pytest.mark.parametrize("level", sorted(synth.LEVELS))
def test_levels_bound_their_amounts_and_keep_ood_longer(level):
    lv = synth.LEVELS[level]
    for split in synth.SPLITS:
        recs = synth.generate(split, 300, seed=0, level=level)
        for r in recs:
            p = r["problem"]
            assert r["answer"] == str(_recompute(p))
            values = [p["start"]]
            for kind, n in p["ops"]:
                values.append({"add": values[-1] + n, "sub": values[-1] - n, "mul": values[-1] * n,
                               "div": values[-1] // n}[kind])
                assert kind not in ("add", "sub") or n <= lv["addsub"]
                assert kind != "mul" or n in lv["mul"]
                assert kind != "div" or n in lv["div"]
            assert max(values) <= lv["max_value"] and lv["start"][0] <= p["start"] <= lv["start"][1]
        steps = {len(r["problem"]["ops"]) for r in recs}
        assert steps == set(lv["ood_steps"] if split == "test_ood" else lv["id_steps"])
    assert min(lv["ood_steps"]) > max(lv["id_steps"])  # test_ood stays harder than test_id


def test_default_level_is_the_original_world_and_levels_differ():
    assert synth.DEFAULT_LEVEL == 2 and synth.ID_STEPS == (2, 3) and synth.OOD_STEPS == (4, 5)
    assert synth.generate("train", 30) == synth.generate("train", 30, level=2)
    assert synth.generate("train", 3)[0]["id"] == "synth-train-0-0"
    easy, hard = synth.generate("test_id", 200, level=1), synth.generate("test_id", 200, level=3)
    assert easy[0]["id"] == "synth-test_id-L1-0-0" and easy[0]["question"] != hard[0]["question"]
    mean_steps = lambda recs: sum(len(r["problem"]["ops"]) for r in recs) / len(recs)  # noqa: E731
    assert mean_steps(easy) < mean_steps(synth.generate("test_id", 200)) < mean_steps(hard)
    with pytest.raises(ValueError, match="unknown level 9"):
        synth.generate("train", 3, level=9)
