"""
Stage 1 of the method, Explanatory Inversion (EI): turn every training question into
explanatory probes, let a teacher answer them, and keep what survives two filters.

    python probes.py --dataset synth --limit 1000                    # oracle teacher, exact
    python probes.py --dataset synth --rules counterfactual          # the single-rule ablation
    python probes.py --dataset synth --student smollm2-135m --limit 100 --tau-hard 0.2
    python probes.py --dataset strategyqa --limit 200 \
        --teacher-url http://localhost:8000/v1 --teacher-model Qwen/Qwen2.5-72B-Instruct

    from probes import build_dei, load_dei, rl_probes
    dei, stats = build_dei(records, "oracle")      # records: data/ loaders
    dei = load_dei("runs/dei_synth_train.jsonl")   # the kept questions; rl_probes(dei[0]): its RL probes

For one question Q with gold answer A and teacher reasoning R_T:
1. rules: each of the ten rules f_i(Q, A, R_T) writes zero or more probes. On the synthetic
   world a probe carries its structure ("spec") and data/oracle.py answers it exactly. On
   text a rule fills a template where it can write a real probe (not Q asked again) and
   writes none otherwise; --probe-writer teacher (the default on text with a real teacher)
   has the teacher write each probe from the rule's docstring. reveals_answer (does the
   probe state A?) is always a bool: such probes serve SFT and never enter RL.
2. teacher (teachers.py): answers Q (unless the dataset ships reasoning) and every probe;
   reasoning_correct: its answer matches the gold (SFT learns only from those).
3. EI-consistency filter (paper): the teacher, shown [probe | its reasoning and answer | Q],
   must still answer Q with A. Ours, on top: a probe whose gold answer is known is dropped
   when the teacher got it wrong or gave none.
4. difficulty filter (ours, the paper leaves it open): the untrained student answers the
   consistent probes of Q; keep Q iff it has >= 1 consistent probe, the student misses at
   least one, and solves at least a fraction tau_hard of them (--student none: skip it).

D_EI is a JSONL file, one record per question (its fields: _build_chunk and _verdict; a
probe's: _probe), plus <out>.stats.json with the filter table that is also printed.
"""

import argparse
import inspect
import json
import random
import re
import sys
import time
from pathlib import Path

from data.oracle import (OP_PHRASE, is_valid, item_of, quote, reveals_answer, solve, start_from_end,
                         start_sentence, statement)
from data import load as load_records, user_message  # synth, or any dataset data/real.py knows
from data.real import format_instruction
from data.synth import OP_SYMBOL, answer_of, op_sentence, question_text, trace
from rewards import ANSWER_TYPES, extract_answer, is_correct, states_answer
import checks
import presets
import runs
import teachers
import models
import sample
from teachers import TEACHER, TeacherCache, TeacherError, make_teacher, user  # probes.make_teacher stays

# -----------------------------------------------------------------------------
# defaults

DATASET = "synth"          # or any name data/real.py knows (strategyqa, gsm8k, ...)
SPLIT = "train"            # D_EI is built from training questions
PROBE_WRITER = "template"  # template: each rule's template; teacher: the teacher writes the probe
STUDENT = "none"           # the difficulty filter's student; none = skip it (fast, CPU)
TAU_HARD = 0.0             # keep Q only if the student solves >= this fraction of its consistent probes
CHUNK = 256                # questions per round of teacher calls (one step of the question bar)
STUDENT_MAX_TOKENS = 256   # the student's answer budget in the difficulty filter
SHIFTS = (-6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6)  # how far a counterfactual moves one quantity

# -----------------------------------------------------------------------------
# the ten rules. Each takes an example {question, answer, answer_type, reasoning, problem?}
# and returns a list of probes ([] = the rule does not apply). A probe restates every
# fact it needs, because in stage 3 several probes share one dialogue with Q.

def _probe(rule, question, answer_type, answer=None, spec=None, reveals=False, writer="template"):
    """A fresh probe; reveals_answer is settled by _synth or _checked, the rest by build_dei."""
    return {"rule": rule, "writer": writer, "question": question, "answer": answer,
            "answer_type": answer_type, "teacher_reasoning": None, "teacher_answer": None,
            "answer_correct": None, "reasoning_correct": None, "consistent": None, "student_correct": None,
            "kept": None, "reveals_answer": reveals, "spec": spec}


def has_gold(p):
    """Whether a probe's answer can grade another answerer: a synthetic probe's exact answer, or
    the teacher's answer to a probe whose question is fixed. Not the text counterfactual template,
    which asks each answerer to invent its own change: the teacher answered another question than
    the student will, so neither the difficulty filter nor the EI-Test grades it."""
    return p.get("answer") is not None or not (p["rule"] == "counterfactual" and p.get("spec") is None
                                               and p.get("writer", "template") == "template")


def _synth(rule, question, spec, answer_type, p):
    """A synthetic probe of Q's problem p: the oracle computes its gold answer from the spec,
    and whether it states Q's answer (data/oracle.py reveals_answer)."""
    return _probe(rule, question, answer_type, solve(spec)[0], spec, reveals_answer(spec, p))


def _rng(ex, rule, seed):
    # str seeds hash with sha512 inside random: the same probes in every process
    return random.Random(f"{seed}|{rule}|{ex['question']}")


