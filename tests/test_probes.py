"""Stage 1 (probes.py, data/oracle.py): the ten rules against an independent recomputation,
reveals_answer against an independent reading of the probe text, the text templates, the
filters, reasoning_correct, bad input, the CLI and the hf: teacher smoke test. The endpoint
teacher is in test_teachers.py."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import data
import probes
from data.oracle import reveals_answer, solve
from data.synth import generate, op_sentence

ROOT = Path(__file__).resolve().parent.parent
# the rule list lives once, in probes.RULES: a fork that adds a rule changes that one tuple and
# every test below follows it (a new rule still needs its own entry in expected() to be checked)
ALL = list(probes.RULES)
PAPER_TEN = ["counterfactual", "challenge", "decompose", "why", "cause_effect", "process", "compare",
             "hypothesis", "reverse", "necessity"]

# -----------------------------------------------------------------------------
# an independent arithmetic: nothing here comes from probes.py or data/synth.py


def walk(start, ops):
    values = [start]
    for kind, n in ops:
        v = values[-1]
        values.append(v + n if kind == "add" else v - n if kind == "sub" else v * n if kind == "mul" else v // n)
    return values


def back(end, ops):
    """The start that ends at `end` through `ops`, or None when it is not a whole number."""
    v = end
    for kind, n in reversed(ops):
        if kind == "mul" and v % n:
            return None
        v = v - n if kind == "add" else v + n if kind == "sub" else v // n if kind == "mul" else v * n
    return v


def expected(probe, p):
    """The gold answer of a synthetic probe of problem p, from its spec, recomputed here."""
    spec = probe["spec"]
    q = spec["problem"]
    v = walk(p["start"], p["ops"])
    rule = probe["rule"]
    if rule in ("counterfactual", "reverse"):
        assert spec["ask"] == "final"
        w = walk(q["start"], q["ops"])
        assert all(x >= 1 for x in w)
        return q["start"] if q["reverse"] else w[-1]
    assert q == p  # every other rule asks about the original problem itself
    i = spec.get("step")
    if rule == "challenge":
        a, kind, n, c = spec["claim"]
        return "yes" if (a, kind, n, c) == (v[i - 1], p["ops"][i - 1][0], p["ops"][i - 1][1], v[i]) else "no"
    if rule == "decompose":
        assert 1 <= i < len(p["ops"])  # an intermediate amount, not the answer
        return v[i]
    if rule == "why":
        return "yes" if list(spec["op"]) == list(p["ops"][i - 1]) else "no"
    if rule == "cause_effect":
        return abs(v[i] - v[i - 1])
    if rule == "process":
        steps = [j for j in range(1, len(v)) if (v[j - 1], v[j]) == (spec["from"], spec["to"])]
        assert len(steps) == 1  # the transition must name one step
        return steps[0]
    if rule == "compare":
        return "yes" if v[-1] > v[0] else "no"
    if rule == "hypothesis":
        return "yes" if v[i] == spec["claim"] else "no"
    if rule == "necessity":
        ops = [op for j, op in enumerate(p["ops"], 1) if j != i]
        return back(v[-1], ops) if p["reverse"] else walk(p["start"], ops)[-1]
    raise AssertionError(rule)


def check_reasoning(text):
    """Every 'a op n = b' line of an oracle answer is true arithmetic; returns the answer."""
    for a, op, n, b in re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)\.", text):
        a, n, b = int(a), int(n), int(b)
        assert {"+": a + n, "-": a - n, "*": a * n, "/": a // n}[op] == b, text
        assert op != "/" or a % n == 0, text
    m = re.search(r"The answer is (\S+)\.$", text)
    assert m, text
    return m.group(1)


# -----------------------------------------------------------------------------
# the rules on the synthetic world


def test_every_rule_agrees_with_independent_recompute_on_500_problems():
    records = generate("train", 300, seed=5) + generate("test_ood", 200, seed=5)
    assert sum(r["problem"]["reverse"] for r in records) > 20  # reversed problems are covered
    seen = {r: 0 for r in ALL}
    answers = {r: set() for r in ALL}
    for rec in records:
        p = rec["problem"]
        for probe in probes.make_probes(rec):
            rule = probe["rule"]
            seen[rule] += 1
            gold = str(expected(probe, p))
            assert probe["answer"] == gold, (rule, rec["question"], probe["question"])
            assert probe["answer_type"] == ("yesno" if gold in ("yes", "no") else "number")
            answers[rule].add(gold)
            # the oracle's reasoning: true arithmetic, ending "The answer is <gold>."
            assert check_reasoning(solve(probe["spec"])[1]) == gold
            # self-contained: the probe restates every step of the problem
            q = probe["question"]
            for i in range(len(p["ops"])):
                if rule != "counterfactual" or op_sentence(probe["spec"]["problem"], i) != op_sentence(p, i):
                    assert op_sentence(p, i) in q, (rule, q)
    assert all(seen[r] >= 450 for r in ALL), seen  # every rule applies almost everywhere
    for rule in ("challenge", "why", "compare", "hypothesis"):
        assert answers[rule] == {"yes", "no"}, rule  # both verdicts occur


def test_counterfactual_changes_exactly_one_quantity():
    for rec in generate("train", 200, seed=1) + generate("test_ood", 100, seed=1):
        p, out = rec["problem"], probes.counterfactual(rec)
        if not out:
            continue
        q = out[0]["spec"]["problem"]
        changed = sum(a != b for a, b in zip(p["ops"], q["ops"]))
        if p["reverse"]:  # the start is unknown: the end or one operand moves
            end_moved = walk(p["start"], p["ops"])[-1] != walk(q["start"], q["ops"])[-1]
            assert changed + end_moved == 1
        else:
            assert changed + (p["start"] != q["start"]) == 1
        assert out[0]["answer"] != rec["answer"]  # the conclusion does change


def test_reverse_inverts_the_question():
    rec = generate("train", 1, seed=2)[0]
    p = rec["problem"]
    [probe] = probes.reverse(rec)
    end = walk(p["start"], p["ops"])[-1]
    assert f"In the end there are {end}" in probe["question"] and "at the start?" in probe["question"]
    assert probe["answer"] == str(p["start"]) and probe["reveals_answer"] is True


def states_the_answer(probe_text, question, answer):
    """An independent reading of a synthetic probe: does it state Q's answer? Q's own sentences
    are cut out (every probe restates them; Q itself is no leak) and so are step numbers
    ("step 2"); what is left is what the probe writes of its own: a changed sentence, a
    claimed equation "12 - 4 = 8", a transition "from 12 to 8", a hypothesis, a whole
    inverted problem. It states the answer when any number in it equals the answer: the
    result of an equation, an amount, an operand alike."""
    for sentence in re.split(r"(?<=[.?])\s+", question):
        probe_text = probe_text.replace(sentence, " ")
    probe_text = re.sub(r"\b[Ss]tep \d+", " ", probe_text)
    return str(answer) in re.findall(r"\d+", probe_text)


def synth_questions():
    """1,100 questions: forward and reversed problems, 2 to 5 steps."""
    return generate("train", 700, seed=9) + generate("test_ood", 400, seed=9)


def test_no_probe_marked_safe_states_the_answer_on_1100_questions():
    records = synth_questions()
    assert sum(r["problem"]["reverse"] for r in records) > 50
    safe, flagged = {r: 0 for r in ALL}, {r: 0 for r in ALL}
    for rec in records:
        for p in probes.make_probes(rec):
            assert isinstance(p["reveals_answer"], bool), p
            stated = states_the_answer(p["question"], rec["question"], rec["answer"])
            if p["reveals_answer"]:
                flagged[p["rule"]] += 1
            else:
                safe[p["rule"]] += 1
                assert not stated, (p["rule"], rec["question"], p["question"])
    assert flagged["reverse"] > 1000 and safe["reverse"] == 0  # the reverse probe gives the end amount
    for rule in ALL:
        if rule != "reverse":
            assert safe[rule] > 0.6 * (safe[rule] + flagged[rule]), (rule, safe[rule], flagged[rule])
    # the flag is not only the reverse rule: the leaks the issue names are caught
    assert flagged["challenge"] > 50 and flagged["process"] > 0 and flagged["hypothesis"] > 0


def test_the_oracle_flags_the_named_leaks():
    p = {"template": "marbles", "name": "Mia", "start": 7, "ops": [["add", 5], ["sub", 4]], "reverse": False}
    ask = lambda **kw: dict(kw, problem=kw.get("problem", p))
    assert reveals_answer(ask(ask="check_step", step=2, claim=[12, "sub", 4, 8]), p)    # 12 - 4 = 8
    assert reveals_answer(ask(ask="check_step", step=2, claim=[12, "add", 4, 16]), p) is False
    assert reveals_answer(ask(ask="check_step", step=1, claim=[7, "add", 5, 8]), p)     # a wrong claim of 8
    assert reveals_answer(ask(ask="which_step", **{"from": 12, "to": 8}), p)            # "from 12 to 8"
    assert reveals_answer(ask(ask="which_step", **{"from": 7, "to": 12}), p) is False
    assert reveals_answer(ask(ask="final", problem=dict(p, reverse=True)), p)             # the end amount
    assert reveals_answer(ask(ask="final", problem=dict(p, start=8)), p)                  # new start 8
    assert reveals_answer(ask(ask="value", step=1), p) is False
    back = dict(p, reverse=True)  # answer 7, the start: "from 7 to 12" and "7 + 5 = 12" state it
    assert reveals_answer(ask(ask="which_step", problem=back, **{"from": 7, "to": 12}), back)
    assert reveals_answer(ask(ask="check_step", problem=back, step=1, claim=[7, "add", 5, 12]), back)
    assert reveals_answer(ask(ask="final", problem=p), back)                              # the forward problem


def test_rl_dialogues_never_state_the_answer():
    records = synth_questions()[:300]
    dei, stats = probes.build_dei(records, "oracle", progress=False)
    n_rl = 0
    for d in dei:
        rl = probes.rl_probes(d)
        assert all(p["kept"] and p["reveals_answer"] is False for p in rl)
        assert len(rl) == sum(p["kept"] and not p["reveals_answer"] for p in d["probes"])
        for p in rl:
            assert not states_the_answer(p["question"], d["question"], d["answer"]), p["question"]
        n_rl += len(rl)
    assert n_rl == sum(s["consistent"] - s["reveals"] for s in stats["rules"].values()) > 1500
    # a record written before the flag existed: nothing in it is trusted for RL
    old = dict(dei[0], probes=[{k: v for k, v in p.items() if k != "reveals_answer"} for p in dei[0]["probes"]])
    assert probes.rl_probes(old) == []


def test_rules_are_deterministic_and_seeded():
    recs = generate("train", 50, seed=3)
    assert [probes.make_probes(r) for r in recs] == [probes.make_probes(r) for r in recs]
    assert [probes.make_probes(r, seed=1) for r in recs] != [probes.make_probes(r) for r in recs]


def test_rule_docstrings_have_a_worked_example():
    for name, fn in probes.RULES.items():
        assert "Example:" in fn.__doc__ and "answer" in fn.__doc__, name
    assert list(probes.RULES)[:10] == PAPER_TEN   # the paper's ten, in its order (a fork may add more)


# -----------------------------------------------------------------------------
# the rules on text (templates)


def test_text_rules_apply_or_say_they_do_not():
    yesno = {"question": "Is the sea salty?", "answer": "yes", "answer_type": "yesno",
             "reasoning": "Sea water holds dissolved salt from rocks. The answer is yes."}
    number = {"question": "Tom has 12 apples and buys 30 more. How many apples does he have?",
              "answer": "42", "answer_type": "number", "reasoning": ""}
    choice = {"question": "Where are books kept? (A) bank (B) library (C) river", "answer": "B",
              "answer_type": "choice", "reasoning": "Books are lent from libraries.",
              "backward_question": "If books are kept there, the place is a _. (A) library (B) bank. "
                                   "The correct answer is (A). \n"}
    assert probes.compare(number) == []            # nothing to compare in a number question
    assert probes.challenge(number) == []          # no teacher reasoning to challenge
    [c] = probes.challenge(yesno)
    assert "Sea water holds dissolved salt from rocks." in c["question"] and c["answer_type"] == "yesno"
    assert c["reveals_answer"] is False and c["answer"] is None
    [r] = probes.reverse(number)                   # a number of the question is hidden
    assert r["answer"] in ("12", "30") and "x" in r["question"] and r["answer_type"] == "number"
    assert r["answer"] not in r["question"].split("\n\n")[0].split() and r["reveals_answer"] is True
    [r] = probes.reverse(choice)                   # RevThink's backward question, its gold split off
    assert r["answer"] == "A" and "correct answer" not in r["question"] and r["answer_type"] == "choice"
    assert probes.reverse(yesno) == []             # "do the facts support A?": yes for every question
    for ex in (yesno, number, choice):
        # on free text a template for these could only ask something that knowing A answers
        # (Q again, "is the answer h?", gold vs a distractor) or that has one answer for every
        # question: they write none, and --probe-writer teacher writes real ones
        for rule in ("decompose", "why", "cause_effect", "process", "compare", "hypothesis", "necessity"):
            assert probes.RULES[rule](ex) == [], rule
        for p in probes.make_probes(ex):
            assert p["question"] and p["spec"] is None and p["answer_type"] in ("number", "yesno", "choice")
            assert ex["question"].split("?")[0] in p["question"] or p["rule"] == "reverse"
            assert isinstance(p["reveals_answer"], bool) and p["writer"] == "template"
            # a probe graded with Q's own answer would be Q asked again: it must at least reveal
            assert p["answer"] != ex["answer"] or p["answer_type"] != ex["answer_type"] or p["reveals_answer"]
            if not p["reveals_answer"]:
                assert p["answer"] is None and p["rule"] in ("counterfactual", "challenge"), p
    # a reasoning step that states A is never the one challenged (it would reveal A)
    leaky = dict(number, reasoning="Tom buys 30 more apples after the first 12. So Tom has 42 apples now.")
    for seed in range(20):
        [c] = probes.challenge(leaky, seed)
        assert "Tom buys 30 more apples" in c["question"] and not c["reveals_answer"]
    # on a choice question, a step that names the gold option's words is not challenged either
    named = dict(choice, reasoning="Books are lent to readers every day. So books are kept in a library.")
    for seed in range(20):
        [c] = probes.challenge(named, seed)
        assert "lent to readers" in c["question"] and "library." not in c["question"]


def test_text_checker_sees_what_a_probe_writes_beyond_q():
    q = "Where are books kept? (A) bank (B) library (C) river"
    assert probes.beyond_question(f"{q}\n\nWhich is older?", q).strip() == "Which is older?"
    # restating every option names no single answer; singling out the gold option does
    assert "(B)" not in probes.beyond_question("Which? (A) bank (B) library (C) river. Explain.", "Q?")
    ex = {"question": q, "answer": "B", "answer_type": "choice"}
    assert probes._checked(probes._probe("why", "Why is (B) better than (A)?", "yesno"), ex)["reveals_answer"]
    assert not probes._checked(probes._probe("why", "Is (C) ever wet?", "yesno"), ex)["reveals_answer"]
    assert not probes._checked(probes._probe("why", q + " Which two are buildings? (A) bank (B) library "
                                                   "(C) river", "choice"), ex)["reveals_answer"]
    # the gold option's words, or its bare label, beyond Q give the answer away too
    assert probes._checked(probes._probe("why", "Why is a library the place for this?", "yesno"), ex)["reveals_answer"]
    assert probes._checked(probes._probe("why", "Why is option B the best answer?", "yesno"), ex)["reveals_answer"]
    num = {"question": "Tom has 12 apples and buys 30 more. How many now?", "answer": "42", "answer_type": "number"}
    assert probes._checked(probes._probe("why", "If Tom ends with 42 apples, how many did he buy?", "number"),
                           num)["reveals_answer"]
    assert not probes._checked(probes._probe("why", "If Tom buys 31 more, how many are there?", "number"),
                               num)["reveals_answer"]


def test_parse_written_probe():
    assert probes.parse_written_probe("Sure.\nProbe: What if Mia found 9 marbles?") == "What if Mia found 9 marbles?"
    assert probes.parse_written_probe("NOT APPLICABLE") is None
    assert probes.parse_written_probe("I cannot.") is None


def test_teacher_probe_writer_uses_the_rule_docstring():
    asked = []

    def writer(messages, spec):
        text = messages[-1]["content"]
        asked.append(text)
        if text.startswith("You write explanatory probes"):
            return "NOT APPLICABLE" if "Rule: compare" in text else "Probe: Is 2 + 2 = 4 true?"
        return "The answer is yes."
    ex = {"id": "t", "question": "Is the sky blue?", "answer": "yes", "answer_type": "yesno", "reasoning": "It is."}
    dei, stats = probes.build_dei([ex], probes.make_teacher(writer), rules=["counterfactual", "compare"],
                                  probe_writer="teacher", progress=False)
    assert inspect_doc_in(asked, probes.counterfactual)
    assert [p["rule"] for p in dei[0]["probes"]] == ["counterfactual"]  # compare: not applicable
    assert dei[0]["probes"][0]["question"] == "Is 2 + 2 = 4 true?" and dei[0]["kept"]
    assert stats["rules"]["compare"]["not_applicable"] == 1


def inspect_doc_in(prompts, fn):
    first = fn.__doc__.strip().splitlines()[0]
    return any(first in p for p in prompts)


def test_oracle_refuses_text_probes():
    ex = {"question": "Is the sky blue?", "answer": "yes", "answer_type": "yesno", "reasoning": "Yes."}
    with pytest.raises(probes.TeacherError, match="only synthetic"):
        probes.build_dei([ex], "oracle", progress=False)


# -----------------------------------------------------------------------------
# build_dei and the two filters


def oracle_fn(wrong_q_when=None, wrong_probe_rule=None):
    """A text-free teacher built on the oracle's answers, with chosen mistakes."""
    def fn(messages, spec):
        text = solve(spec)[1]
        if len(messages) == 3 and wrong_q_when and wrong_q_when in messages[0]["content"]:
            return text.rsplit("The answer is", 1)[0] + "The answer is 99999."
        if len(messages) == 1 and wrong_probe_rule and spec.get("ask") == wrong_probe_rule:
            return "I think the answer is 77777."
        return text
    return fn


