"""
The synthetic world: multi-step arithmetic word problems with an oracle teacher.

On a machine with no GPU and no model hub, this is the embedded default that lets
`python train.py` run the whole method and check every probe exactly. A problem is a
start amount and a chain of operations, each told as one sentence of a template:

    Mia has 7 marbles. She finds 5 more marbles. Then she gives away 4 marbles.
    How many marbles does Mia have now?                 -> 7 + 5 - 4 = 8

The structure (start, ops) is kept beside the text, so the oracle can answer any
question about the problem -- a changed premise, an intermediate value, the start
given the end -- by recomputing, never by parsing text.

Splits (seeded, reproducible, disjoint by seed stream):
    train     2-3 steps, small numbers, the 6 train templates
    test_id   same distribution as train, different seed stream
    test_ood  4-5 steps; half on the 2 templates never seen in train, and a
              quarter of all questions reversed (end amount given, start asked)

Difficulty levels (`level`, LEVELS below): 1 = easy (1-2 steps in train/test_id, amounts
up to 50), 2 = the default above, 3 = hard (3-4 steps, larger operands). At every level
test_ood has longer chains than test_id.

Evaluation sets are fixed: `data.load("synth", "test_id" | "test_ood", ...)` always draws
them with EVAL_SEED, whatever the training seed, so every run is scored on the same
questions. A split is prefix-stable: the first 200 questions of a 500-question set are the
200-question set.

Run it to see a few problems and their oracle solutions:

    python -m data.synth --split test_ood --n 3 --seed 0 --level 1
"""

import argparse
import random

# -----------------------------------------------------------------------------
# defaults

SPLITS = ("train", "test_id", "test_ood")
TEST_SPLITS = SPLITS[1:]   # the evaluation splits (fixed by EVAL_SEED in data.load)
SPLIT_SEED_OFFSET = {"train": 0, "test_id": 1_000_003, "test_ood": 2_000_029}  # disjoint streams
EVAL_SEED = 0              # the test splits' seed in data.load: never the training seed
OOD_REVERSED_FRACTION = 0.25
MAX_VALUE = 200            # every intermediate amount of every level lies in [1, MAX_VALUE]
# difficulty: amount cap, start range, add/sub operand cap, multipliers, divisors, chain lengths
LEVELS = {
    1: dict(max_value=50, start=(2, 10), addsub=9, mul=(2, 3), div=(2, 3), id_steps=(1, 2), ood_steps=(3, 4)),
    2: dict(max_value=200, start=(2, 20), addsub=12, mul=(2, 3, 4), div=(2, 3, 4, 5),
            id_steps=(2, 3), ood_steps=(4, 5)),
    3: dict(max_value=200, start=(2, 50), addsub=30, mul=(2, 3, 4, 5), div=(2, 3, 4, 5, 6),
            id_steps=(3, 4), ood_steps=(5, 6)),
}
DEFAULT_LEVEL = 2
ID_STEPS = LEVELS[DEFAULT_LEVEL]["id_steps"]    # operations per problem in train / test_id
OOD_STEPS = LEVELS[DEFAULT_LEVEL]["ood_steps"]  # longer chains out of distribution
OPS = ("add", "sub", "mul", "div")

# -----------------------------------------------------------------------------
# templates: who, what, and one sentence per operation kind ({n} = the operand)
# Each sentence must say unambiguously which operation it is: the oracle's "why"
# probes ask exactly that.