def _text(rule, ex, ask, answer_type):
    """A text probe: the original question, then what this rule asks about it (no gold)."""
    return [_checked(_probe(rule, f"{ex['question'].strip()}\n\n{ask}", answer_type), ex)]


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
    rng, item, v = _rng(ex, "counterfactual", seed), item_of(p), trace(p["start"], p["ops"])
    cands = [(i, m) for i, (kind, n) in enumerate(p["ops"])  # (step, new operand) or (None, shift)
             for m in ([n + d for d in SHIFTS] if kind in ("add", "sub") else (2, 3, 4, 5))
             if m >= 1 and m != n]
    cands += [(None, d) for d in SHIFTS]  # move the start (the end, for a reversed problem)
    rng.shuffle(cands)
    for i, m in cands:
        ops = [list(op) if j != i else [op[0], m] for j, op in enumerate(p["ops"])]
        end = v[-1] + (m if i is None else 0)  # reversed: the end stays as told, or moves
        start = start_from_end(end, ops) if p["reverse"] else p["start"] + (m if i is None else 0)
        new = dict(p, start=start, ops=ops)
        spec = {"ask": "final", "problem": new}
        # the conclusion must change, and the changed fact must not be Q's answer (RL-usable)
        if start is None or start < 1 or not is_valid(new) or answer_of(new) == answer_of(p) \
                or reveals_answer(spec, p):
            continue
        if i is not None:
            change = f'step {i + 1} were "{op_sentence(new, i)}" instead of "{op_sentence(p, i)}"'
        elif p["reverse"]:
            change = f"there were {end} {item} at the end instead of {v[-1]}"
        else:
            change = (f'the problem began "{start_sentence(p, start)}" '
                      f'instead of "{start_sentence(p, p["start"])}"')
        ask = (f"How many {item} would there have been at the start?" if p["reverse"]
               else f"How many {item} would there be at the end?")
        spec["note"] = f"Suppose {change}, with everything else the same."
        return [_synth("counterfactual", f"{statement(p)} Suppose {change}, with everything else "
                       f"the same. {ask}", spec, "number", p)]
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
        steps = [s for s in steps if len(s.split()) >= 4
                 and not states_answer(s, ex["answer"], ex["answer_type"], ex["question"])]
        return _text("challenge", ex, f'One step of a proposed solution says: "{rng.choice(steps)}" '
                     "Is this step correct? Justify your verdict from the facts of the question.",
                     "yesno") if steps else []
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
            claim = [v[i - 1], kind, n, rng.choice([v[i] + d for d in (-2, -1, 1, 2)
                                                    if v[i] + d >= 1 and v[i] + d != answer_of(p)])]
    spec = {"ask": "check_step", "problem": p, "step": i, "claim": claim}
    eq = f"{claim[0]} {OP_SYMBOL[claim[1]]} {claim[2]} = {claim[3]}"
    return [_synth("challenge", f"{statement(p)} A student says that {quote(p, i)} is {eq}. "
                   "Is this step right? Answer yes or no.", spec, "yesno", p)]


def decompose(ex, seed=0):
    """Decomposition: split the problem into sub-questions, one intermediate result each.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'Break the problem into steps. How many marbles are
         there right after step 1 ("Mia finds 5 more marbles.")?'  (answer 12)
    One probe per intermediate amount (none for a one-step problem). On text: none (a
    template cannot name a sub-question of free text; --probe-writer teacher can)."""
    p = ex.get("problem")
    if p is None: return []  # on text: none, the docstring says why
    return [_synth("decompose", f"{statement(p)} Break the problem into steps. How many {item_of(p)} "
                   f"are there right after {quote(p, i)}?", {"ask": "value", "problem": p, "step": i},
                   "number", p) for i in range(1, len(p["ops"]))]


def why(ex, seed=0):
    """Why-question: ask why a sentence changes the amount, i.e. which operation it implies.

    Example: "... Mia splits her marbles into 3 equal bags and keeps one bag. ..."
      -> probe: the same facts, then 'Why does the amount change in step 2 ("Mia splits
         her marbles into 3 equal bags and keeps one bag.")? Does this sentence mean that we
         multiply the amount by 3? Answer yes or no.'  (answer no: it means divide by 3)
    On text: none ("explain why the answer is A" only re-asks Q; --probe-writer teacher)."""
    p, rng = ex.get("problem"), _rng(ex, "why", seed)
    if p is None: return []  # on text: none, the docstring says why
    i = rng.randint(1, len(p["ops"]))
    kind, n = p["ops"][i - 1]
    claim = kind if rng.random() < 0.5 else rng.choice([k for k in OP_PHRASE if k != kind])
    spec = {"ask": "is_op", "problem": p, "step": i, "op": [claim, n]}
    return [_synth("why", f"{statement(p)} Why does the amount change in {quote(p, i)}? Does this "
                   f"sentence mean that we {OP_PHRASE[claim].format(n=n)}? Answer yes or no.",
                   spec, "yesno", p)]