def test_oracle_build_dei_keeps_every_probe():
    dei, stats = probes.build_dei(generate("train", 40), "oracle", progress=False)
    assert len(dei) == 40 and all(d["kept"] and d["reasoning_correct"] for d in dei)
    assert all(p["consistent"] and p["answer_correct"] and p["kept"] for d in dei for p in d["probes"])
    assert {p["rule"] for d in dei for p in d["probes"]} == set(ALL)
    assert stats["questions"]["kept"] == 40


def test_consistency_filter_drops_a_probe_after_which_the_teacher_answers_q_wrongly():
    recs = generate("train", 10, seed=4)
    # after a counterfactual probe, this teacher answers Q with the counterfactual's world
    teacher = probes.make_teacher(oracle_fn(wrong_q_when="Suppose"))
    dei, stats = probes.build_dei(recs, teacher, rules=["counterfactual", "decompose"], progress=False)
    for d in dei:
        for p in d["probes"]:
            assert p["answer_correct"] is True  # it answered the probe itself right
            assert p["consistent"] is (p["rule"] != "counterfactual") and p["kept"] is p["consistent"]
    s = stats["rules"]
    assert s["counterfactual"]["inconsistent"] == s["counterfactual"]["probes"] > 0
    assert s["counterfactual"]["consistent"] == 0 and s["decompose"]["inconsistent"] == 0
    # only counterfactual probes: every question loses its probes and is dropped
    dei, stats = probes.build_dei(recs, teacher, rules=["counterfactual"], progress=False)
    assert not any(d["kept"] for d in dei) and {d["drop_reason"] for d in dei} <= {"no_consistent_probe", "no_probe"}


