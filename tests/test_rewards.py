"""Adversarial, table-driven tests of the answer checkers (pitfall P13).

    python -m pytest -q tests/test_rewards.py

Each row: (model output, gold, expected reward). The wrong rows are the traps: substring
matches, several answers, echoes of the question, empty outputs, near-miss numbers.
"""
import pytest

from rewards import ANSWER_TYPES, extract_answer, is_correct, reward

# -----------------------------------------------------------------------------
# number

NUMBER_CASES = [
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


@pytest.mark.parametrize("text,gold,expected", NUMBER_CASES)
def test_number(text, gold, expected):
    assert reward(text, gold, "number") == expected


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

YESNO_CASES = [
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


@pytest.mark.parametrize("text,gold,expected", YESNO_CASES)
def test_yesno(text, gold, expected):
    assert reward(text, gold, "yesno") == expected


def test_yesno_echo_of_question_does_not_count():
    q = "Is it true that no penguin can fly, yes or no?"
    assert reward(q, "no", "yesno", question=q) == 0.0
    assert reward(q + " The answer is no.", "no", "yesno", question=q) == 1.0


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