def cause_effect(ex, seed=0):
    """Cause and effect: ask for the effect one event (the cause) has on the amount.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'What is the effect of step 2 ("Mia gives away 4
         marbles.") on the number of marbles: by how many marbles does it change the
         amount? Answer with the size of the change.'  (answer 4: 12 - 8)
    On text: none (a template could only re-ask Q; --probe-writer teacher)."""
    p, rng = ex.get("problem"), _rng(ex, "cause_effect", seed)
    if p is None: return []  # on text: none, the docstring says why
    i, item = rng.randint(1, len(p["ops"])), item_of(p)
    return [_synth("cause_effect", f"{statement(p)} What is the effect of {quote(p, i)} on the number "
                   f"of {item}: by how many {item} does it change the amount? Answer with the size of "
                   "the change.", {"ask": "change", "problem": p, "step": i}, "number", p)]


def process(ex, seed=0):
    """Process / mechanism: follow the chain of events and locate one transition in it.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'Follow the process step by step. In which step does
         the number of marbles go from 7 to 12? Answer with the step number.'  (answer 1)
    Applies when some transition happens only once; one that does not touch Q's answer (the
    end amount, "from 12 to 8") is preferred, so the probe can enter RL. On text: none (a template could only
    re-ask Q; --probe-writer teacher)."""
    p, rng = ex.get("problem"), _rng(ex, "process", seed)
    if p is None: return []  # on text: none, the docstring says why
    v = trace(p["start"], p["ops"])
    pairs = [(v[j - 1], v[j]) for j in range(1, len(v))]
    unique = [pair for pair in pairs if pairs.count(pair) == 1]
    if not unique:
        return []
    a, b = rng.choice([pair for pair in unique if answer_of(p) not in pair] or unique)
    return [_synth("process", f"{statement(p)} Follow the process step by step. In which step does "
                   f"the number of {item_of(p)} go from {a} to {b}? Answer with the step number.",
                   {"ask": "which_step", "problem": p, "from": a, "to": b}, "number", p)]


def compare(ex, seed=0):
    """Comparison / contrast: compare two states (or two candidate answers) of the problem.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'Compare the start and the end: are there more
         marbles at the end than at the start? Answer yes or no.'  (answer yes: 8 > 7)
    On text: none (gold option vs a distractor, or yes vs no: knowing A answers it)."""
    p = ex.get("problem")
    if p is None: return []  # on text: none, the docstring says why
    return [_synth("compare", f"{statement(p)} Compare the start and the end: are there more "
                   f"{item_of(p)} at the end than at the start? Answer yes or no.",
                   {"ask": "more_at_end", "problem": p}, "yesno", p)]


def hypothesis(ex, seed=0):
    """Hypothesis exploration: state a hypothesis about the problem and ask to test it.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'Hypothesis: right after step 1 ("Mia finds 5 more
         marbles.") there are 13 marbles. Test this hypothesis: is it true? Answer yes or
         no.'  (answer no: there are 12)
    About an intermediate amount (none for a one-step problem). On text: none ("is the
    answer h?" is Q asked again)."""
    p, rng = ex.get("problem"), _rng(ex, "hypothesis", seed)
    if p is None: return []  # on text: none, the docstring says why
    if len(p["ops"]) < 2:
        return []
    i = rng.randint(1, len(p["ops"]) - 1)
    v = trace(p["start"], p["ops"])
    # v[i - 1] != v[i] (every step changes the amount); a wrong claim never names Q's answer
    wrong = [w for w in [v[i - 1]] + [v[i] + d for d in (-2, -1, 1, 2)] if w >= 1 and w != answer_of(p)]
    claim = v[i] if rng.random() < 0.5 else rng.choice(wrong)
    return [_synth("hypothesis", f"{statement(p)} Hypothesis: right after {quote(p, i)} there are "
                   f"{claim} {item_of(p)}. Test this hypothesis: is it true? Answer yes or no.",
                   {"ask": "check_value", "problem": p, "step": i, "claim": claim}, "yesno", p)]


def reverse(ex, seed=0):
    """Reverse (A -> Q inversion): give the answer and ask for a premise.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: 'Mia starts with some marbles. Mia finds 5 more marbles. Mia gives away 4
         marbles. In the end there are 8 marbles. How many marbles were there at the
         start?'  (answer 7). A reversed problem is inverted to its forward form.
    The probe states the original answer (reveals_answer). On text: RevThink's backward
    question when the record has one; else a number question hides one of its numbers and
    gives A; else none ("do the facts support A?" is yes for every question)."""
    p = ex.get("problem")
    if p is not None:
        new = dict(p, reverse=not p["reverse"])
        return [_synth("reverse", question_text(new), {"ask": "final", "problem": new}, "number", p)]
    bq = ex.get("backward_question") or ""
    m = re.search(r"\s*The correct answer is \(?([A-J1-9])\)?\.?\s*$", bq)
    if m and f"({m.group(1)})" in bq[:m.start()]:  # its gold is one of its options
        return [_checked(_probe("reverse", bq[:m.start()].strip(), "choice", m.group(1), reveals=True), ex)]
    q = ex["question"]
    nums = [m for m in re.finditer(r"(?<![\w.,])\d+(?:\.\d+)?(?![\w]|[.,]\d)", q)  # numbers said once
            if len(re.findall(rf"(?<![\w.,]){re.escape(m.group())}(?![\w]|[.,]\d)", q)) == 1]
    if ex["answer_type"] != "number" or not nums:
        return []
    m = _rng(ex, "reverse", seed).choice(nums)
    hidden = q[:m.start()] + "x" + q[m.end():]
    return [_checked(_probe("reverse", f"{hidden.strip()}\n\nThe answer to this question is {ex['answer']}. "
                            "Working backwards from this answer, what is the value of x?", "number",
                            m.group(), reveals=True), ex)]