def test_wrong_probe_answer_is_dropped_before_the_consistency_call():
    calls = []
    fn = oracle_fn(wrong_probe_rule="value")  # wrong on every decomposition probe

    def counting(messages, spec):
        calls.append(len(messages))
        return fn(messages, spec)
    dei, stats = probes.build_dei(generate("train", 8), probes.make_teacher(counting),
                                  rules=["decompose", "why"], progress=False)
    dec = [p for d in dei for p in d["probes"] if p["rule"] == "decompose"]
    assert dec and all(p["answer_correct"] is False and p["consistent"] is None and not p["kept"] for p in dec)
    assert stats["rules"]["decompose"]["wrong_answer"] == len(dec)
    assert calls.count(3) == stats["rules"]["why"]["probes"]  # no consistency call for a wrong probe


def test_reasoning_correct_marks_wrong_teacher_reasoning_and_the_table_counts_it():
    recs = [dict(r, reasoning=None) for r in generate("train", 6, seed=8)]  # the teacher reasons on Q
    wrong_q = {probes.format_question(r["question"], "number") for r in recs[:2]}

    def teacher(messages, spec):
        text = solve(spec)[1]
        if len(messages) == 1 and messages[0]["content"] in wrong_q:
            return "Adding everything up. The answer is 99999."
        if spec["ask"] == "is_op":  # the why-probes: the opposite verdict
            return "It does. The answer is " + ("no." if text.endswith("yes.") else "yes.")
        return text
    dei, stats = probes.build_dei(recs, probes.make_teacher(teacher), rules=["why", "compare"], progress=False)
    assert [d["reasoning_correct"] for d in dei] == [False, False, True, True, True, True]
    assert all(d["reasoning_source"] == "teacher" for d in dei)
    for p in (p for d in dei for p in d["probes"]):
        assert p["reasoning_correct"] is (p["rule"] == "compare") and p["kept"] is p["reasoning_correct"]
    assert stats["questions"]["teacher_wrong_on_question"] == 2 and stats["rules"]["why"]["wrong_answer"] == 6
    assert "teacher reasoning wrong (reasoning_correct false, left out of SFT): 2 of 6 questions, 6 of 12 probes" \
        in probes.format_table(stats)


