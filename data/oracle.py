"""
The synthetic world's oracle: answers any probe about a problem exactly, from the probe's
structure ("spec"), never from its text. probes.py writes the specs; this file answers them
and says whether a probe states the original question's answer.

    from data.oracle import solve, reveals_answer
    spec = {"ask": "value", "step": 1, "problem": {"template": "marbles", "name": "Mia",
            "start": 7, "ops": [["add", 5], ["sub", 4]], "reverse": False}}
    solve(spec)              # -> ("12", "Start with 7 marbles.\\nStep 1: 7 + 5 = 12.\\n...The answer is 12.")
    reveals_answer(spec, spec["problem"])   # -> False: the probe writes no number equal to 8

A problem is {template, name, start, ops, reverse} (data/synth.py). A spec is
{"ask": one of ASKS, "problem": ..., and the ask's own fields (step, claim, op, from, to, note)}.
"""

from data.synth import (MAX_VALUE, OP_SYMBOL, PRONOUN, TEMPLATES, answer_of, apply_op, invert_op,
                        op_sentence, oracle_solution, question_text, trace)

# -----------------------------------------------------------------------------
# words for the operations

OP_MEANS = {  # what a sentence of each kind does, in words (why-probes)
    "add": "more {item} come in, {n} of them",
    "sub": "{n} {item} go away",
    "mul": "the {item} become {n} times as many",
    "div": "the {item} are split into {n} equal parts and one part is kept",
}
OP_PHRASE = {  # the claim a why-probe tests
    "add": "add {n} to the amount", "sub": "subtract {n} from the amount",
    "mul": "multiply the amount by {n}", "div": "divide the amount by {n}",
}
UNDO_SYMBOL = {"add": "-", "sub": "+", "mul": "/", "div": "*"}

# -----------------------------------------------------------------------------
# restating a problem and walking its chain of amounts

def item_of(p):
    return TEMPLATES[p["template"]]["item"]


def statement(p):
    """The problem's facts without its question (every probe restates them)."""
    text = question_text(p)
    return text[:text.rindex(" How many")]


def quote(p, i):
    """Step i named with its sentence: 'step 2 ("Mia gives away 4 marbles.")'."""
    return f'step {i} ("{op_sentence(p, i - 1)}")'


def start_sentence(p, start):
    name = p["name"]
    return TEMPLATES[p["template"]]["start"].format(name=name, n=start, pron=PRONOUN.get(name, "their"))


def is_valid(p):
    """Every amount a whole number in [1, MAX_VALUE] and every division exact."""
    values = trace(p["start"], p["ops"])
    exact = all(kind != "div" or values[i] % n == 0 for i, (kind, n) in enumerate(p["ops"]))
    return exact and all(1 <= v <= MAX_VALUE for v in values)


def start_from_end(end, ops):
    """The start that reaches `end` through `ops`, or None when the chain does not invert."""
    value = end
    for op in reversed(ops):
        if op[0] == "mul" and value % op[1]:
            return None
        value = invert_op(value, op)
        if not 1 <= value <= MAX_VALUE:
            return None
    return value


def yesno(flag):
    return "yes" if flag else "no"


def _derive(p, i):
    """Oracle lines that establish the amount right after step i (0 = the start).
    Forward: 'Start with 7 marbles.' 'Step 1: 7 + 5 = 12.' ... up to step i.
    Reversed: 'Work backwards from the end: 8 marbles.' 'Undo step 2: 8 + 4 = 12.' ... down to i+1."""
    v, item = trace(p["start"], p["ops"]), item_of(p)
    if p["reverse"]:
        lines = [f"Work backwards from the end: {v[-1]} {item}."]
        for j in range(len(p["ops"]), i, -1):
            kind, n = p["ops"][j - 1]
            lines.append(f"Undo step {j}: {v[j]} {UNDO_SYMBOL[kind]} {n} = {v[j - 1]}.")
        return lines
    lines = [f"Start with {v[0]} {item}."]
    for j in range(1, i + 1):
        kind, n = p["ops"][j - 1]
        lines.append(f"Step {j}: {v[j - 1]} {OP_SYMBOL[kind]} {n} = {v[j]}.")
    return lines