def necessity(ex, seed=0):
    """Necessity: which premise the answer needs, and what breaks without it.

    Example: "Mia has 7 marbles. Mia finds 5 more marbles. Mia gives away 4 marbles."
      -> probe: the same facts, then 'Is step 1 ("Mia finds 5 more marbles.") needed?
         Suppose it did not happen and everything else stayed the same. How many marbles
         would there be at the end?'  (answer 3, not 8: the step is needed)
    Applies when some step can be left out with whole amounts left. On text: none ("is A
    still sure without the key fact?" has the same answer, no, for every question)."""
    p, rng = ex.get("problem"), _rng(ex, "necessity", seed)
    if p is None: return []  # on text: none, the docstring says why
    end, ok = trace(p["start"], p["ops"])[-1], []
    for k in range(1, len(p["ops"]) + 1):
        ops = [op for j, op in enumerate(p["ops"], 1) if j != k]
        start = start_from_end(end, ops) if p["reverse"] else p["start"]
        if start is not None and is_valid(dict(p, start=start, ops=ops)):
            ok.append(k)
    if not ok:
        return []
    k, item = rng.choice(ok), item_of(p)
    ask = (f"and the end amount were still {end}. How many {item} would there have been at the start?"
           if p["reverse"]
           else f"and everything else stayed the same. How many {item} would there be at the end?")
    return [_synth("necessity", f"{statement(p)} Is {quote(p, k)} needed? Suppose it did not happen {ask}",
                   {"ask": "without_step", "problem": p, "step": k}, "number", p)]


# The one list of rules: a new rule is a function above plus its name in this tuple.
RULES = {f.__name__: f for f in (counterfactual, challenge, decompose, why, cause_effect,
                                  process, compare, hypothesis, reverse, necessity)}


def parse_rules(rules=None):
    """'counterfactual,reverse' (or a list) -> the rule names; None -> every rule in RULES."""
    if rules is None:
        return list(RULES)
    names = [r.strip() for r in (rules.split(",") if isinstance(rules, str) else rules) if r.strip()]
    unknown = [r for r in names if r not in RULES]
    if unknown or not names:
        raise ValueError(f"unknown rule {', '.join(unknown) or '(none given)'}; the rules are: "
                         f"{', '.join(RULES)}")
    return list(dict.fromkeys(names))

# -----------------------------------------------------------------------------
# does a probe state Q's answer? Synthetic probes: the oracle decides from the spec
# (data/oracle.py). Text probes: the answer checker below, on what the probe writes beyond
# Q's own text. A probe that reveals A is kept for SFT and never enters an RL dialogue,
# where the student could copy A into its final turn instead of reasoning.

def beyond_question(text, question):
    """What a probe writes of its own: every copy of Q and of Q's sentences cut out, and any
    list of three or more options ('(A) bank (B) library (C) river' names no single answer)."""
    pieces = {question.strip()} | {s.strip() for s in re.split(r"(?<=[.?!])\s+|\n", question)}
    for piece in sorted((s for s in pieces if len(s) >= 12), key=len, reverse=True):
        text = text.replace(piece, " ")
    return re.sub(r"\([A-J1-9]\)[^()?.\n]{0,80}(?:\([A-J1-9]\)[^()?.\n]{0,80}){2,}", " ", text)


def _checked(probe, ex):
    """A text probe of example ex with reveals_answer settled: the rule's own verdict (it wrote
    A in), else the answer checker on what the probe writes beyond Q."""
    rest = beyond_question(probe["question"], ex["question"])
    probe["reveals_answer"] = (bool(probe["reveals_answer"])
                               or states_answer(rest, ex["answer"], ex["answer_type"], ex["question"]))
    return probe


def make_probes(ex, rules=None, seed=0):
    """All template probes of one example, rule by rule."""
    return [probe for r in parse_rules(rules) for probe in RULES[r](ex, seed)]


def rl_probes(record):
    """The probes of a D_EI record that may enter an RL dialogue: kept by both filters and
    not stating Q's answer (a record written before reveals_answer existed: none trusted)."""
    return [p for p in record.get("probes", []) if p.get("kept") and p.get("reveals_answer") is False]

# -----------------------------------------------------------------------------
# prompts: what a teacher (or the student) is actually sent

def format_question(question, answer_type):
    """A question plus the answer-format line rewards.py checks against (data/real.py's): the
    TEACHER's prompt, and the key of its cached answers. The student is asked with
    data.user_message (a blank line before the format line), in training and in evaluation."""
    return f"{question}\n{format_instruction(answer_type)}"


def consistency_dialogue(probe, question, answer_type):
    """[probe | the teacher's reasoning and answer to it | Q]: the EI-consistency prompt."""
    return (user(format_question(probe["question"], probe["answer_type"]))
            + [{"role": "assistant", "content": probe["teacher_reasoning"]}]
            + user(format_question(question, answer_type)))