def test_default_probe_writer_is_the_teacher_on_text_with_a_real_teacher():
    assert probes.default_probe_writer("strategyqa", "hf:some/model") == "teacher"
    assert probes.default_probe_writer("gsm8k", "oracle", "http://localhost:8000/v1") == "teacher"
    assert probes.default_probe_writer("gsm8k", "oracle") == "template"  # the oracle cannot write text
    assert probes.default_probe_writer("synth", "hf:some/model") == "template"  # exact probes from the spec


def solver(correct_rules):
    """A fake student: right on probes of the given rules, wrong on the rest."""
    def student(convs):
        out = []
        for c in convs:
            text = c[0]["content"]
            rule = next(r for r, mark in MARKS.items() if mark in text)
            gold = GOLD[text]
            out.append(f"The answer is {gold if rule in correct_rules else 'banana'}.")
        return out
    return student


MARKS = {"decompose": "Break the problem into steps", "why": "Why does the amount change",
         "compare": "Compare the start and the end"}
GOLD = {}


def test_difficulty_filter_drops_too_easy_and_too_hard_questions():
    recs = generate("train", 6, seed=7)
    for r in recs:
        for p in probes.make_probes(r, ["decompose", "why", "compare"]):
            GOLD[data.user_message(p)] = p["answer"]   # the student's prompt of a probe
    rules = ["decompose", "why", "compare"]
    run = lambda student, tau: probes.build_dei(recs, "oracle", rules=rules, student=student,
                                                tau_hard=tau, progress=False)
    dei, stats = run(solver(set(rules)), 0.0)  # solves everything: nothing left to learn
    assert not any(d["kept"] for d in dei) and stats["questions"]["too_easy"] == 6
    dei, stats = run(solver(set()), 0.0)       # solves nothing: kept at tau 0
    assert all(d["kept"] for d in dei) and all(d["n_student_correct"] == 0 for d in dei)
    dei, stats = run(solver(set()), 0.25)      # ... but too hard at tau 0.25
    assert stats["questions"]["too_hard"] == 6 and not any(d["kept"] for d in dei)
    dei, stats = run(solver({"why"}), 0.25)    # 1 of 3 (or 4) solved: in the band
    assert all(d["kept"] for d in dei), [d["n_student_correct"] for d in dei]
    assert stats["rules"]["why"]["student_correct"] == 6 and stats["rules"]["compare"]["student_correct"] == 0
    assert all(p["student_correct"] is (p["rule"] == "why") for d in dei for p in d["probes"])
    with pytest.raises(ValueError, match="fraction"):
        run(None, 2)