TEMPLATES = {
    "marbles": dict(
        names=["Mia", "Leo", "Ava", "Sam"], item="marbles",
        start="{name} has {n} marbles.",
        add="{name} finds {n} more marbles.",
        sub="{name} gives away {n} marbles.",
        mul="{name} wins a game that makes {pron} marbles {n} times as many.",
        div="{name} splits {pron} marbles into {n} equal bags and keeps one bag.",
    ),
    "bakery": dict(
        names=["Nora", "Omar", "Ivy", "Ben"], item="cookies",
        start="{name} bakes {n} cookies.",
        add="{name} bakes {n} more cookies.",
        sub="{name} sells {n} cookies.",
        mul="{name} gets an order that makes the number of cookies {n} times as large.",
        div="{name} packs the cookies into {n} equal boxes and keeps one box.",
    ),
    "library": dict(
        names=["Ella", "Raj", "Zoe", "Tom"], item="books",
        start="{name} has {n} books on a shelf.",
        add="{name} buys {n} more books.",
        sub="{name} lends {n} books to friends.",
        mul="{name} fills more shelves so there are {n} times as many books.",
        div="{name} divides the books equally among {n} shelves and counts one shelf.",
    ),
    "garden": dict(
        names=["Lily", "Max", "Aria", "Dan"], item="flowers",
        start="{name} plants {n} flowers.",
        add="{name} plants {n} more flowers.",
        sub="{name} picks {n} flowers.",
        mul="The flowers spread until there are {n} times as many.",
        div="{name} splits the flowers into {n} equal beds and looks at one bed.",
    ),
    "stickers": dict(
        names=["Kai", "Rosa", "Finn", "Jade"], item="stickers",
        start="{name} collects {n} stickers.",
        add="{name} receives {n} more stickers.",
        sub="{name} trades away {n} stickers.",
        mul="{name} doubles up packs so the stickers become {n} times as many.",
        div="{name} shares the stickers equally with {n} kids in all and keeps one share.",
    ),
    "farm": dict(
        names=["Eli", "Maya", "Noah", "Cora"], item="eggs",
        start="{name} gathers {n} eggs.",
        add="{name} gathers {n} more eggs.",
        sub="{name} uses {n} eggs for breakfast.",
        mul="The hens lay until there are {n} times as many eggs.",
        div="{name} puts the eggs into {n} equal baskets and takes one basket.",
    ),
    # --- out of distribution: never in train
    "coins": dict(
        names=["Hugo", "Tara", "Ian", "Lena"], item="coins",
        start="{name} has {n} coins in a jar.",
        add="{name} drops {n} more coins into the jar.",
        sub="{name} spends {n} coins.",
        mul="The jar's coins grow to {n} times as many.",
        div="{name} splits the coins into {n} equal piles and keeps one pile.",
    ),
    "train": dict(
        names=["Vera", "Otto", "Nia", "Abe"], item="passengers",
        start="A train leaves with {n} passengers, and {name} counts them.",
        add="At a stop, {n} more passengers board.",
        sub="At the next stop, {n} passengers get off.",
        mul="At the city, the number of passengers becomes {n} times as many.",
        div="The passengers split equally into {n} cars, and {name} counts one car.",
    ),
}
TRAIN_TEMPLATES = ("marbles", "bakery", "library", "garden", "stickers", "farm")
OOD_TEMPLATES = ("coins", "train")
PRONOUN = {"Mia": "her", "Leo": "his", "Ava": "her", "Sam": "his"}

# -----------------------------------------------------------------------------
# the arithmetic: one function applies one operation, everything else uses it

def apply_op(value, op):
    """apply_op(8, ("div", 4)) -> 2. Division is exact by construction."""
    kind, n = op
    if kind == "add": return value + n
    if kind == "sub": return value - n
    if kind == "mul": return value * n
    if kind == "div": return value // n
    raise ValueError(f"unknown op {kind!r}")


def invert_op(value, op):
    """The value before `op`, given the value after it: invert_op(2, ("div", 4)) -> 8."""
    kind, n = op
    return apply_op(value, ({"add": "sub", "sub": "add", "mul": "div", "div": "mul"}[kind], n))


def trace(start, ops):
    """All amounts along the chain: trace(7, [("add",5),("sub",4)]) -> [7, 12, 8]."""
    values = [start]
    for op in ops:
        values.append(apply_op(values[-1], op))
    return values


OP_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
OP_WORD = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide"}

# -----------------------------------------------------------------------------
# problem generation

