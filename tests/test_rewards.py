"""Adversarial, table-driven tests of the answer checkers (pitfall P13).

    python -m pytest -q tests/test_rewards.py

Each row: (model output, gold, expected reward). The wrong rows are the traps: substring
matches, several answers, echoes of the question, empty outputs, near-miss numbers.
"""
import pytest

from rewards import ANSWER_TYPES, extract_answer, is_correct, reward

# -----------------------------------------------------------------------------
# number

NUMBER = [
    ("18 eggs. The answer is 18.", "18", 1.0),
    ("The answer is 18", "18.0", 1.0),                      # gold from RevThink GSM8K is a float
    ("The answer is 18.0.", "18", 1.0),
    ("The answer is 180.", "18", 0.0),                      # near miss: a digit more
    ("The answer is 1.8.", "18", 0.0),                      # near miss: a misplaced point
    ("The answer is 12", "2", 0.0),                         # substring trap
    ("The answer is 2", "12", 0.0),
    ("The answer is -5.", "-5", 1.0),                       # negatives
    ("The answer is 5.", "-5", 0.0),
    ("The answer is \u22125.", "-5", 1.0),                  # unicode minus
    ("The answer is $1,234.00.", "1234", 1.0),              # dollars, separators, decimals
    ("The answer is 1,234", "1,234", 1.0),
    ("The answer is 1,234", "1234.5", 0.0),
    ("The answer is 1.250.", "1.25", 1.0),                  # GSM8K-Reversal decimals
    ("The answer is 10.00", "10", 1.0),
    ("The answer is 5/11.", "5/11", 1.0),                   # TabMWP fractions
    ("The answer is 10/22.", "5/11", 1.0),                  # compared by value
    ("The answer is 0.5.", "1/2", 1.0),
    ("The answer is 0.45.", "5/11", 0.0),                   # too coarse a decimal for 5/11
    ("The answer is 0.333333.", "1/3", 1.0),                # six places: within tolerance
    ("The answer is 1000001.", "1000000", 0.0),             # tolerance is not relative slack
    ("The answer is $\\frac{5}{11}$.", "5/11", 1.0),        # LaTeX fraction
    ("The answer is 19.4%.", "19.4%", 1.0),                 # TabMWP percentages
    ("The answer is 18 dollars per day.", "18", 1.0),       # unit words ignored
    ("The answer is **18**.", "18", 1.0),                   # markdown bold
    ("Answer: 18", "18", 1.0),
    ("She has 16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The answer is 18.", "18", 1.0),
    ("The answer is 9 * 2 = 18.", "18", 1.0),               # equation: the result counts
    ("The answer is 18. Wait, 16 - 3 = 13 and 13 * 2 = 26.", "18", 1.0),  # phrase beats later numbers
    ("The answer is 26. Hmm, no. The answer is 18.", "18", 1.0),          # the last phrase wins
    ("The answer is 18. Hmm, no. The answer is 26.", "18", 0.0),
    ("The answer is 18 or 20.", "18", 0.0),                 # several answers
    ("The answer is 1,2.", "1", 0.0),                       # a list, not a separator
    ("16 - 3 - 4 = 9, 9 * 2 = 18", "18", 1.0),              # fallback: last number
    ("#### 18", "18", 1.0),                                 # GSM8K reference solutions
    ("", "18", 0.0),                                        # empty
    ("The answer is", "18", 0.0),
    ("The answer is unknown.", "18", 0.0),
    ("I don't know", "18", 0.0),
    ("9" * 6000, "9", 0.0),                                 # a number beyond int parsing
    ("The answer is " + "9" * 300 + ".", "9" * 300, 1.0),   # huge but parseable
    ("The answer is 5/0.", "5", 0.0),                       # division by zero is no answer
    ("\x00\xff garbage {{{ \\boxed{", "1", 0.0),
]


def test_number_echo_of_question_does_not_count():
    q = "Janet has 16 eggs and eats 3. How many eggs are left?"
    assert reward(q, "16", "number", question=q) == 0.0           # the question's last number
    assert reward(q + " 16 - 3 = 13. The answer is 13.", "13", "number", question=q) == 1.0
    assert reward("Janet has 16 eggs and eats 3.", "3", "number", question=q) == 0.0  # a sentence echo
    # a gold that also appears in the question is fine when the model states it
    assert reward("The answer is 16.", "16", "number", question=q) == 1.0


def test_number_extract_is_normalized():
    assert extract_answer("The answer is $1,234.50.", "number") == "1234.5"
    assert extract_answer("The answer is 18.0", "number") == "18"
    assert extract_answer("The answer is 10/22", "number") == "5/11"
    assert extract_answer("The answer is -0.50", "number") == "-0.5"
    assert extract_answer("no digits here", "number") is None


