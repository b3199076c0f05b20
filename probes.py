"""
Stage 1 of the method, Explanatory Inversion (EI): turn every training question into
explanatory probes, let a teacher answer them, and keep what survives two filters.

    python probes.py --dataset synth --teacher oracle                # 1,000 synthetic questions, exact
    python probes.py --dataset synth --rules counterfactual          # the single-rule ablation
    python probes.py --dataset synth --student smollm2-135m --limit 100 --tau-hard 0.2
    python probes.py --dataset strategyqa --limit 200 \
        --teacher-url http://localhost:8000/v1 --teacher-model Qwen/Qwen2.5-72B-Instruct
    python probes.py --dataset gsm8k --teacher hf:/path/to/model --probe-writer teacher

    from probes import build_dei, load_dei, make_teacher
    dei, stats = build_dei(records, make_teacher("oracle"))          # records: data/ loaders
    dei = load_dei("runs/dei_synth_train.jsonl")                     # the kept questions

For one question Q with gold answer A and teacher reasoning R_T:
1. rules: each of the ten rules f_i(Q, A, R_T) writes zero or more probes. On the
   synthetic world a probe carries its structure ("spec"), so the oracle answers it exactly;
   on text datasets the rule fills a template (or, --probe-writer teacher, the teacher
   writes the probe from the rule's docstring).
2. teacher: answers every probe. Every answer of a real teacher is appended to a JSONL
   cache the moment it arrives, so a rerun never asks the same thing twice.
3. EI-consistency filter (paper): the teacher, shown [probe | its reasoning and answer | Q],
   must still answer Q with A. Ours, on top: a probe whose gold answer is known (all
   synthetic probes, a few text ones) is dropped when the teacher got it wrong or gave none.
4. difficulty filter (ours, the paper leaves it open): the untrained student answers the
   consistent probes of Q; keep Q iff it has >= 1 consistent probe, the student misses at
   least one, and solves at least a fraction tau_hard of them (--student none: skip the
   student, keep every Q with a consistent probe).

The output D_EI is a JSONL file, one record per original question:
    {"id", "question", "answer", "answer_type", "problem", "reasoning" (teacher's, for Q),
     "reasoning_source" ("dataset" | "teacher"), "reasoning_correct",
     "probes": [{"rule", "question", "answer", "answer_type", "teacher_reasoning",
                 "teacher_answer", "answer_correct", "consistent", "student_correct",
                 "kept", "reveals_answer", "spec"}, ...],
     "n_probes", "n_consistent", "n_student_correct", "kept", "drop_reason"}
plus <out>.stats.json with the filter table that is also printed.
"""

import argparse
import hashlib
import http.client
import inspect
import json
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from pathlib import Path

from data.synth import (MAX_VALUE, OP_SYMBOL, PRONOUN, TEMPLATES, answer_of, apply_op, generate,
                        invert_op, op_sentence, oracle_solution, question_text, trace)

# -----------------------------------------------------------------------------
# defaults

DATASET = "synth"          # or any name data/real.py knows (strategyqa, gsm8k, ...)
SPLIT = "train"            # D_EI is built from training questions
SYNTH_N = 1000             # synthetic questions when --limit is not given
TEACHER = "oracle"         # oracle | hf:<path-or-id> | openai (with --teacher-url)
PROBE_WRITER = "template"  # template: fill each rule's template; teacher: the teacher writes the probe
STUDENT = "none"           # the difficulty filter's student; none = skip it (fast, CPU)
TAU_HARD = 0.0             # keep Q only if the student solves >= this fraction of its consistent probes
CHUNK = 256                # questions per round of teacher calls (one progress-bar step)
TEACHER_MAX_TOKENS = 1024  # a teacher's answer budget
STUDENT_MAX_TOKENS = 256   # the student's answer budget in the difficulty filter
CONCURRENCY = 8            # endpoint requests in flight at once
TIMEOUT = 120.0            # seconds before one endpoint request counts as hung
RETRIES = 6                # extra tries per request (timeouts, resets, 429, 5xx, bad JSON)
BACKOFF = 1.0              # first retry wait in seconds, doubled each try
MAX_BACKOFF = 60.0         # no single wait (backoff or Retry-After) is longer than this
KEY_ENV_VARS = ("EXGRPO_TEACHER_KEY", "OPENAI_API_KEY")  # the endpoint key, first one set wins

# -----------------------------------------------------------------------------
# the synthetic world: a problem is {template, name, start, ops, reverse}; these helpers
# restate it and walk its chain of amounts in the oracle's fixed style

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
SHIFTS = (-6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6)  # how far a counterfactual moves one quantity


def _item(p):
    return TEMPLATES[p["template"]]["item"]


def _statement(p):
    """The problem's facts without its question (every probe restates them)."""
    text = question_text(p)
    return text[:text.rindex(" How many")]


def _start_sentence(p, start):
    name = p["name"]
    return TEMPLATES[p["template"]]["start"].format(name=name, n=start, pron=PRONOUN.get(name, "their"))


def _valid(p):
    """Every amount a whole number in [1, MAX_VALUE] and every division exact."""
    values = trace(p["start"], p["ops"])
    exact = all(kind != "div" or values[i] % n == 0 for i, (kind, n) in enumerate(p["ops"]))
    return exact and all(1 <= v <= MAX_VALUE for v in values)


def _start_from_end(end, ops):
    """The start that reaches `end` through `ops`, or None when the chain does not invert."""
    value = end
    for op in reversed(ops):
        if op[0] == "mul" and value % op[1]:
            return None
        value = invert_op(value, op)
        if not 1 <= value <= MAX_VALUE:
            return None
    return value


def _derive(p, i):
    """Oracle lines that establish the amount right after step i (0 = the start).
    Forward: 'Start with 7 marbles.' 'Step 1: 7 + 5 = 12.' ... up to step i.
    Reversed: 'Work backwards from the end: 8 marbles.' 'Undo step 2: 8 + 4 = 12.' ... down to i+1."""
    v, item = trace(p["start"], p["ops"]), _item(p)
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


def _yesno(flag):
    return "yes" if flag else "no"

# -----------------------------------------------------------------------------
# the oracle: answers a synthetic probe from its spec, never from its text.
# Each ask returns (gold answer, reasoning in oracle_solution's style ending "The answer is X.")

def _ask_final(spec):
    """The end amount (the start, for a reversed problem) of spec's problem."""
    p = spec["problem"]
    note = [spec["note"]] if spec.get("note") else []
    return answer_of(p), note + oracle_solution(p).split("\n")[:-1]


def _ask_value(spec):
    """The amount right after step spec['step']."""
    p, i = spec["problem"], spec["step"]
    v = trace(p["start"], p["ops"])[i]
    return v, _derive(p, i) + [f"Right after step {i} there are {v} {_item(p)}."]


def _ask_check_step(spec):
    """Is the claimed equation [a, kind, n, c] exactly what step spec['step'] does?"""
    p, i = spec["problem"], spec["step"]
    v, (kind, n) = trace(p["start"], p["ops"]), p["ops"][spec["step"] - 1]
    a, ckind, cn, c = spec["claim"]
    ok = (a, ckind, cn, c) == (v[i - 1], kind, n, v[i])
    return _yesno(ok), _derive_step(p, i) + [
        f"So step {i} is {v[i - 1]} {OP_SYMBOL[kind]} {n} = {v[i]}.",
        f"The claim {a} {OP_SYMBOL[ckind]} {cn} = {c} is {'right' if ok else 'wrong'}."]