def _derive_step(p, i):
    """Oracle lines that show both ends of step i (the amount before and after it)."""
    return _derive(p, i - 1) if p["reverse"] else _derive(p, i)


def _derive_all(p):
    return _derive(p, 0) if p["reverse"] else _derive(p, len(p["ops"]))

# -----------------------------------------------------------------------------
# the asks. Each returns (gold answer, reasoning lines in oracle_solution's style)

def _ask_final(spec):
    """The end amount (the start, for a reversed problem) of spec's problem."""
    p = spec["problem"]
    note = [spec["note"]] if spec.get("note") else []
    return answer_of(p), note + oracle_solution(p).split("\n")[:-1]


def _ask_value(spec):
    """The amount right after step spec['step']."""
    p, i = spec["problem"], spec["step"]
    v = trace(p["start"], p["ops"])[i]
    return v, _derive(p, i) + [f"Right after step {i} there are {v} {item_of(p)}."]


def _ask_check_step(spec):
    """Is the claimed equation [a, kind, n, c] exactly what step spec['step'] does?"""
    p, i = spec["problem"], spec["step"]
    v, (kind, n) = trace(p["start"], p["ops"]), p["ops"][spec["step"] - 1]
    a, ckind, cn, c = spec["claim"]
    ok = (a, ckind, cn, c) == (v[i - 1], kind, n, v[i])
    return yesno(ok), _derive_step(p, i) + [
        f"So step {i} is {v[i - 1]} {OP_SYMBOL[kind]} {n} = {v[i]}.",
        f"The claim {a} {OP_SYMBOL[ckind]} {cn} = {c} is {'right' if ok else 'wrong'}."]


def _ask_is_op(spec):
    """Does step spec['step'] mean the operation spec['op']?"""
    p, i = spec["problem"], spec["step"]
    kind, n = p["ops"][i - 1]
    ckind, cn = spec["op"]
    ok = (ckind, cn) == (kind, n)
    return yesno(ok), [
        f'"{op_sentence(p, i - 1)}" means that {OP_MEANS[kind].format(item=item_of(p), n=n)}.',
        f"So step {i} means: {OP_PHRASE[kind].format(n=n)}.",
        f"The claim '{OP_PHRASE[ckind].format(n=cn)}' {'matches' if ok else 'does not match'}."]


def _ask_change(spec):
    """By how much (a positive number) step spec['step'] changes the amount."""
    p, i = spec["problem"], spec["step"]
    v = trace(p["start"], p["ops"])
    lo, hi = sorted((v[i - 1], v[i]))
    way = "more" if v[i] > v[i - 1] else "fewer"
    return hi - lo, _derive_step(p, i) + [f"The change is {hi} - {lo} = {hi - lo} ({way} {item_of(p)})."]


def _ask_which_step(spec):
    """The number of the step that takes the amount from spec['from'] to spec['to']."""
    p = spec["problem"]
    v = trace(p["start"], p["ops"])
    k = next(j for j in range(1, len(v)) if (v[j - 1], v[j]) == (spec["from"], spec["to"]))
    return k, _derive_all(p) + [f"The amount goes from {v[k - 1]} to {v[k]} in step {k}."]


def _ask_more_at_end(spec):
    """Are there more items at the end than at the start?"""
    p = spec["problem"]
    v = trace(p["start"], p["ops"])
    more = v[-1] > v[0]
    return yesno(more), _derive_all(p) + [
        f"At the start there are {v[0]} {item_of(p)} and at the end {v[-1]}.",
        f"{v[-1]} is {'more' if more else 'not more'} than {v[0]}."]


def _ask_check_value(spec):
    """Is the hypothesis 'after step i there are c' true?"""
    p, i, c = spec["problem"], spec["step"], spec["claim"]
    v = trace(p["start"], p["ops"])[i]
    return yesno(v == c), _derive(p, i) + [
        f"Right after step {i} there are {v} {item_of(p)}, so the hypothesis of {c} is "
        f"{'right' if v == c else 'wrong'}."]