def _random_op(rng, value, level=DEFAULT_LEVEL):
    """A random operation that keeps the amount a whole number in [1, the level's max_value]."""
    lv = LEVELS[level]
    top = lv["max_value"]
    choices = []
    if value + 1 <= top: choices.append("add")
    if value >= 2: choices.append("sub")
    if value * lv["mul"][0] <= top: choices.append("mul")
    divisors = [d for d in lv["div"] if value % d == 0 and value // d >= 1]
    if divisors: choices.append("div")
    kind = rng.choice(choices)
    if kind == "add": return ("add", rng.randint(1, min(lv["addsub"], top - value)))
    if kind == "sub": return ("sub", rng.randint(1, min(lv["addsub"], value - 1)))
    if kind == "mul": return ("mul", rng.choice([m for m in lv["mul"] if value * m <= top]))
    return ("div", rng.choice(divisors))


def _check_level(level):
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {', '.join(map(str, LEVELS))}")


def make_problem(rng, template, n_steps, reverse=False, level=DEFAULT_LEVEL):
    """One problem as a structure: template, name, start, ops, reverse flag."""
    start = rng.randint(*LEVELS[level]["start"])
    ops, value = [], start
    for _ in range(n_steps):
        op = _random_op(rng, value, level)
        ops.append(op)
        value = apply_op(value, op)
    name = rng.choice(TEMPLATES[template]["names"])
    return {"template": template, "name": name, "start": start,
            "ops": [list(op) for op in ops], "reverse": reverse}


def _fill(text, problem, n):
    name = problem["name"]
    return text.format(name=name, n=n, pron=PRONOUN.get(name, "their"))


def op_sentence(problem, i):
    """The sentence that tells operation i of the problem."""
    kind, n = problem["ops"][i]
    return _fill(TEMPLATES[problem["template"]][kind], problem, n)


def question_text(problem):
    """The word problem. A reversed problem gives the end amount and asks for the start."""
    t = TEMPLATES[problem["template"]]
    item, name = t["item"], problem["name"]
    steps = " ".join(op_sentence(problem, i) for i in range(len(problem["ops"])))
    if problem["reverse"]:
        end = trace(problem["start"], problem["ops"])[-1]
        return (f"{name} starts with some {item}. {steps} In the end there are {end} {item}. "
                f"How many {item} were there at the start?")
    return f"{_fill(t['start'], problem, problem['start'])} {steps} How many {item} are there now?"


def answer_of(problem):
    """The gold answer, an int: the end amount, or the start for a reversed problem."""
    return problem["start"] if problem["reverse"] else trace(problem["start"], problem["ops"])[-1]

# -----------------------------------------------------------------------------
# the oracle teacher: a correct step-by-step solution in one fixed style

def oracle_solution(problem):
    """
    Forward:  Start with 7 marbles.
              Step 1: 7 + 5 = 12.
              Step 2: 12 - 4 = 8.
              The answer is 8.
    Reversed: End with 8. Undo step 2: 8 + 4 = 12. Undo step 1: 12 - 5 = 7. The answer is 7.
    """
    item = TEMPLATES[problem["template"]]["item"]
    values = trace(problem["start"], problem["ops"])
    lines = []
    if problem["reverse"]:
        lines.append(f"Work backwards from the end: {values[-1]} {item}.")
        for i in reversed(range(len(problem["ops"]))):
            kind, n = problem["ops"][i]
            inv = {"add": "-", "sub": "+", "mul": "/", "div": "*"}[kind]
            lines.append(f"Undo step {i + 1}: {values[i + 1]} {inv} {n} = {values[i]}.")
    else:
        lines.append(f"Start with {values[0]} {item}.")
        for i, (kind, n) in enumerate(problem["ops"]):
            lines.append(f"Step {i + 1}: {values[i]} {OP_SYMBOL[kind]} {n} = {values[i + 1]}.")
    lines.append(f"The answer is {answer_of(problem)}.")
    return "\n".join(lines)


def to_record(problem, rid):
    """The project's uniform record (every loader in data/ returns this shape)."""
    return {"id": rid, "question": question_text(problem), "answer": str(answer_of(problem)),
            "answer_type": "number", "reasoning": oracle_solution(problem), "problem": problem}

# -----------------------------------------------------------------------------
# splits

def generate(split, n, seed=0, level=DEFAULT_LEVEL):
    """n records of a split; the same (split, seed, level) always gives the same records, and
    the first n of them for any n (prefix-stable: record i depends only on records < i)."""
    _check_level(level)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    # level 2 is the original world: its streams and ids stay as they were; others get their own
    rng = random.Random(seed * 7_919 + SPLIT_SEED_OFFSET[split] + 104_729 * (level - 2))
    tag = "" if level == 2 else f"L{level}-"
    records = []
    for i in range(n):
        if split == "test_ood":
            template = rng.choice(OOD_TEMPLATES if i % 2 == 0 else TRAIN_TEMPLATES)
            problem = make_problem(rng, template, rng.choice(LEVELS[level]["ood_steps"]),
                                   reverse=rng.random() < OOD_REVERSED_FRACTION, level=level)
        else:
            problem = make_problem(rng, rng.choice(TRAIN_TEMPLATES), rng.choice(LEVELS[level]["id_steps"]),
                                   level=level)
        records.append(to_record(problem, f"synth-{split}-{tag}{seed}-{i}"))
    return records


def problem_for_template(template, n_steps, seed=0, reverse=False):
    """One problem on a named template (unknown name -> clear error)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    return make_problem(random.Random(seed), template, n_steps, reverse)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="train", choices=SPLITS)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--level", type=int, default=DEFAULT_LEVEL, choices=sorted(LEVELS))
    args = ap.parse_args()
    for r in generate(args.split, args.n, args.seed, args.level):
        print(r["question"], "\n", r["reasoning"], "\n", sep="")