# -----------------------------------------------------------------------------
# yesno

YESNO = [
    ("The answer is yes.", "yes", 1.0),
    ("The answer is Yes", "yes", 1.0),
    ("The answer is no.", "yes", 0.0),
    ("The answer is true.", "yes", 1.0),
    ("The answer is False.", "no", 1.0),
    ("The answer is yes or no.", "yes", 0.0),               # both answers
    ("No, wait. The answer is yes.", "yes", 1.0),           # the phrase wins
    ("The answer is no. Yes, I am sure.", "no", 1.0),
    ("Yes.", "yes", 1.0),                                   # fallback: last yes/no word
    ("The answer is nothing.", "no", 0.0),                  # 'no' inside a word
    ("The answer is yesterday.", "yes", 0.0),
    ("The answer is unclear.", "no", 0.0),
    ("", "no", 0.0),
]


def test_yesno_echo_of_question_does_not_count():
    q = "Is it true that no penguin can fly, yes or no?"
    assert reward(q, "no", "yesno", question=q) == 0.0
    assert reward(q + " The answer is no.", "no", "yesno", question=q) == 1.0


# -----------------------------------------------------------------------------
# choice: rows are (output, gold, question, expected)

CSQA = "A revolving door is a security measure at a what? (A) bank (B) library (C) bank account (D) mall (E) new york."
ARC = "Which state of water is coldest? (1) ice (2) water (3) steam (4) 2"
ESNLI = ('Premise: A dog runs.\nBased on this premise, can we conclude the hypothesis: "An animal moves." is true?\n'
         "The options are (A) yes (B) it is not possible to tell (C) no.")
ANLI = ("What is the relationship between the following two sentences?\nSentence 1: It rained.\nSentence 2: The road is wet.\n"
        "The options are (A) entailment (B) neutral (C) contradiction.")
TABMWP = "### Coins\n\n| Name | Coins |\n|---|---|\n| Erica | 646 |\n\n### Question\n\nWho has the most coins?\n\n(A) Erica\n(B) Hunter"

CHOICE = [
    ("The answer is (A).", "A", CSQA, 1.0),
    ("The answer is A)", "A", CSQA, 1.0),
    ("The answer is A.", "A", CSQA, 1.0),
    ("The answer is **A**", "A", CSQA, 1.0),
    ("The answer is (B).", "A", CSQA, 0.0),
    ("The answer is (A) or (B).", "A", CSQA, 0.0),          # several answers
    ("The answer is A or B.", "A", CSQA, 0.0),
    ("The answer is (A) bank (B) library (C) bank account (D) mall (E) new york.", "A", CSQA, 0.0),  # option list
    ("The answer is bank.", "A", CSQA, 1.0),                # option text instead of the letter
    ("The answer is Bank", "A", CSQA, 1.0),
    ("The answer is bank account.", "C", CSQA, 1.0),        # 'bank' inside 'bank account' is not (A)
    ("The answer is bank account.", "A", CSQA, 0.0),
    ("The answer is (A) bank.", "A", CSQA, 1.0),            # letter and its text agree
    ("The answer is (F).", "A", CSQA, 0.0),                 # not an option
    ("The answer is banking.", "A", CSQA, 0.0),             # text inside a word
    ("(B) is wrong since ... so (A) fits best", "A", CSQA, 1.0),  # fallback: last option mark
    ("The answer is (A). Hmm, (B) is also plausible.", "A", CSQA, 1.0),  # phrase beats later marks
    ("The answer is (1).", "1", ARC, 1.0),                  # ARC digit options
    ("The answer is 1.", "1", ARC, 1.0),
    ("The answer is ice.", "1", ARC, 1.0),
    ("The answer is 2.", "1", ARC, 0.0),                    # the label 2, not option text '2'
    ("The answer is (A).", "1", ARC, 0.0),
    ("The answer is no.", "C", ESNLI, 1.0),                 # NLI: label words are option text
    ("The answer is (C) no.", "C", ESNLI, 1.0),
    ("The answer is it is not possible to tell.", "B", ESNLI, 1.0),
    ("The answer is it is not possible to tell.", "C", ESNLI, 0.0),  # 'not' is not 'no'
    ("The answer is yes.", "B", ESNLI, 0.0),
    ("The answer is contradiction.", "C", ANLI, 1.0),
    ("The answer is neutral.", "C", ANLI, 0.0),
    ("The answer is Hunter.", "B", TABMWP, 1.0),            # TabMWP options on separate lines
    ("The answer is (B) Hunter", "B", TABMWP, 1.0),
    ("", "A", CSQA, 0.0),
    ("The answer is", "A", CSQA, 0.0),
]