def writer_prompt(rule, ex, answer_type):
    """--probe-writer teacher: the rule's definition and example (its docstring, without the
    notes on text templates) plus (Q, A, R_T)."""
    kind = {"yesno": "yes or no", "number": "a single number", "choice": "an option letter",
            "math": "a short mathematical expression"}[answer_type]
    return (f"You write explanatory probes: new questions that make a student explain the logic "
            f"behind an answer instead of pattern-matching it. Apply this rule.\n\nRule: {rule}\n"
            f"{inspect.getdoc(RULES[rule]).split('On text:')[0].strip()}\n\n"
            f"Original question: {ex['question'].strip()}\n"
            f"Gold answer: {ex['answer']}\nTeacher reasoning: {(ex.get('reasoning') or '(none)').strip()}\n\n"
            f"Write one probe for this question with the rule above. The probe must restate every "
            f"fact it needs (its reader will not see the original question), must not ask the "
            f"original question again, and its answer must be {kind}. If the rule cannot apply to "
            f"this question, write only NOT APPLICABLE. Otherwise write only one line: "
            f"Probe: <the probe question>")


def parse_written_probe(text):
    """The probe in a writer's reply ('Probe: ...'), or None for NOT APPLICABLE / nothing."""
    if not text or "NOT APPLICABLE" in text.upper():
        return None
    found = re.findall(r"Probe:\s*(.+?)\s*$", text, flags=re.IGNORECASE | re.MULTILINE | re.DOTALL)
    return (found[-1].strip() or None) if found else None

# -----------------------------------------------------------------------------
# D_EI: rules -> teacher -> EI-consistency filter -> difficulty filter

def _usable(r):
    """A row needs a question, a gold answer and a known answer type."""
    q, a = r.get("question"), r.get("answer")
    return (isinstance(q, str) and q.strip() and a is not None and str(a).strip()
            and r.get("answer_type") in ANSWER_TYPES)


def _new_stats(rules, tau_hard, writer):
    per_rule = dict(questions=0, not_applicable=0, probes=0, wrong_answer=0, inconsistent=0,
                    consistent=0, reveals=0, student_checked=0, student_correct=0, in_kept=0)
    return {"rules": {r: dict(per_rule) for r in rules}, "tau_hard": tau_hard, "writer": writer,
            "questions": dict(rows=0, skipped_bad_rows=0, no_probe=0, no_consistent_probe=0,
                              too_easy=0, too_hard=0, kept=0, teacher_wrong_on_question=0)}


def _write_probes(batch, rules, teacher, probe_writer, seed):
    """The probes of each example of a batch: from the templates, or written by the teacher."""
    if probe_writer == "template":
        return [make_probes(ex, rules, seed) for ex in batch]
    types = [{p["rule"]: p["answer_type"] for p in make_probes(ex, rules, seed)} for ex in batch]
    asks = [(b, r, types[b].get(r, ex["answer_type"])) for b, ex in enumerate(batch) for r in rules]
    replies = teacher.answer([writer_prompt(r, batch[b], t) for b, r, t in asks])
    probes = [[] for _ in batch]
    for (b, r, t), reply in zip(asks, replies):
        text, ex = parse_written_probe(reply), batch[b]
        if text and len(beyond_question(text, ex["question"]).split()) >= 3:  # not Q asked again
            probes[b].append(_checked(_probe(r, text, t, writer="teacher"), ex))
    return probes


def _final_spec(d):
    return {"ask": "final", "problem": d["problem"]} if d["problem"] else None


def _reason_on_q(dei, teacher, stats):
    """Teacher reasoning for Q itself (shipped with the dataset, else asked), checked against A."""
    ask = [d for d in dei if d["reasoning"] is None]
    texts = teacher.answer([format_question(d["question"], d["answer_type"]) for d in ask],
                           [_final_spec(d) for d in ask])
    for d, text in zip(ask, texts):
        d["reasoning"] = text
    for d in dei:
        d["reasoning_correct"] = is_correct(d["reasoning"], d["answer"], d["answer_type"], d["question"])
        stats["questions"]["teacher_wrong_on_question"] += not d["reasoning_correct"]


def _answer_probes(flat, teacher):
    """The teacher answers every probe. reasoning_correct: its answer matches the gold, or, with
    no gold (most text probes), it gave one (its answer is then the probe's only gold)."""
    texts = teacher.answer([format_question(p["question"], p["answer_type"]) for _, p in flat],
                           [p["spec"] for _, p in flat])
    for (d, p), text in zip(flat, texts):
        p["teacher_reasoning"] = text
        p["teacher_answer"] = extract_answer(text, p["answer_type"], p["question"])
        if p["teacher_answer"] is None:  # no final answer: nothing to learn from, nothing to check
            p["answer_correct"] = False
        elif p["answer"] is not None:
            p["answer_correct"] = is_correct(text, p["answer"], p["answer_type"], p["question"])
        p["reasoning_correct"] = p["answer_correct"] is not False