def _ask_is_op(spec):
    """Does step spec['step'] mean the operation spec['op']?"""
    p, i = spec["problem"], spec["step"]
    kind, n = p["ops"][i - 1]
    ckind, cn = spec["op"]
    ok = (ckind, cn) == (kind, n)
    return _yesno(ok), [
        f'"{op_sentence(p, i - 1)}" means that {OP_MEANS[kind].format(item=_item(p), n=n)}.',
        f"So step {i} means: {OP_PHRASE[kind].format(n=n)}.",
        f"The claim '{OP_PHRASE[ckind].format(n=cn)}' {'matches' if ok else 'does not match'}."]


def _ask_change(spec):
    """By how much (a positive number) step spec['step'] changes the amount."""
    p, i = spec["problem"], spec["step"]
    v = trace(p["start"], p["ops"])
    lo, hi = sorted((v[i - 1], v[i]))
    way = "more" if v[i] > v[i - 1] else "fewer"
    return hi - lo, _derive_step(p, i) + [f"The change is {hi} - {lo} = {hi - lo} ({way} {_item(p)})."]


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
    return _yesno(more), _derive_all(p) + [
        f"At the start there are {v[0]} {_item(p)} and at the end {v[-1]}.",
        f"{v[-1]} is {'more' if more else 'not more'} than {v[0]}."]


def _ask_check_value(spec):
    """Is the hypothesis 'after step i there are c' true?"""
    p, i, c = spec["problem"], spec["step"], spec["claim"]
    v = trace(p["start"], p["ops"])[i]
    return _yesno(v == c), _derive(p, i) + [
        f"Right after step {i} there are {v} {_item(p)}, so the hypothesis of {c} is "
        f"{'right' if v == c else 'wrong'}."]