def test_single_rule_ablation_keeps_only_that_rule():
    dei, stats = probes.build_dei(generate("train", 20), "oracle", rules="counterfactual", progress=False)
    assert {p["rule"] for d in dei for p in d["probes"]} == {"counterfactual"}
    assert list(stats["rules"]) == ["counterfactual"]


# -----------------------------------------------------------------------------
# bad input


def test_unknown_rule_is_a_clear_error():
    with pytest.raises(ValueError) as e:
        probes.parse_rules("counterfactual,telepathy")
    assert "telepathy" in str(e.value) and all(r in str(e.value) for r in ALL)
    r = subprocess.run([sys.executable, "probes.py", "--rules", "telepathy", "--limit", "2"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "telepathy" in r.stderr and "necessity" in r.stderr


def test_rows_without_question_or_answer_are_counted_and_skipped(capsys):
    good = generate("train", 3)
    bad = [dict(good[0], question=""), dict(good[1], answer=None), {"id": "x", "answer": "3", "answer_type": "number"},
           dict(good[2], answer="  ")]
    dei, stats = probes.build_dei(good + bad, "oracle", progress=False)
    assert len(dei) == 3 and stats["questions"]["skipped_bad_rows"] == 4 and stats["questions"]["rows"] == 7
    assert "skipped 4 of 7 rows" in capsys.readouterr().err
    assert "4 skipped" in probes.format_table(stats)


# -----------------------------------------------------------------------------
# the CLI and the file format


def test_cli_synth_writes_dei_and_the_table(tmp_path):
    out = tmp_path / "dei.jsonl"
    r = subprocess.run([sys.executable, "probes.py", "--dataset", "synth", "--limit", "25",
                        "--out", str(out), "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for rule in ALL:
        assert re.search(rf"^{rule} +template +25 ", r.stdout, re.MULTILINE) or rule in ("counterfactual", "process"), r.stdout
    assert "25 kept" in r.stdout
    dei = probes.load_dei(out)
    assert len(dei) == 25 and dei[0]["probes"][0]["teacher_reasoning"].endswith(".")
    rec = json.loads(out.read_text().splitlines()[0])
    for key in ("id", "question", "answer", "answer_type", "problem", "reasoning", "probes", "kept", "drop_reason"):
        assert key in rec
    for key in ("rule", "writer", "question", "answer", "answer_type", "teacher_reasoning", "teacher_answer",
                "consistent", "student_correct", "spec"):
        assert key in rec["probes"][0]
    assert all(isinstance(p["reveals_answer"], bool) and p["reasoning_correct"] is True
               for d in dei for p in d["probes"])
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["questions"]["kept"] == 25 and set(stats["rules"]) == set(ALL)


def test_load_dei_kept_only(tmp_path):
    dei, _ = probes.build_dei(generate("train", 5), "oracle", rules=["counterfactual"],
                              student=lambda convs: ["The answer is 0."] * len(convs), progress=False)
    dei[0]["kept"] = False
    probes.save_dei(tmp_path / "d.jsonl", dei)
    assert len(probes.load_dei(tmp_path / "d.jsonl")) == sum(d["kept"] for d in dei)
    assert len(probes.load_dei(tmp_path / "d.jsonl", kept_only=False)) == 5


def test_the_student_sees_a_probe_in_one_format_in_the_filter_in_training_and_in_the_ei_test():
    """Catches: the difficulty filter and the EI-Test asking the student with the teacher's prompt
    (question, one newline, format line) while SFT, the aux loss and RL dialogues ask it with a blank
    line between: the filter then measures, and the EI-Test scores, a format never trained on."""
    import evaluate
    import exgrpo
    asked = []
    student = lambda convs: asked.extend(c[0]["content"] for c in convs) or ["The answer is 0."] * len(convs)
    dei, _ = probes.build_dei(generate("train", 3), "oracle", rules=["counterfactual", "why"], student=student,
                              progress=False)
    consistent = [p for d in dei for p in d["probes"] if p["consistent"] and p["answer_correct"] is not False]
    assert asked and asked == [exgrpo.probe_message(p) for p in consistent]
    assert all(m != probes.format_question(p["question"], p["answer_type"]) for m, p in zip(asked, consistent))
    for rec in evaluate.ei_probe_records(dei):
        assert evaluate.ei_prompt(rec)[0]["content"] == exgrpo.probe_message(rec)

# -----------------------------------------------------------------------------
# the hf: teacher and a real (tiny) student, once sample.py has them


def test_hf_teacher_and_student_smoke(tmp_path):
    sample = pytest.importorskip("sample")
    if not hasattr(sample, "generate_text") or not hasattr(sample, "load_student"):
        pytest.skip("sample.py has no generate_text / load_student yet")
    teacher = probes.make_teacher("hf:tiny", cache_path=tmp_path / "cache.jsonl", max_new_tokens=8, batch_size=8)
    recs = generate("train", 2)
    dei, stats = probes.build_dei(recs, teacher, rules=["counterfactual", "why"], student="tiny",
                                  student_max_tokens=8, progress=False)
    probes_ = [p for d in dei for p in d["probes"]]
    assert len(dei) == 2 and len(probes_) >= 3
    assert all(isinstance(p["teacher_reasoning"], str) for p in probes_)
    assert all(p["kept"] in (True, False) for p in probes_)
    assert teacher.calls > 0 and len(teacher.cache) == teacher.calls
    again = probes.make_teacher("hf:tiny", cache_path=tmp_path / "cache.jsonl", max_new_tokens=8, batch_size=8)
    probes.build_dei(recs, again, rules=["counterfactual", "why"], progress=False)
    assert again.calls == 0 and again.model is None  # all from the cache: the model never loads


def test_a_text_counterfactual_that_each_answerer_invents_is_never_graded():
    """Catches: the text counterfactual template ("imagine one key fact were different ... answer
    the changed question") graded against the teacher's answer to the teacher's own change, in
    the difficulty filter and the EI-Test. The student answers the two gradable probes (one wrong);
    the invented one is not asked, not counted, and not an EI-Test record."""
    import evaluate
    ex = {"id": "q0", "question": "Is the sea salty?", "answer": "yes", "answer_type": "yesno",
          "reasoning": "Sea water holds dissolved salt from rocks. The answer is yes."}
    invented = probes.counterfactual(ex)[0]
    fixed = dict(probes._probe("counterfactual", "If the sea held no salt, would it taste salty?", "yesno"),
                 writer="teacher")
    why = probes._probe("why", "Why is sea water salty? Is it because of rocks?", "yesno")
    assert not probes.has_gold(invented) and probes.has_gold(fixed) and probes.has_gold(why)
    d = {"id": "q0", "probes": []}
    for p in (invented, fixed, why):
        d["probes"].append(dict(p, kept=True, teacher_answer="no" if p is fixed else "yes", student_correct=None))
    asked, stats = [], {"rules": {r: {"student_checked": 0, "student_correct": 0} for r in ("counterfactual", "why")}}
    probes._difficulty([(d, p) for p in d["probes"]], lambda convs: asked.extend(convs) or
                       ["The answer is no.", "The answer is no."], stats, 8, 8)
    assert len(asked) == 2 and [p["student_correct"] for p in d["probes"]] == [None, True, False]
    assert stats["rules"]["counterfactual"]["student_checked"] == 1
    probes._verdict(d, "student", 0.0, {"questions": {"kept": 0, "too_easy": 0}, "rules": {
        "counterfactual": {"in_kept": 0}, "why": {"in_kept": 0}}})
    assert d["kept"] and d["n_student_correct"] == 1     # 1 of the 2 graded: neither too easy nor too hard
    assert [r["rule"] for r in evaluate.ei_probe_records([d])] == ["counterfactual", "why"]
    assert all(r["question"] != invented["question"] for r in evaluate.ei_probe_records([d]))