def _consistency(flat, teacher, stats):
    """EI-consistency: shown [probe | its reasoning and answer | Q], the teacher must still say A."""
    check = [(d, p) for d, p in flat if p["answer_correct"] is not False]
    texts = teacher.answer([consistency_dialogue(p, d["question"], d["answer_type"]) for d, p in check],
                           [_final_spec(d) for d, _ in check])
    for (d, p), text in zip(check, texts):
        p["consistent"] = is_correct(text, d["answer"], d["answer_type"], d["question"])
    for d, p in flat:
        p["kept"] = p["answer_correct"] is not False and p["consistent"] is True
        s = stats["rules"][p["rule"]]
        s["wrong_answer" if p["answer_correct"] is False
          else "consistent" if p["kept"] else "inconsistent"] += 1
        s["reveals"] += p["kept"] and p["reveals_answer"]


def _difficulty(kept, student, stats, max_new_tokens, batch_size):
    """The untrained student answers the consistent probes that have a gold (known, else the
    teacher's; has_gold): the others keep student_correct None and do not count."""
    kept = [(d, p) for d, p in kept if has_gold(p)]
    convs = [user(user_message(p)) for _, p in kept]   # each on its own, as training will put it
    if callable(student):  # fn(conversations) -> texts: tests, or a student served elsewhere
        texts = list(student(convs)) if convs else []
    else:
        texts = (sample.generate_text(*student, convs, max_new_tokens=max_new_tokens, batch_size=batch_size)
                 if convs else [])
    for (d, p), text in zip(kept, texts):
        gold = p["answer"] if p["answer"] is not None else p["teacher_answer"]
        p["student_correct"] = is_correct(text, gold, p["answer_type"], p["question"])
        stats["rules"][p["rule"]]["student_checked"] += 1
        stats["rules"][p["rule"]]["student_correct"] += p["student_correct"]


def _verdict(d, student, tau_hard, stats):
    """Keep Q or say why not."""
    good = [p for p in d["probes"] if p["kept"]]
    graded = [p for p in good if p["student_correct"] is not None]   # has_gold: not every probe
    solved = sum(bool(p["student_correct"]) for p in graded)
    checked = student is not None and bool(graded)
    d.update(n_probes=len(d["probes"]), n_consistent=len(good),
             n_student_correct=solved if student is not None else None)
    reason = ("no_probe" if not d["probes"] else "no_consistent_probe" if not good
              else "too_easy" if checked and solved == len(graded)           # nothing left to learn
              else "too_hard" if checked and solved < tau_hard * len(graded)  # cannot follow it yet
              else None)
    d["kept"], d["drop_reason"] = reason is None, reason
    stats["questions"][reason or "kept"] += 1
    for p in good if reason is None else []:
        stats["rules"][p["rule"]]["in_kept"] += 1


def _build_chunk(batch, teacher, rules, student, tau_hard, probe_writer, seed, stats,
                 student_max_tokens, student_batch_size):
    """One chunk of questions through the whole stage: a D_EI record each."""
    dei = [{"id": ex.get("id"), "question": ex["question"], "answer": str(ex["answer"]).strip(),
            "answer_type": ex["answer_type"], "problem": ex.get("problem"),
            "reasoning": ex.get("reasoning") or None,
            "reasoning_source": "dataset" if ex.get("reasoning") else "teacher"} for ex in batch]
    examples = [dict(ex, answer=d["answer"]) for ex, d in zip(batch, dei)]
    for d, probes in zip(dei, _write_probes(examples, rules, teacher, probe_writer, seed)):
        d["probes"] = probes
        for r in rules:
            n = sum(p["rule"] == r for p in probes)
            stats["rules"][r]["questions" if n else "not_applicable"] += 1
            stats["rules"][r]["probes"] += n
    _reason_on_q(dei, teacher, stats)
    flat = [(d, p) for d in dei for p in d["probes"]]
    _answer_probes(flat, teacher)
    _consistency(flat, teacher, stats)
    if student is not None:
        _difficulty([(d, p) for d, p in flat if p["kept"]], student, stats, student_max_tokens,
                    student_batch_size)
    for d in dei:
        _verdict(d, student, tau_hard, stats)
    return dei