def _ask_without_step(spec):
    """The answer of spec's problem with step spec['step'] left out (numbering kept)."""
    p, k, item = spec["problem"], spec["step"], item_of(spec["problem"])
    back = p["reverse"]  # a reversed problem keeps its end and walks back to a new start
    value = trace(p["start"], p["ops"])[-1] if back else p["start"]
    lines = [f"Work backwards from the end: {value} {item}." if back else f"Start with {value} {item}."]
    for j in (range(len(p["ops"]), 0, -1) if back else range(1, len(p["ops"]) + 1)):
        if j == k:
            lines.append(f"Skip step {k}.")
            continue
        kind, n = p["ops"][j - 1]
        new = invert_op(value, (kind, n)) if back else apply_op(value, (kind, n))
        sym = UNDO_SYMBOL[kind] if back else OP_SYMBOL[kind]
        lines.append(f"{'Undo step' if back else 'Step'} {j}: {value} {sym} {n} = {new}.")
        value = new
    return value, lines


ASKS = {"final": _ask_final, "value": _ask_value, "check_step": _ask_check_step,
        "is_op": _ask_is_op, "change": _ask_change, "which_step": _ask_which_step,
        "more_at_end": _ask_more_at_end, "check_value": _ask_check_value,
        "without_step": _ask_without_step}


def solve(spec):
    """The oracle: (gold answer string, step-by-step reasoning ending 'The answer is X.').

    solve({"ask": "value", "step": 1, "problem": {..., "start": 7, "ops": [["add", 5], ["sub", 4]]}})
      -> ("12", "Start with 7 marbles.\\nStep 1: 7 + 5 = 12.\\nRight after step 1 there are 12 marbles."
                "\\nThe answer is 12.")"""
    answer, lines = ASKS[spec["ask"]](spec)
    return str(answer), "\n".join(lines + [f"The answer is {answer}."])

# -----------------------------------------------------------------------------
# does a probe state the original answer? A probe restates the sentences of Q (the
# original problem) and then writes something of its own: a changed sentence, a claimed
# equation, a transition "from a to b", a hypothesis, a whole inverted problem. It reveals
# Q's answer when any number it writes of its own equals that answer, whatever role the
# number plays (a true result, a wrong claim, an operand): a student could copy it.

def _final_numbers(new, p):
    """The numbers a probe asking for the answer of problem `new` writes beyond Q = p."""
    end = trace(new["start"], new["ops"])[-1]
    if new["reverse"] != p["reverse"]:  # the whole problem inverted (reverse rule)
        return {end} if new["reverse"] else {new["start"]}
    said = {n for (_, n), (_, m) in zip(new["ops"], p["ops"]) if n != m}  # a changed step's operand
    old_end = trace(p["start"], p["ops"])[-1]
    if new["reverse"] and end != old_end:  # "there were <end> at the end instead of <old end>"
        said |= {end, old_end}
    if not new["reverse"] and new["start"] != p["start"]:  # a changed start sentence
        said.add(new["start"])
    return said


def stated_numbers(spec, p):
    """The numbers a synthetic probe (spec) of problem p writes on top of p's own sentences.

    stated_numbers({"ask": "check_step", "step": 2, "claim": [12, "sub", 4, 8], ...}, p) -> {12, 4, 8}"""
    ask = spec["ask"]
    if ask == "final":
        return _final_numbers(spec["problem"], p)
    if ask == "check_step":
        a, _, n, c = spec["claim"]
        return {a, n, c}
    if ask == "is_op":
        return {spec["op"][1]}
    if ask == "which_step":
        return {spec["from"], spec["to"]}
    if ask == "check_value":
        return {spec["claim"]}
    if ask == "without_step" and p["reverse"]:  # "... and the end amount were still <end>"
        return {trace(p["start"], p["ops"])[-1]}
    return set()  # value, change, more_at_end, forward without_step: only Q's own sentences


def reveals_answer(spec, p):
    """True iff the probe writes, of its own, a number equal to the answer of problem p.

    Q: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles." (answer 8)
      challenge "step 2 is 12 - 4 = 8"       -> True  (an equation whose result is 8)
      process "from 12 to 8"                 -> True  (8 is the end amount)
      reverse "In the end there are 8 ..."   -> True
      decompose "after step 1?"              -> False (asks 12, writes no number)"""
    return answer_of(p) in stated_numbers(spec, p)