def _ask_without_step(spec):
    """The answer of spec's problem with step spec['step'] left out (numbering kept)."""
    p, k, item = spec["problem"], spec["step"], _item(spec["problem"])
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
      -> ("12", "Start with 7 marbles.\\nStep 1: 7 + 5 = 12.\\nRight after step 1 there are 12 marbles.\\nThe answer is 12.")"""
    answer, lines = ASKS[spec["ask"]](spec)
    return str(answer), "\n".join(lines + [f"The answer is {answer}."])

# -----------------------------------------------------------------------------
# the ten rules. Each takes an example {question, answer, answer_type, reasoning, problem?}
# and returns a list of probes ([] = the rule does not apply). A probe restates every
# fact it needs, because in stage 3 several probes share one dialogue with Q.

def _probe(rule, question, answer_type, answer=None, spec=None, reveals=False):
    """A fresh probe; the teacher and filter fields are filled by build_dei."""
    return {"rule": rule, "question": question, "answer": answer, "answer_type": answer_type,
            "teacher_reasoning": None, "teacher_answer": None, "answer_correct": None,
            "consistent": None, "student_correct": None, "kept": None,
            "reveals_answer": reveals, "spec": spec}


def _synth(rule, question, spec, answer_type, reveals=False):
    """A synthetic probe: its gold answer comes from the oracle, computed from the spec."""
    return _probe(rule, question, answer_type, solve(spec)[0], spec, reveals)


def _rng(ex, rule, seed):
    # str seeds hash with sha512 inside random: the same probes in every process
    return random.Random(f"{seed}|{rule}|{ex['question']}")


def _quote(p, i):
    return f'step {i} ("{op_sentence(p, i - 1)}")'


def _options(question):
    """Option labels written into a question: '... (A) bank (B) library' -> ['A', 'B']."""
    return list(dict.fromkeys(re.findall(r"\(([A-J1-9])\)", question)))


def _text(rule, ex, ask, answer_type, answer=None, reveals=False):
    """A text probe: the original question, then what this rule asks about it."""
    return [_probe(rule, f"{ex['question'].strip()}\n\n{ask}", answer_type, answer, None, reveals)]


def counterfactual(ex, seed=0):
    """Counterfactual: change one premise of the question and ask what the answer becomes.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'Suppose step 1 were "Mia finds 9 more marbles."
         instead of "Mia finds 5 more marbles.", with everything else the same. How many
         marbles would there be at the end?'  (answer 12; the original answer is 8)
    On text: the answerer changes one key fact so that the answer changes, says which,
    and answers the changed question."""
    p = ex.get("problem")
    if p is None:
        return _text("counterfactual", ex, "Counterfactual: imagine one key fact in this question "
                     "were different, so that the answer changes. Say which fact you change and "
                     "how, then answer the changed question.", ex["answer_type"])
    rng, item, v = _rng(ex, "counterfactual", seed), _item(p), trace(p["start"], p["ops"])
    cands = []  # (new problem, what the probe says, the oracle's note)
    for i, (kind, n) in enumerate(p["ops"]):
        alts = [n + d for d in SHIFTS] if kind in ("add", "sub") else (2, 3, 4, 5)
        for m in alts:
            if m >= 1 and m != n:
                ops = [list(op) for op in p["ops"]]
                ops[i] = [kind, m]
                cands.append((i, ops, None))
    for d in SHIFTS:
        cands.append((None, [list(op) for op in p["ops"]], d))  # change the start (or the end)
    rng.shuffle(cands)
    for i, ops, d in cands:
        if p["reverse"]:  # the end stays as told (or moves by d); the start follows
            end = v[-1] + (d or 0)
            start = _start_from_end(end, ops)
        else:
            start = p["start"] + (d or 0)
        if start is None or start < 1:
            continue
        new = dict(p, start=start, ops=ops)
        if not _valid(new) or answer_of(new) == answer_of(p):
            continue
        if i is not None:
            old_s, new_s = op_sentence(p, i), op_sentence(new, i)
            change = f'step {i + 1} were "{new_s}" instead of "{old_s}"'
            note = f'Change step {i + 1} to "{new_s}"'
        elif p["reverse"]:
            change = f"there were {end} {item} at the end instead of {v[-1]}"
            note = f"Change the end amount to {end} {item}"
        else:
            old_s, new_s = _start_sentence(p, p["start"]), _start_sentence(p, start)
            change = f'the problem began "{new_s}" instead of "{old_s}"'
            note = f'Change the start to "{new_s}"'
        ask = (f"How many {item} would there have been at the start?" if p["reverse"]
               else f"How many {item} would there be at the end?")
        spec = {"ask": "final", "problem": new, "note": note + ", everything else the same."}
        return [_synth("counterfactual", f"{_statement(p)} Suppose {change}, with everything else "
                       f"the same. {ask}", spec, "number")]
    return []


def challenge(ex, seed=0):
    """Explanatory challenge: make the answerer justify (or refute) one specific step.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'A student says that step 2 ("Mia gives away 4
         marbles.") is 12 + 4 = 16. Is this step right? Answer yes or no.'  (answer no:
         giving away subtracts, 12 - 4 = 8)
    On text: one sentence of the teacher's reasoning is quoted and must be justified;
    needs teacher reasoning."""
    p, rng = ex.get("problem"), _rng(ex, "challenge", seed)
    if p is None:
        steps = [s.strip(" *-#") for s in re.split(r"(?<=[.!?])\s+|\n", ex.get("reasoning") or "")]
        steps = [s for s in steps if len(s.split()) >= 4 and "answer is" not in s.lower()]
        if not steps:
            return []
        return _text("challenge", ex, f'One step of a proposed solution says: "{rng.choice(steps)}" '
                     "Is this step correct? Justify your verdict from the facts of the question.", "yesno")
    i = rng.randint(1, len(p["ops"]))
    v, (kind, n) = trace(p["start"], p["ops"]), p["ops"][i - 1]
    claim = [v[i - 1], kind, n, v[i]]
    if rng.random() < 0.5:  # a wrong claim half of the time: wrong operation or wrong result
        wrong = [k for k in OP_PHRASE if k != kind and (k != "div" or v[i - 1] % n == 0)
                 and (k != "sub" or v[i - 1] > n)]
        if wrong and rng.random() < 0.5:
            k = rng.choice(wrong)
            claim = [v[i - 1], k, n, trace(v[i - 1], [(k, n)])[-1]]
        else:
            claim = [v[i - 1], kind, n, rng.choice([v[i] + d for d in (-2, -1, 1, 2) if v[i] + d >= 1])]
    spec = {"ask": "check_step", "problem": p, "step": i, "claim": claim}
    eq = f"{claim[0]} {OP_SYMBOL[claim[1]]} {claim[2]} = {claim[3]}"
    return [_synth("challenge", f"{_statement(p)} A student says that {_quote(p, i)} is {eq}. "
                   "Is this step right? Answer yes or no.", spec, "yesno")]


def decompose(ex, seed=0):
    """Decomposition: split the problem into sub-questions, one intermediate result each.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'Break the problem into steps. How many marbles are
         there right after step 1 ("Mia finds 5 more marbles.")?'  (answer 12)
    One probe per intermediate amount (none for a one-step problem). On text: the answerer
    lists the sub-questions, answers each, then answers the question."""
    p = ex.get("problem")
    if p is None:
        return _text("decompose", ex, "Break this question into smaller sub-questions. Answer each "
                     "sub-question in turn, then use them to answer the question.",
                     ex["answer_type"], ex["answer"])
    return [_synth("decompose", f"{_statement(p)} Break the problem into steps. How many {_item(p)} "
                   f"are there right after {_quote(p, i)}?", {"ask": "value", "problem": p, "step": i},
                   "number") for i in range(1, len(p["ops"]))]


def why(ex, seed=0):
    """Why-question: ask why a sentence changes the amount, i.e. which operation it implies.

    Example: "... Mia splits her marbles into 3 equal bags and keeps one bag. ..."
      -> probe: the same facts, then 'Why does the amount change in step 2 ("Mia splits
         her marbles into 3 equal bags and keeps one bag.")? Does this sentence mean that we
         multiply the amount by 3? Answer yes or no.'  (answer no: it means divide by 3)
    On text: the answer is given, and the answerer explains why it is right."""
    p, rng = ex.get("problem"), _rng(ex, "why", seed)
    if p is None:
        return _text("why", ex, f"The answer is {ex['answer']}. Explain why: which facts and which "
                     "reasoning lead to this answer?", ex["answer_type"], ex["answer"], reveals=True)
    i = rng.randint(1, len(p["ops"]))
    kind, n = p["ops"][i - 1]
    claim = kind if rng.random() < 0.5 else rng.choice([k for k in OP_PHRASE if k != kind])
    spec = {"ask": "is_op", "problem": p, "step": i, "op": [claim, n]}
    return [_synth("why", f"{_statement(p)} Why does the amount change in {_quote(p, i)}? Does this "
                   f"sentence mean that we {OP_PHRASE[claim].format(n=n)}? Answer yes or no.", spec, "yesno")]


def cause_effect(ex, seed=0):
    """Cause and effect: ask for the effect one event (the cause) has on the amount.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'What is the effect of step 2 ("Mia gives away 4
         marbles.") on the number of marbles: by how many marbles does it change the
         amount? Answer with the size of the change.'  (answer 4: 12 - 8)
    On text: the answerer names the causes and effects the answer depends on, then answers."""
    p, rng = ex.get("problem"), _rng(ex, "cause_effect", seed)
    if p is None:
        return _text("cause_effect", ex, "Identify the causes and effects this question depends on: "
                     "what leads to what? Use them to answer the question.", ex["answer_type"], ex["answer"])
    i, item = rng.randint(1, len(p["ops"])), _item(p)
    return [_synth("cause_effect", f"{_statement(p)} What is the effect of {_quote(p, i)} on the number "
                   f"of {item}: by how many {item} does it change the amount? Answer with the size of "
                   "the change.", {"ask": "change", "problem": p, "step": i}, "number")]


def process(ex, seed=0):
    """Process / mechanism: follow the chain of events and locate one transition in it.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'Follow the process step by step. In which step does
         the number of marbles go from 12 to 8? Answer with the step number.'  (answer 2)
    Applies when some transition happens only once. On text: the answerer describes, step
    by step, the process that determines the answer, then answers."""
    p, rng = ex.get("problem"), _rng(ex, "process", seed)
    if p is None:
        return _text("process", ex, "Describe, step by step, the process or mechanism that "
                     "determines the answer, then answer the question.", ex["answer_type"], ex["answer"])
    v = trace(p["start"], p["ops"])
    pairs = [(v[j - 1], v[j]) for j in range(1, len(v))]
    unique = [pair for pair in pairs if pairs.count(pair) == 1]
    if not unique:
        return []
    a, b = rng.choice(unique)
    return [_synth("process", f"{_statement(p)} Follow the process step by step. In which step does "
                   f"the number of {_item(p)} go from {a} to {b}? Answer with the step number.",
                   {"ask": "which_step", "problem": p, "from": a, "to": b}, "number")]


def compare(ex, seed=0):
    """Comparison / contrast: compare two states (or two candidate answers) of the problem.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'Compare the start and the end: are there more
         marbles at the end than at the start? Answer yes or no.'  (answer yes: 8 > 7)
    On text: a choice question compares the gold option with a distractor; a yes/no
    question contrasts what yes and no would require; number and math questions: none."""
    p, rng = ex.get("problem"), _rng(ex, "compare", seed)
    if p is None:
        t, options = ex["answer_type"], _options(ex["question"])
        if t == "yesno":
            return _text("compare", ex, "Contrast the two possible answers: what would have to be "
                         "true for the answer to be yes, and what for it to be no? Which holds?",
                         "yesno", ex["answer"])
        if t != "choice" or ex["answer"] not in options or len(options) < 2:
            return []
        x, y = rng.sample([ex["answer"], rng.choice([o for o in options if o != ex["answer"]])], 2)
        return _text("compare", ex, f"Compare option ({x}) with option ({y}). Is option ({x}) a better "
                     f"answer to the question than option ({y})?", "yesno", _yesno(x == ex["answer"]))
    return [_synth("compare", f"{_statement(p)} Compare the start and the end: are there more "
                   f"{_item(p)} at the end than at the start? Answer yes or no.",
                   {"ask": "more_at_end", "problem": p}, "yesno")]


def hypothesis(ex, seed=0):
    """Hypothesis exploration: state a hypothesis about the problem and ask to test it.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'Hypothesis: right after step 1 ("Mia finds 5 more
         marbles.") there are 13 marbles. Test this hypothesis: is it true? Answer yes or
         no.'  (answer no: there are 12)
    Synthetic: about an intermediate amount (none for a one-step problem). On text: the
    hypothesis is the gold answer or a wrong one, and it is tested against the facts."""
    p, rng = ex.get("problem"), _rng(ex, "hypothesis", seed)
    if p is None:
        a, t = ex["answer"], ex["answer_type"]
        wrong = {"yesno": [o for o in ("yes", "no") if o != a.lower()],
                 "choice": [f"({o})" for o in _options(ex["question"]) if o != a]}.get(t, [])
        if t == "number" and re.fullmatch(r"-?\d+", a):
            wrong = [str(int(a) + d) for d in (-2, -1, 1, 2)]
        gold_h = f"({a})" if t == "choice" else a
        h = rng.choice(wrong) if wrong and rng.random() < 0.5 else gold_h
        return _text("hypothesis", ex, f"Hypothesis: the answer is {h}. Test this hypothesis against "
                     "the facts of the question. Is it true?", "yesno", _yesno(h == gold_h), reveals=True)
    if len(p["ops"]) < 2:
        return []
    i = rng.randint(1, len(p["ops"]) - 1)
    v = trace(p["start"], p["ops"])
    wrong = [v[i - 1]] + [v[i] + d for d in (-2, -1, 1, 2) if v[i] + d >= 1]  # v[i - 1] != v[i]: every step changes the amount
    claim = v[i] if rng.random() < 0.5 else rng.choice(wrong)
    return [_synth("hypothesis", f"{_statement(p)} Hypothesis: right after {_quote(p, i)} there are "
                   f"{claim} {_item(p)}. Test this hypothesis: is it true? Answer yes or no.",
                   {"ask": "check_value", "problem": p, "step": i, "claim": claim}, "yesno")]


def reverse(ex, seed=0):
    """Reverse (A -> Q inversion): give the answer and ask for a premise.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: 'Mia starts with some marbles. Mia finds 5 more marbles. Mia gives away 4
         marbles. In the end there are 8 marbles. How many marbles were there at the
         start?'  (answer 7). A reversed problem is inverted to its forward form.
    The probe states the original answer (reveals_answer). On text: RevThink's backward
    question when the record has one; a number question hides one of its numbers;
    otherwise the answer is checked backwards against the facts."""
    p = ex.get("problem")
    if p is not None:
        new = dict(p, reverse=not p["reverse"])
        return [_synth("reverse", question_text(new), {"ask": "final", "problem": new}, "number", reveals=True)]
    bq = ex.get("backward_question") or ""
    m = re.search(r"\s*The correct answer is \(?([A-J1-9])\)?\.?\s*$", bq)
    if m and m.group(1) in _options(bq[:m.start()]):
        return [_probe("reverse", bq[:m.start()].strip(), "choice", m.group(1), reveals=True)]
    a, q = ex["answer"], ex["question"]
    if ex["answer_type"] == "number":
        nums = [m for m in re.finditer(r"(?<![\w.,])\d+(?:\.\d+)?(?![\w]|[.,]\d)", q)
                if len(re.findall(rf"(?<![\w.,]){re.escape(m.group())}(?![\w]|[.,]\d)", q)) == 1]
        if nums:
            m = _rng(ex, "reverse", seed).choice(nums)
            hidden = q[:m.start()] + "x" + q[m.end():]
            return [_probe("reverse", f"{hidden.strip()}\n\nThe answer to this question is {a}. Working "
                           "backwards from this answer, what is the value of x?", "number", m.group(), reveals=True)]
    return [_probe("reverse", f"The answer to the question below is {a}.\n{q.strip()}\n\nWork backwards: "
                   "starting from this answer, which facts must hold for it to be right? Do all of them "
                   "hold?", "yesno", "yes", reveals=True)]


def necessity(ex, seed=0):
    """Necessity: which premise the answer needs, and what breaks without it.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'Is step 1 ("Mia finds 5 more marbles.") needed?
         Suppose it did not happen and everything else stayed the same. How many marbles
         would there be at the end?'  (answer 3, not 8: the step is needed)
    Applies when some step can be left out with whole amounts left. On text: the answerer
    names the fact the answer depends on most and says whether the answer survives without it."""
    p, rng = ex.get("problem"), _rng(ex, "necessity", seed)
    if p is None:
        return _text("necessity", ex, f"Which single fact stated in or implied by this question is "
                     f"necessary for the answer {ex['answer']}? Without that fact, could one still be "
                     "sure of this answer?", "yesno", "no", reveals=True)
    end, ok = trace(p["start"], p["ops"])[-1], []
    for k in range(1, len(p["ops"]) + 1):
        ops = [op for j, op in enumerate(p["ops"], 1) if j != k]
        start = _start_from_end(end, ops) if p["reverse"] else p["start"]
        if start is not None and _valid(dict(p, start=start, ops=ops)):
            ok.append(k)
    if not ok:
        return []
    k, item = rng.choice(ok), _item(p)
    ask = (f"and the end amount were still {end}. How many {item} would there have been at the start?"
           if p["reverse"] else f"and everything else stayed the same. How many {item} would there be at the end?")
    return [_synth("necessity", f"{_statement(p)} Is {_quote(p, k)} needed? Suppose it did not happen {ask}",
                   {"ask": "without_step", "problem": p, "step": k}, "number")]


RULES = {f.__name__: f for f in (counterfactual, challenge, decompose, why, cause_effect,
                                  process, compare, hypothesis, reverse, necessity)}


def parse_rules(rules=None):
    """'counterfactual,reverse' (or a list) -> the rule names; None -> all ten."""
    if rules is None:
        return list(RULES)
    names = [r.strip() for r in (rules.split(",") if isinstance(rules, str) else rules) if r.strip()]
    unknown = [r for r in names if r not in RULES]
    if unknown or not names:
        raise ValueError(f"unknown rule {', '.join(unknown) or '(none given)'}; the ten rules are: "
                         f"{', '.join(RULES)}")
    return list(dict.fromkeys(names))


def make_probes(ex, rules=None, seed=0):
    """All template probes of one example, rule by rule."""
    return [probe for r in parse_rules(rules) for probe in RULES[r](ex, seed)]

# -----------------------------------------------------------------------------
# prompts: what a teacher (or the student) is actually sent

def format_question(question, answer_type):
    """A question plus the answer-format line rewards.py checks against (data/real.py's)."""
    from data.real import format_instruction
    return f"{question}\n{format_instruction(answer_type)}"


def _user(text):
    return [{"role": "user", "content": text}]


def consistency_dialogue(probe, question, answer_type):
    """[probe | the teacher's reasoning and answer to it | Q]: the EI-consistency prompt."""
    return (_user(format_question(probe["question"], probe["answer_type"]))
            + [{"role": "assistant", "content": probe["teacher_reasoning"]}]
            + _user(format_question(question, answer_type)))


def writer_prompt(rule, ex, answer_type):
    """--probe-writer teacher: the rule's definition and example (its docstring) plus (Q, A, R_T)."""
    kind = {"yesno": "yes or no", "number": "a single number", "choice": "an option letter",
            "math": "a short mathematical expression"}[answer_type]
    return (f"You write explanatory probes: new questions that make a student explain the logic "
            f"behind an answer instead of pattern-matching it. Apply this rule.\n\nRule: {rule}\n"
            f"{inspect.getdoc(RULES[rule])}\n\nOriginal question: {ex['question'].strip()}\n"
            f"Gold answer: {ex['answer']}\nTeacher reasoning: {(ex.get('reasoning') or '(none)').strip()}\n\n"
            f"Write one probe for this question with the rule above. The probe must restate every "
            f"fact it needs (its reader will not see the original question), and its answer must be "
            f"{kind}. If the rule cannot apply to this question, write only NOT APPLICABLE. "
            f"Otherwise write only one line: Probe: <the probe question>")


def parse_written_probe(text):
    """The probe in a writer's reply ('Probe: ...'), or None for NOT APPLICABLE / nothing."""
    if not text or "NOT APPLICABLE" in text.upper():
        return None
    found = re.findall(r"Probe:\s*(.+?)\s*$", text, flags=re.IGNORECASE | re.MULTILINE | re.DOTALL)
    return (found[-1].strip() or None) if found else None

# -----------------------------------------------------------------------------
# the teacher cache: one JSON line per answer, fsynced as it arrives

def cache_key(teacher_id, messages, sampling):
    """sha256 of (teacher id, the full prompt, the sampling settings)."""
    blob = json.dumps([teacher_id, messages, sampling], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class TeacherCache:
    """Append-only JSONL of teacher answers: {"key", "teacher", "messages", "answer"} a line.

    Each answer is written, flushed and fsynced the moment it arrives, so a crash loses at
    most the calls in flight. A last line cut short by a kill is skipped with a warning and
    cut off the file, so the next append starts on a clean line."""

    def __init__(self, path):
        self.path = Path(path)
        self.answers = {}
        self.lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self.file = open(self.path, "a", encoding="utf-8")

    def _load(self):
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines, offset = data.split(b"\n"), 0
        for i, raw in enumerate(lines):
            last = i == len(lines) - 1
            try:
                if raw.strip():
                    rec = json.loads(raw)
                    self.answers[rec["key"]] = rec["answer"]
            except (ValueError, KeyError, TypeError):
                warnings.warn(f"teacher cache {self.path}: line {i + 1} is corrupt (a write cut short by a "
                              f"kill?); skipped it, its answer will be asked again")
                if last:  # no newline after it: cut it off, so the next append starts a clean line
                    os.truncate(self.path, offset)
                    return
            offset += len(raw) + 1
        if data and not data.endswith(b"\n"):  # a complete last record without its newline
            with open(self.path, "ab") as f:
                f.write(b"\n")

    def __contains__(self, key):
        return key in self.answers

    def __len__(self):
        return len(self.answers)

    def get(self, key):
        return self.answers[key]

    def put(self, key, teacher_id, messages, answer):
        line = json.dumps({"key": key, "teacher": teacher_id, "messages": messages, "answer": answer},
                          ensure_ascii=False)
        with self.lock:
            self.answers[key] = answer
            self.file.write(line + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self):
        self.file.close()

# -----------------------------------------------------------------------------
# teachers: one interface, answer(prompts, specs=None) -> list[str]. A prompt is a string
# (one user turn) or a chat conversation; specs carry the synthetic structure the oracle needs.

class TeacherError(RuntimeError):
    """A teacher cannot answer (bad endpoint, refused key, oracle on text, ...)."""


class Teacher:
    id = "teacher"
    cacheable = True  # the oracle is exact and free: caching it would only cost disk

    def __init__(self):
        self.sampling = {}
        self.cache = None
        self.calls = 0       # answers actually produced (not from the cache)
        self.cache_hits = 0

    def answer(self, prompts, specs=None):
        """One answer text per prompt. Cached answers are reused; identical prompts asked once."""
        convs = [_user(p) if isinstance(p, str) else list(p) for p in prompts]
        specs = list(specs) if specs is not None else [None] * len(convs)
        out = [None] * len(convs)
        if self.cache is None or not self.cacheable:
            for j, text in self._stream(convs, specs):
                out[j] = text
                self.calls += 1
            return out
        keys = [cache_key(self.id, c, self.sampling) for c in convs]
        todo = {}  # key -> first index asking it
        for i, k in enumerate(keys):
            if k in self.cache:
                out[i] = self.cache.get(k)
                self.cache_hits += 1
            else:
                todo.setdefault(k, i)
        firsts = list(todo.values())
        if not firsts:  # everything cached: the teacher is never started (no model load, no request)
            return out
        try:
            for j, text in self._stream([convs[i] for i in firsts], [specs[i] for i in firsts]):
                self.cache.put(keys[firsts[j]], self.id, convs[firsts[j]], text)
                self.calls += 1
        except TeacherError as e:
            raise TeacherError(f"{e}\n(the {len(self.cache)} answers received so far are saved in "
                               f"{self.cache.path}; a rerun resumes from there)") from None
        return [self.cache.get(k) for k in keys]

    def _stream(self, convs, specs):
        """Yield (index, answer text) as answers arrive, in any order."""
        raise NotImplementedError


class OracleTeacher(Teacher):
    """The synthetic world's exact teacher: answers from a probe's spec, never its text."""
    id, cacheable = "oracle", False

    def _stream(self, convs, specs):
        for j, spec in enumerate(specs):
            if spec is None:
                raise TeacherError("the oracle teacher answers only synthetic probes (it computes answers "
                                   "from the problem structure); use --teacher hf:<model> or --teacher-url "
                                   "for text datasets and for --probe-writer teacher")
            yield j, solve(spec)[1]


class FunctionTeacher(Teacher):
    """A teacher from a plain function fn(messages, spec) -> text (tests, custom APIs)."""

    def __init__(self, fn, name="function"):
        super().__init__()
        self.fn, self.id = fn, name

    def _stream(self, convs, specs):
        for j, (c, s) in enumerate(zip(convs, specs)):
            yield j, self.fn(c, s)


class HFTeacher(Teacher):
    """A local transformers model (hf:<path-or-id>, or a sample.py alias like hf:tiny), greedy."""

    def __init__(self, name, max_new_tokens=TEACHER_MAX_TOKENS, batch_size=16, temperature=0.0):
        super().__init__()
        self.name, self.id, self.batch_size = name, f"hf:{name}", batch_size
        self.sampling = {"max_new_tokens": max_new_tokens, "temperature": temperature}
        self.model = self.tokenizer = None

    def _stream(self, convs, specs):
        from sample import generate_text, load_student
        if self.model is None:  # load on first use: a fully cached rerun never loads it
            self.model, self.tokenizer = load_student(self.name)
        for s in range(0, len(convs), self.batch_size):  # one batch at a time, so answers cache early
            texts = generate_text(self.model, self.tokenizer, convs[s:s + self.batch_size],
                                  batch_size=self.batch_size, **self.sampling)
            yield from enumerate(texts, s)


class _Stopped(Exception):
    """A request skipped because another one already ended the run."""


def _retry_after(headers, cap):
    """Seconds a 429/503 asks us to wait (Retry-After: seconds), or None."""
    try:
        return min(cap, max(0.0, float(headers.get("Retry-After"))))
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date: fall back to our own backoff


class EndpointTeacher(Teacher):
    """An OpenAI-compatible chat-completions endpoint (vLLM, SGLang, a hosted API), stdlib only.

    Retries with exponential backoff on timeouts, connection errors, malformed replies, 429
    (honouring Retry-After) and 5xx; a 4xx other than 408/429 will not improve with a
    retry and stops the run with the server's message. The cache id is the model name,
    not the URL, so the same model served elsewhere reuses its answers."""

    def __init__(self, url, model, key=None, concurrency=CONCURRENCY, timeout=TIMEOUT, retries=RETRIES,
                 backoff=BACKOFF, max_backoff=MAX_BACKOFF, temperature=0.0, max_tokens=TEACHER_MAX_TOKENS):
        super().__init__()
        if not url or not model:
            raise TeacherError("an endpoint teacher needs both --teacher-url and --teacher-model")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.id = model, f"openai:{model}"
        self.key = key if key is not None else next((os.environ[v] for v in KEY_ENV_VARS if os.environ.get(v)), None)
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.sampling = {"temperature": temperature, "max_tokens": max_tokens}

    def _post(self, messages):
        """One HTTP request -> the answer text; raises on any failure."""
        body = json.dumps({"model": self.model, "messages": messages, **self.sampling}).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            raw = r.read()
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ValueError(f"malformed reply ({type(e).__name__}): {raw[:200]!r}") from None
        if not isinstance(content, str):
            raise ValueError(f"malformed reply: content is {content!r}")
        return content

    def request(self, messages, stop=None):
        """One chat completion, with retries and exponential backoff; gives up early once
        `stop` (a threading.Event) is set, i.e. another request hit an error that ends the run."""
        last = None
        for attempt in range(self.retries + 1):
            if stop is not None and stop.is_set():
                raise _Stopped()
            # jitter so that many clients do not retry in step; Retry-After is a floor, never jittered
            wait = min(self.max_backoff, self.backoff * 2 ** attempt) * random.uniform(0.8, 1.0)
            try:
                return self._post(messages)
            except urllib.error.HTTPError as e:
                try:
                    detail = e.read()[:300].decode("utf-8", "replace")
                except Exception:  # the body itself may be cut off
                    detail = ""
                if e.code not in (408, 429) and e.code < 500:
                    if stop is not None:  # set here, in the worker, before it can pick up the next prompt
                        stop.set()
                    raise TeacherError(
                        f"teacher endpoint {self.url} answered HTTP {e.code} {e.reason}: {detail.strip()}\n"
                        f"Not retried: a {e.code} will not improve. Check --teacher-url, --teacher-model "
                        f"({self.model}) and the key in ${KEY_ENV_VARS[0]} or ${KEY_ENV_VARS[1]}.") from None
                last = f"HTTP {e.code} {e.reason}"
                wait = max(wait, _retry_after(e.headers, self.max_backoff) or 0)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                # refused, reset, timed out, cut short, or a reply that is not chat-completions JSON
                last = f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"
            if attempt < self.retries:
                time.sleep(wait)
        if stop is not None:
            stop.set()
        raise TeacherError(f"could not get an answer from teacher endpoint {self.url} after "
                           f"{self.retries + 1} tries (last error: {last})")

    def _stream(self, convs, specs):
        pool, stop = ThreadPoolExecutor(max_workers=self.concurrency), threading.Event()
        futures = {pool.submit(self.request, c, stop): j for j, c in enumerate(convs)}
        error = None
        try:
            for f in as_completed(futures):
                try:
                    text = f.result()
                except (CancelledError, _Stopped):
                    continue
                except TeacherError as e:  # ask nothing new; answers already in flight still count
                    if error is None:
                        error = e
                        stop.set()
                        for g in futures:
                            g.cancel()
                    continue
                yield futures[f], text
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if error is not None:
            raise error


def make_teacher(spec=TEACHER, url=None, model=None, key=None, cache_path=None, **kw):
    """A teacher from a spec: "oracle", "hf:<path-or-id>", "openai" (+ url, model), or a
    function fn(messages, spec) -> text. A url alone means the endpoint teacher.
    Endpoint keywords: concurrency, timeout, retries, backoff, max_backoff, temperature,
    max_tokens; hf keywords: max_new_tokens, batch_size, temperature."""
    if callable(spec):
        teacher = FunctionTeacher(spec, **kw)
    elif url is not None and spec in (None, "oracle", "openai", "endpoint"):
        teacher = EndpointTeacher(url, model, key, **kw)
    elif spec in ("openai", "endpoint"):
        raise TeacherError("the endpoint teacher needs --teacher-url (and --teacher-model)")
    elif url is not None:
        raise TeacherError(f"--teacher-url is given but --teacher is {spec!r}; give one teacher")
    elif spec == "oracle":
        teacher = OracleTeacher()
    elif isinstance(spec, str) and spec.startswith("hf:") and len(spec) > 3:
        teacher = HFTeacher(spec[3:], **kw)
    else:
        raise TeacherError(f"unknown teacher {spec!r}; use oracle, hf:<path-or-id>, or --teacher-url URL "
                           f"--teacher-model NAME for an OpenAI-compatible endpoint")
    if cache_path is not None and teacher.cacheable:
        teacher.cache = TeacherCache(cache_path)
    return teacher

# -----------------------------------------------------------------------------
# D_EI: rules -> teacher -> EI-consistency filter -> difficulty filter

def _usable(r):
    """A row needs a question, a gold answer and a known answer type."""
    from rewards import ANSWER_TYPES
    q, a = r.get("question"), r.get("answer")
    return (isinstance(q, str) and bool(q.strip()) and a is not None and bool(str(a).strip())
            and r.get("answer_type") in ANSWER_TYPES)


def _new_stats(rules, tau_hard):
    per_rule = dict(questions=0, not_applicable=0, probes=0, wrong_answer=0, inconsistent=0,
                    consistent=0, student_checked=0, student_correct=0, in_kept=0)
    return {"rules": {r: dict(per_rule) for r in rules}, "tau_hard": tau_hard,
            "questions": dict(rows=0, skipped_bad_rows=0, no_probe=0, no_consistent_probe=0,
                              too_easy=0, too_hard=0, kept=0, teacher_wrong_on_question=0)}


def _write_probes(batch, rules, teacher, probe_writer, seed):
    """The probes of each example of a batch: from the templates, or written by the teacher."""
    if probe_writer == "template":
        return [make_probes(ex, rules, seed) for ex in batch]
    asks = []  # (example index, rule, answer type)
    for b, ex in enumerate(batch):
        types = {p["rule"]: p["answer_type"] for p in make_probes(ex, rules, seed)}
        asks += [(b, r, types.get(r, ex["answer_type"])) for r in rules]
    replies = teacher.answer([writer_prompt(r, batch[b], t) for b, r, t in asks]) if asks else []
    probes = [[] for _ in batch]
    for (b, r, t), reply in zip(asks, replies):
        text = parse_written_probe(reply)
        if text:  # the writer knows no gold answer, and may or may not state A
            probes[b].append(_probe(r, text, t, reveals=None))
    return probes


def _student_answers(student, probes, max_new_tokens, batch_size):
    """The student's greedy answer to each probe, asked on its own (a fresh conversation)."""
    convs = [_user(format_question(p["question"], p["answer_type"])) for p in probes]
    if not convs:
        return []
    if callable(student):  # fn(conversations) -> texts: tests, or a student served elsewhere
        return list(student(convs))
    from sample import generate_text
    model, tok = student
    return generate_text(model, tok, convs, max_new_tokens=max_new_tokens, batch_size=batch_size)


def _build_chunk(batch, teacher, rules, student, tau_hard, probe_writer, seed, stats,
                 student_max_tokens, student_batch_size):
    from rewards import extract_answer, is_correct
    dei = [{"id": ex.get("id"), "question": ex["question"], "answer": str(ex["answer"]).strip(),
            "answer_type": ex["answer_type"], "problem": ex.get("problem"),
            "reasoning": ex.get("reasoning") or None,
            "reasoning_source": "dataset" if ex.get("reasoning") else "teacher"} for ex in batch]
    examples = [dict(ex, answer=d["answer"]) for ex, d in zip(batch, dei)]

    # 1. probes, rule by rule
    for d, probes in zip(dei, _write_probes(examples, rules, teacher, probe_writer, seed)):
        d["probes"] = probes
    for d in dei:
        for r in rules:
            n = sum(p["rule"] == r for p in d["probes"])
            stats["rules"][r]["questions" if n else "not_applicable"] += 1
            stats["rules"][r]["probes"] += n

    # 2. teacher reasoning for Q itself: shipped with the dataset, else asked
    ask = [d for d in dei if d["reasoning"] is None]
    if ask:
        texts = teacher.answer([format_question(d["question"], d["answer_type"]) for d in ask],
                               [{"ask": "final", "problem": d["problem"]} if d["problem"] else None for d in ask])
        for d, text in zip(ask, texts):
            d["reasoning"] = text
    for d in dei:
        d["reasoning_correct"] = is_correct(d["reasoning"], d["answer"], d["answer_type"], d["question"])
        stats["questions"]["teacher_wrong_on_question"] += not d["reasoning_correct"]

    # 3. the teacher answers every probe; a known gold answer must be matched
    flat = [(d, p) for d in dei for p in d["probes"]]
    texts = teacher.answer([format_question(p["question"], p["answer_type"]) for _, p in flat],
                           [p["spec"] for _, p in flat]) if flat else []
    for (d, p), text in zip(flat, texts):
        p["teacher_reasoning"] = text
        p["teacher_answer"] = extract_answer(text, p["answer_type"], p["question"])
        if p["teacher_answer"] is None:  # no final answer: nothing to learn from, nothing to check
            p["answer_correct"] = False
        elif p["answer"] is not None:
            p["answer_correct"] = is_correct(text, p["answer"], p["answer_type"], p["question"])

    # 4. EI-consistency: shown [probe | its reasoning and answer | Q], the teacher must still say A
    check = [(d, p) for d, p in flat if p["answer_correct"] is not False]
    texts = teacher.answer([consistency_dialogue(p, d["question"], d["answer_type"]) for d, p in check],
                           [{"ask": "final", "problem": d["problem"]} if d["problem"] else None
                            for d, _ in check]) if check else []
    for (d, p), text in zip(check, texts):
        p["consistent"] = is_correct(text, d["answer"], d["answer_type"], d["question"])
    for d, p in flat:
        p["kept"] = p["answer_correct"] is not False and p["consistent"] is True
        s = stats["rules"][p["rule"]]
        s["wrong_answer" if p["answer_correct"] is False else "consistent" if p["kept"] else "inconsistent"] += 1

    # 5. difficulty: the untrained student answers the consistent probes
    kept = [(d, p) for d, p in flat if p["kept"]]
    if student is not None:
        texts = _student_answers(student, [p for _, p in kept], student_max_tokens, student_batch_size)
        for (d, p), text in zip(kept, texts):
            gold = p["answer"] if p["answer"] is not None else p["teacher_answer"]
            p["student_correct"] = is_correct(text, gold, p["answer_type"], p["question"])
            stats["rules"][p["rule"]]["student_checked"] += 1
            stats["rules"][p["rule"]]["student_correct"] += p["student_correct"]

    # 6. the verdict on Q
    for d in dei:
        good = [p for p in d["probes"] if p["kept"]]
        solved = sum(bool(p["student_correct"]) for p in good)
        d.update(n_probes=len(d["probes"]), n_consistent=len(good),
                 n_student_correct=solved if student is not None else None)
        if not d["probes"]:
            reason = "no_probe"
        elif not good:
            reason = "no_consistent_probe"
        elif student is not None and solved == len(good):
            reason = "too_easy"   # the student already explains all of it: nothing to learn
        elif student is not None and solved < tau_hard * len(good):
            reason = "too_hard"   # the student cannot follow any of it yet
        else:
            reason = None
        d["kept"], d["drop_reason"] = reason is None, reason
        stats["questions"][reason or "kept"] += 1
        if reason is None:
            for p in good:
                stats["rules"][p["rule"]]["in_kept"] += 1
    return dei


def build_dei(records, teacher, rules=None, student=None, tau_hard=TAU_HARD, cache_path=None,
              probe_writer=PROBE_WRITER, seed=0, chunk=CHUNK, progress=True,
              student_max_tokens=STUDENT_MAX_TOKENS, student_batch_size=16):
    """D_EI from uniform records: (one record per usable question, stats).

    teacher: a Teacher (make_teacher) or its spec string; student: None / "none" (skip the
    student check), a sample.py name ("tiny", "smollm2-135m", a path), (model, tokenizer), or
    a function fn(conversations) -> answer texts;
    tau_hard: the fraction of its consistent probes the student must solve for Q to stay.
    Rows without a question, a gold answer or an answer type are counted and skipped."""
    from tqdm import tqdm
    rules = parse_rules(rules)
    if not 0 <= tau_hard <= 1:
        raise ValueError(f"tau_hard is a fraction of a question's consistent probes, in [0, 1]; got {tau_hard}")
    if probe_writer not in ("template", "teacher"):
        raise ValueError(f"unknown probe writer {probe_writer!r}; choose template or teacher")
    teacher = make_teacher(teacher) if isinstance(teacher, str) else teacher
    if cache_path is not None and teacher.cacheable and teacher.cache is None:
        teacher.cache = TeacherCache(cache_path)
    if isinstance(student, str):
        if student == "none":
            student = None
        else:
            from sample import load_student
            student = load_student(student)
    stats = _new_stats(rules, tau_hard)
    good = [r for r in records if _usable(r)]
    stats["questions"]["rows"] = len(records)
    stats["questions"]["skipped_bad_rows"] = len(records) - len(good)
    if len(good) < len(records):
        print(f"probes.py: skipped {len(records) - len(good)} of {len(records)} rows with no question, "
              f"no gold answer or no answer type", file=sys.stderr)
    dei = []
    t0 = time.time()
    with tqdm(total=len(good), desc="D_EI", unit="q", disable=not progress) as bar:
        for s in range(0, len(good), chunk):
            dei += _build_chunk(good[s:s + chunk], teacher, rules, student, tau_hard, probe_writer, seed,
                                stats, student_max_tokens, student_batch_size)
            bar.update(len(good[s:s + chunk]))
            bar.set_postfix(teacher_calls=teacher.calls, cached=teacher.cache_hits)
    stats["teacher"] = {"id": teacher.id, "calls": teacher.calls, "cache_hits": teacher.cache_hits}
    stats["student"] = None if student is None else "checked"
    stats["seconds"] = round(time.time() - t0, 2)
    return dei, stats


def format_table(stats):
    """The filter table: probes per rule through each filter, then questions."""
    head = ("rule", "questions", "n/a", "probes", "wrong", "inconsistent", "consistent", "student_ok", "in_kept")
    rows = []
    for r, s in stats["rules"].items():
        ok = f"{s['student_correct']}/{s['student_checked']}" if s["student_checked"] else "-"
        rows.append((r, s["questions"], s["not_applicable"], s["probes"], s["wrong_answer"],
                     s["inconsistent"], s["consistent"], ok, s["in_kept"]))
    total = [sum(s[k] for s in stats["rules"].values()) for k in
             ("probes", "wrong_answer", "inconsistent", "consistent", "student_checked", "student_correct", "in_kept")]
    rows.append(("all", "", "", total[0], total[1], total[2], total[3],
                 f"{total[5]}/{total[4]}" if total[4] else "-", total[6]))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
    q = stats["questions"]
    lines = [fmt(head)] + [fmt(r) for r in rows] + [
        f"questions: {q['rows']} rows, {q['skipped_bad_rows']} skipped (no question/answer), "
        f"{q['no_probe']} with no probe, {q['no_consistent_probe']} with no consistent probe, "
        f"{q['too_easy']} too easy (student solved every probe), {q['too_hard']} too hard "
        f"(< tau_hard={stats['tau_hard']}), {q['kept']} kept"
        + ("" if stats.get("student") else " (student check off)"),
        f"teacher wrong on the original question itself: {q['teacher_wrong_on_question']}"]
    if "teacher" in stats:
        t = stats["teacher"]
        lines.append(f"teacher {t['id']}: {t['calls']} answers asked, {t['cache_hits']} from the cache")
    return "\n".join(lines)


def save_dei(path, dei):
    """Write D_EI as JSONL, atomically (a killed run never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for d in dei:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def load_dei(path, kept_only=True):
    """The D_EI records of a file written by build_dei / the CLI (only the kept questions by
    default; each keeps all its probes, use those with probe["kept"])."""
    with open(path, encoding="utf-8") as f:
        dei = [json.loads(line) for line in f if line.strip()]
    return [d for d in dei if d["kept"]] if kept_only else dei

# -----------------------------------------------------------------------------
# command line

def load_records(dataset, split=SPLIT, limit=None, seed=0, data_dir=None):
    """Uniform records of the synthetic world or of any dataset data/real.py knows."""
    if dataset == "synth":
        return generate(split, SYNTH_N if limit is None else limit, seed)
    from data.real import load_dataset
    return load_dataset(dataset, split, data_dir=data_dir, limit=limit)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("data")
    g.add_argument("--dataset", default=DATASET, help="synth, or a name data/real.py knows (strategyqa, gsm8k, ...)")
    g.add_argument("--split", default=SPLIT)
    g.add_argument("--limit", type=int, default=None, help=f"at most this many questions (synth default {SYNTH_N})")
    g.add_argument("--seed", type=int, default=0, help="synthetic problems and the rules' random choices")
    g.add_argument("--data-dir", default=None, help="the real datasets (else $EXGRPO_DATA_DIR, else ../shared/data)")
    g.add_argument("--out", default=None, help="D_EI JSONL (default runs/dei_<dataset>_<split>.jsonl)")
    g = ap.add_argument_group("teacher")
    g.add_argument("--teacher", default=TEACHER, help="oracle | hf:<path-or-id> | openai (with --teacher-url)")
    g.add_argument("--teacher-url", default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    g.add_argument("--teacher-model", default=None, help="model name sent to the endpoint")
    g.add_argument("--cache", default=str(Path(__file__).resolve().parent / "runs" / "teacher_cache.jsonl"),
                   help="teacher cache JSONL ('none': no cache; the oracle is never cached)")
    g.add_argument("--concurrency", type=int, default=CONCURRENCY)
    g.add_argument("--timeout", type=float, default=TIMEOUT)
    g.add_argument("--retries", type=int, default=RETRIES)
    g.add_argument("--backoff", type=float, default=BACKOFF)
    g.add_argument("--max-tokens", type=int, default=TEACHER_MAX_TOKENS)
    g = ap.add_argument_group("probes and filters")
    g.add_argument("--rules", default=None, help=f"comma-separated subset of: {','.join(RULES)}")
    g.add_argument("--probe-writer", default=PROBE_WRITER, choices=("template", "teacher"))
    g.add_argument("--student", default=STUDENT, help="difficulty-filter student (none, tiny, smollm2-135m, a path)")
    g.add_argument("--student-max-tokens", type=int, default=STUDENT_MAX_TOKENS)
    g.add_argument("--student-batch-size", type=int, default=16)
    g.add_argument("--tau-hard", type=float, default=TAU_HARD,
                   help="keep Q only if the student solves at least this fraction of its consistent probes")
    g.add_argument("--chunk", type=int, default=CHUNK)
    g.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        rules = parse_rules(args.rules)
        records = load_records(args.dataset, args.split, args.limit, args.seed, args.data_dir)
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    out = Path(args.out or Path(__file__).resolve().parent / "runs" / f"dei_{args.dataset}_{args.split}.jsonl")
    kw = ({"concurrency": args.concurrency, "timeout": args.timeout, "retries": args.retries,
           "backoff": args.backoff, "max_tokens": args.max_tokens} if args.teacher_url
          else {"max_new_tokens": args.max_tokens} if args.teacher.startswith("hf:") else {})
    t0 = time.time()
    try:
        teacher = make_teacher(args.teacher, args.teacher_url, args.teacher_model,
                               cache_path=None if args.cache == "none" else args.cache, **kw)
        dei, stats = build_dei(records, teacher, rules, args.student, args.tau_hard, None, args.probe_writer,
                               args.seed, args.chunk, not args.no_progress, args.student_max_tokens,
                               args.student_batch_size)
    except TeacherError as e:
        print(f"probes.py: error: {e}", file=sys.stderr)
        return 1
    save_dei(out, dei)
    stats_path = out.with_suffix(".stats.json")
    stats_path.write_text(json.dumps(stats, indent=1) + "\n")
    print(format_table(stats))
    print(f"wrote {len(dei)} D_EI records ({stats['questions']['kept']} kept) to {out} and the table to "
          f"{stats_path} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