def build_dei(records, teacher, rules=None, student=None, tau_hard=TAU_HARD, cache_path=None,
              probe_writer=PROBE_WRITER, seed=0, chunk=CHUNK, progress=True,
              student_max_tokens=STUDENT_MAX_TOKENS, student_batch_size=16):
    """D_EI from uniform records: (one record per usable question, stats). teacher: a Teacher
    (make_teacher) or its spec string; student: None / "none" (skip the student check), a
    sample.py name ("tiny", "smollm2-135m", a path), (model, tokenizer), or a function
    fn(conversations) -> answer texts. Rows without a question, gold answer or answer type
    are counted and skipped."""
    from tqdm import tqdm
    rules = parse_rules(rules)
    if not 0 <= tau_hard <= 1:
        raise ValueError(f"tau_hard is a fraction of a question's consistent probes, in [0, 1]; "
                         f"got {tau_hard}")
    if probe_writer not in ("template", "teacher"):
        raise ValueError(f"unknown probe writer {probe_writer!r}; choose template or teacher")
    teacher = make_teacher(teacher) if isinstance(teacher, str) else teacher
    if cache_path is not None and teacher.cacheable and teacher.cache is None:
        teacher.cache = TeacherCache(cache_path)
    if student == "none":
        student = None
    elif isinstance(student, str):
        student = models.load_student(student)
    stats = _new_stats(rules, tau_hard, probe_writer)
    good = [r for r in records if _usable(r)]
    stats["questions"]["rows"] = len(records)
    stats["questions"]["skipped_bad_rows"] = len(records) - len(good)
    if len(good) < len(records):
        print(f"probes.py: skipped {len(records) - len(good)} of {len(records)} rows with no question, "
              f"no gold answer or no answer type", file=sys.stderr)
    dei, t0 = [], time.time()
    # two bars: questions (one step per chunk of questions) and the teacher's answers as they arrive,
    # so that a slow teacher shows life long before its first chunk of questions is done
    with tqdm(total=len(good), desc="D_EI", unit="q", disable=not progress) as bar, \
            tqdm(desc="teacher", unit=" answers", disable=not progress, position=1, leave=False) as answers:
        def tick(n):
            answers.update(n)
            answers.set_postfix(asked=teacher.calls, cached=teacher.cache_hits, refresh=False)
        teacher.on_answer = tick
        try:
            for s in range(0, len(good), chunk):
                dei += _build_chunk(good[s:s + chunk], teacher, rules, student, tau_hard, probe_writer, seed,
                                    stats, student_max_tokens, student_batch_size)
                bar.update(len(good[s:s + chunk]))
                bar.set_postfix(teacher_calls=teacher.calls, cached=teacher.cache_hits)
        finally:
            teacher.on_answer = None
    stats["teacher"] = {"id": teacher.id, "calls": teacher.calls, "cache_hits": teacher.cache_hits}
    stats["student"] = None if student is None else "checked"
    stats["seconds"] = round(time.time() - t0, 2)
    return dei, stats


def format_table(stats):
    """The filter table: per rule, the probes its writer produced, then through each filter
    (wrong: the teacher's reasoning missed the gold; kept: right and EI-consistent; for_rl:
    kept and not stating Q's answer), then the questions."""
    head = ("rule", "writer", "questions", "n/a", "probes", "wrong", "inconsistent", "kept", "for_rl",
            "student_ok", "in_kept")
    total = {k: sum(s[k] for s in stats["rules"].values()) for k in next(iter(stats["rules"].values()))}
    writer = stats.get("writer", PROBE_WRITER)
    rows = [(r, writer if r != "all" else "", s["questions"], s["not_applicable"], s["probes"],
             s["wrong_answer"], s["inconsistent"], s["consistent"], s["consistent"] - s["reveals"],
             f"{s['student_correct']}/{s['student_checked']}" if s["student_checked"] else "-", s["in_kept"])
            for r, s in [*stats["rules"].items(), ("all", dict(total, questions="", not_applicable=""))]]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w)
                       for i, (x, w) in enumerate(zip(r, widths)))
             for r in [head] + rows]
    q = stats["questions"]
    lines += [f"questions: {q['rows']} rows, {q['skipped_bad_rows']} skipped (no question/answer), "
              f"{q['no_probe']} with no probe, {q['no_consistent_probe']} with no consistent probe, "
              f"{q['too_easy']} too easy (student solved every probe), {q['too_hard']} too hard "
              f"(< tau_hard={stats['tau_hard']}), {q['kept']} kept"
              + ("" if stats.get("student") else " (student check off)"),
              f"teacher reasoning wrong (reasoning_correct false, left out of SFT): "
              f"{q['teacher_wrong_on_question']} of {q['rows'] - q['skipped_bad_rows']} questions, "
              f"{total['wrong_answer']} of {total['probes']} probes"]
    if "teacher" in stats:
        t = stats["teacher"]
        lines.append(f"teacher {t['id']}: {t['calls']} answers asked, {t['cache_hits']} from the cache")
    return "\n".join(lines)