# -----------------------------------------------------------------------------
# math (MATH-style LaTeX)

MATH = [
    ("The answer is $\\boxed{\\frac{1}{2}}$.", "\\frac12", 1.0),
    ("\\boxed{\\dfrac{1}{2}}", "\\tfrac{1}{2}", 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),                  # value equality
    ("\\boxed{-\\frac{1}{2}}", "-0.5", 1.0),
    ("\\boxed{\\frac{1}{20}}", "\\frac{1}{2}", 0.0),        # near miss
    ("\\boxed{12}", "2", 0.0),                              # substring trap
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", 1.0),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "(3,\\frac{\\pi}{2})", 1.0),  # \left \right, spaces
    ("\\boxed{(3,4)}", "(3,4]", 0.0),                       # intervals: brackets matter
    ("The answer is $30^\\circ$.", "30", 1.0),              # degrees
    ("The answer is $30^{\\circ}$.", "30", 1.0),
    ("\\boxed{12 \\text{ cm}}", "12", 1.0),                 # trailing units
    ("\\boxed{\\frac{270}{7}}", "\\frac{270}7\\text{ degrees}", 1.0),
    ("\\boxed{\\$32,348}", "\\$32,\\!348", 1.0),            # dollars, thin spaces, separators
    ("\\boxed{32348}", "\\$32,\\!348", 1.0),
    ("The answer is $x = 5$.", "5", 1.0),                   # leading 'x ='
    ("\\boxed{5}", "x=5", 1.0),
    ("\\boxed{\\text{(C)}}", "\\text{(C)}", 1.0),           # a \text answer is kept
    ("\\boxed{\\text{east}}", "\\text{east}", 1.0),
    ("\\boxed{west}", "\\text{east}", 0.0),
    ("\\boxed{\\sqrt2}", "\\sqrt{2}", 1.0),
    ("\\boxed{3, 5, 7}", "3,5,7", 1.0),
    ("\\boxed{\\boxed{4}}", "4", 1.0),                      # nested braces
    ("\\boxed{\\frac{1}{2}", "\\frac{1}{2}", 0.0),          # truncated: unbalanced
    ("The answer is $\\frac{1}{2}$ cm.", "\\frac12", 1.0),   # only the $...$ part of the phrase
    ("The answer is \\(\\frac{1}{2}\\).", "0.5", 1.0),       # \( \) delimiters
    ("The answer is $\\$5$.", "5", 1.0),
    ("The answer is $x=2$ and $y=3$.", "2", 0.0),           # two math parts: two answers
    ("The answer is 2 or 3.", "2", 0.0),                    # several answers
    ("\\boxed{}", "1", 0.0),                                # an empty box
    ("\\boxed{3}. The answer is 4.", "3", 0.0),             # the phrase beats an earlier box
    ("", "1", 0.0),
    ("The answer is", "1", 0.0),
]

CASES = ([("number", t, g, None, e) for t, g, e in NUMBER] + [("yesno", t, g, None, e) for t, g, e in YESNO]
         + [("choice", t, g, q, e) for t, g, q, e in CHOICE] + [("math", t, g, None, e) for t, g, e in MATH])


@pytest.mark.parametrize("answer_type,text,gold,question,expected", CASES)
def test_reward_table(answer_type, text, gold, question, expected):
    assert reward(text, gold, answer_type, question) == expected


def test_choice_echo_of_question_does_not_count():
    assert reward(CSQA, "A", "choice", question=CSQA) == 0.0
    assert reward(ESNLI, "C", "choice", question=ESNLI) == 0.0
    assert reward(ESNLI + "\nThe answer is (C).", "C", "choice", question=ESNLI) == 1.0
    assert extract_answer("The answer is library.", "choice", CSQA) == "B"


# -----------------------------------------------------------------------------
# API contract


def test_unknown_answer_type_raises_and_types_are_listed():
    assert ANSWER_TYPES == ("number", "yesno", "choice", "math")
    with pytest.raises(ValueError, match="number"):
        reward("The answer is 1.", "1", "integer")


@pytest.mark.parametrize("answer_type", ANSWER_TYPES)
def test_never_raises_on_garbage(answer_type):
    for text in ["", " ", "The answer is", "}}}{{{", "\\boxed{", "(((", "The answer is " + "(" * 500,
                 "1" * 5000, "answer: " * 1000, "\n\n\n", "The answer is $$."]:
        assert reward(text, "1", answer_type, question="Q? (A) x (B) y") in (0.0, 1.0)
        assert is_correct(text, "1", answer_type) in (True, False)