def save_dei(path, dei):
    """Write D_EI as JSONL, atomically (a killed run never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.write_atomic(path, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dei))


def load_dei(path, kept_only=True):
    """The D_EI records of a file written by build_dei / the CLI (only the kept questions by
    default; each keeps all its probes: use p["kept"] for SFT, rl_probes(record) for RL)."""
    with open(path, encoding="utf-8") as f:
        dei = [json.loads(line) for line in f if line.strip()]
    return [d for d in dei if d["kept"]] if kept_only else dei

def ei_plan(a, load):
    """What stage 1 will ask: questions, probes, teacher calls, and how many are cached."""
    if a.teacher == "none":
        return "EI: skipped (--teacher none): SFT on the dataset's own reasoning"
    train, _ = load()
    rules = parse_rules(a.rules)
    good = [dict(r, answer=str(r["answer"]).strip()) for r in train if _usable(r)]
    made = [p for r in good for p in make_probes(r, rules, a.seed)]
    head = f"EI: {len(good)} questions, {len(rules)} rules"
    n_reason = sum(not r.get("reasoning") for r in good)
    if a.teacher == "oracle" and not a.teacher_url:
        return (f"{head} -> {len(made)} probes; teacher: the oracle, a program (no model or API calls: "
                f"it answers {n_reason + 2 * len(made)} prompts exactly, probes and their consistency "
                f"checks; nothing to cache)")
    teacher = teachers.from_args(a, cache=False)   # no file opened: only its id and sampling are needed
    asks = [format_question(r["question"], r["answer_type"]) for r in good if not r.get("reasoning")]
    if a.probe_writer == "teacher":   # one written probe per question and rule, then its answer
        n_write = n_probe = len(good) * len(rules)
        note = f"{n_write} probe-writing calls, up to {n_probe} probe answers"
    else:
        asks += [format_question(p["question"], p["answer_type"]) for p in made]
        n_write, n_probe = 0, len(made)
        note = f"{n_probe} template probes answered"
    cache = teachers.cache_path(a, teacher)   # the shared cache of this teacher (teachers.py)
    have = set()
    if cache is not None and Path(cache).exists():
        for line in cache.read_text(errors="replace").splitlines():
            try:
                have.add(json.loads(line)["key"])
            except (ValueError, KeyError, TypeError):
                pass
    keys = {teachers.cache_key(teacher.id, teachers.user(p), teacher.sampling) for p in asks}
    return (f"{head}; teacher {teacher.id}: up to {n_reason + n_write + n_probe} calls ({n_reason} for "
            f"questions the dataset gives no reasoning, {note}) + up to {n_probe} consistency checks; "
            f"{len(keys & have)} of the {len(keys)} prompts known now are already cached; "
            + (f"cache {cache} ({len(have)} answers)" if cache else "no cache (--teacher-cache none)"))

# -----------------------------------------------------------------------------
# command line

def default_probe_writer(dataset, teacher=TEACHER, teacher_url=None):
    """teacher on a text dataset with a real teacher (hf: or an endpoint), where templates
    write no probe for most rules; template otherwise (the synthetic world, the oracle)."""
    real = teacher_url is not None or str(teacher).startswith("hf:") or teacher in ("openai", "endpoint")
    return "teacher" if dataset != "synth" and real else "template"


def main(argv=None):
    ap = checks.one_line(argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0],
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))
    g = ap.add_argument_group("data")
    g.add_argument("--dataset", default=DATASET,
                   help="synth, or a name data/real.py knows (strategyqa, gsm8k, ...)")
    g.add_argument("--split", default=SPLIT)
    g.add_argument("--limit", type=int, default=None, help="at most this many questions (synth default 1000)")
    g.add_argument("--seed", type=int, default=0, help="synthetic problems and the rules' random choices")
    g.add_argument("--data-dir", default=None,
                   help="the real datasets (else $EXGRPO_DATA_DIR, else shared/data beside the checkout)")
    g.add_argument("--out", default=None, help="D_EI JSONL (default runs/dei_<dataset>_<split>.jsonl)")
    teachers.add_arguments(ap)   # the same teacher flags as train.py, and the same shared cache
    g = ap.add_argument_group("probes and filters")
    g.add_argument("--rules", default=None, help=f"comma-separated subset of: {','.join(RULES)}")
    g.add_argument("--probe-writer", default=None, choices=("template", "teacher"),
                   help="default: teacher on a text dataset with a real teacher (hf: or --teacher-url), "
                        "else template")
    g.add_argument("--student", default=STUDENT,
                   help="difficulty-filter student (none, tiny, smollm2-135m, a path)")
    g.add_argument("--student-max-tokens", type=int, default=STUDENT_MAX_TOKENS)
    g.add_argument("--student-batch-size", type=int, default=16)
    g.add_argument("--tau-hard", type=float, default=TAU_HARD,
                   help="keep Q only if the student solves >= this share")
    g.add_argument("--chunk", type=int, default=CHUNK)
    g.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    checks.probes_flags(ap, args)
    checks.raises(ap, "--rules", args.rules, parse_rules)
    argv_flags = sys.argv[1:] if argv is None else argv
    if args.dataset != "synth" and "--teacher-max-tokens" not in argv_flags:
        # train.py's budget for this dataset: the same cache key, so answers asked here are reused there
        budgets = presets.data_budgets("smollm2-135m", args.dataset, args.data_dir)
        args.teacher_max_tokens = budgets[1] if budgets else args.teacher_max_tokens
    if problem := teachers.check_endpoint(args):   # one short request: a dead endpoint fails in seconds
        ap.exit(1, f"probes.py: error: {problem}\n")
    try:
        rules = parse_rules(args.rules)
        records = load_records(args.dataset, args.split, args.limit, args.seed, args.data_dir)
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    writer = args.probe_writer or default_probe_writer(args.dataset, args.teacher, args.teacher_url)
    out = Path(args.out
               or Path(__file__).resolve().parent / "runs" / f"dei_{args.dataset}_{args.split}.jsonl")
    t0 = time.time()
    try:
        teacher = teachers.from_args(args)
        dei, stats = build_dei(records, teacher, rules, args.student, args.tau_hard, None, writer,
                               args.seed, args.chunk, not args.no_progress, args.student_max_tokens,
                               args.student_batch_size)
    except TeacherError as e:
        print(f"probes.py: error: {e}", file=sys.stderr)
        return 1
    save_dei(out, dei)
    (stats_path := out.with_suffix(".stats.json")).write_text(json.dumps(stats, indent=1) + "\n")
    print(format_table(stats))
    print(f"wrote {len(dei)} D_EI records ({stats['questions']['kept']} kept) to {out} and the table to "
          f"{stats_path} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
