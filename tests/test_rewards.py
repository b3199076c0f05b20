"""Adversarial, table-driven tests of the answer checkers (pitfall P13).

    python -m pytest -q tests/test_rewards.py

Each row: (model output, gold, expected reward). The wrong rows are the traps: substring
matches, several answers, echoes of the question, empty outputs, near-miss numbers.
"""
import json
from pathlib import Path

import pytest

from rewards import ANSWER_TYPES, extract_answer, is_correct, reward, states_answer

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


# -----------------------------------------------------------------------------
# issue 14: answer layouts real models write (correct but written differently) and
# near misses (wrong but similar); rows as above

NUMBER_MORE = [
    ("The final answer is:\n\\[ \\boxed{18} \\]", "18", 1.0),                 # display math below the phrase
    ("The final answer is:\n$$ 18 $$", "18", 1.0),
    ("**Final Answer:**\n\n$$\\boxed{18}$$", "18", 1.0),
    ("The answer is 18 (that is, 2 times 9).", "18", 1.0),                  # an aside
    ("The answer is 18, not 28.", "18", 1.0),                               # a rejected alternative
    ("The answer is 18 rather than 20.", "18", 1.0),
    ("The answer is 18 m^2.", "18", 1.0),                                   # unit exponents
    ("The answer is 18 cm\u00b2.", "18", 1.0),
    ("The answer is approx. 18.5 km.", "18.5", 1.0),                        # 'approx.' ends no sentence
    ("The answer is 1 234.", "1234", 1.0),                                  # space as thousands separator
    ("So the total is \\boxed{18}. Therefore our answer is correct.", "18", 1.0),  # a later empty phrase
    ("Final Answer: The final answer is $18$. I hope it is correct.", "18", 1.0),  # Minerva
    ("The answer is $\\boxed{1,234}$ dollars.", "1234", 1.0),
    ("The answer is 0.333.", "0.33", 1.0),                                  # at the gold's precision
    ("The answer is 0.4545.", "5/11", 1.0),                                 # 4 places for a fraction
    ("The answer is 3/4.", "0.75", 1.0),
    ("The answer is .5", "0.5", 1.0),
    ("The answer is 18.", "18.00", 1.0),
    ("**Answer:** 18", "18", 1.0),
    ("The answer is: 18", "18", 1.0),
    ("The answer is 18 eggs (9 pairs).", "18", 1.0),
    ("the answer is 18", "18", 1.0),
    ("The answer is $18$.", "18", 1.0),
    ("The answer is \\(18\\).", "18", 1.0),
    ("The answer is 2,500,000.", "2500000", 1.0),
    ("The answer is 7 \u00d7 2 = 14.", "14", 1.0),
    ("The answer is 11,111,111,101.", "11111111100", 0.0),                  # no relative tolerance
    ("The answer is 1/1025.", "1/1024", 0.0),                               # no absolute tolerance
    ("The answer is .0000675.", ".0000672", 0.0),
    ("The answer is 18.4.", "18", 0.0),                                     # an integer gold is exact
    ("The answer is 0.3.", "1/3", 0.0),                                     # too few places for 1/3
    ("The answer is 0.33.", "1/3", 0.0),
    ("The answer is 0.3334.", "1/3", 0.0),                                  # 4 places, badly rounded
    ("The answer is 1.3.", "1.25", 0.0),                                    # coarser than the gold
    ("The answer is 1.24.", "1.25", 0.0),
    ("The answer is 28, not 18.", "18", 0.0),                               # the rejected one is the gold
    ("The answer is 20 rather than 18.", "18", 0.0),
    ("\\boxed{18}. The answer is 20.", "18", 0.0),                          # a later phrase with a number
    ("The final answer is:\n\\[ \\boxed{20} \\]", "18", 0.0),
    ("The final answer is:\n$$ 18 + 2 $$", "18", 0.0),
    ("The answer is 18 and 20.", "18", 0.0),
    ("The answer is 1 235.", "1234", 0.0),
    ("The answer is 12,340.", "1234", 0.0),
    ("The answer is -18.", "18", 0.0),
    ("The answer is \u221218.", "18", 0.0),
    ("The answer is 18%.", "0.18", 0.0),
    ("The answer is 1/2.", "2", 0.0),
    ("The answer is 18 m^2 or 20 m^2.", "18", 0.0),
    ("The answer is 81.", "18", 0.0),
    ("The answer is 0.18.", "18", 0.0),
    ("The answer is 18000.", "18", 0.0),
    ("Final Answer: The final answer is $19$. I hope it is correct.", "18", 0.0),
    ("**Answer:** 17", "18", 0.0),
    ("The answer is 18/5.", "18", 0.0),
    ("The answer is 1.8e1.", "18", 0.0),                                    # not a number format we read
    ("The final answer is:", "18", 0.0),                                    # nothing below the phrase
    ("The answer is \\boxed{}.", "18", 0.0),
    ("The answer is 1,8.", "18", 0.0),
]

YESNO_MORE = [
    ("No. It is not true that penguins can fly.", "no", 1.0),               # the committed word
    ("Yes, because the Nile is longer than the Danube.", "yes", 1.0),
    ("**Yes**", "yes", 1.0),
    ("The answer is: No", "no", 1.0),
    ("Answer: yes", "yes", 1.0),
    ("The final answer is:\n\\[ \\boxed{\\text{Yes}} \\]", "yes", 1.0),
    ("\\boxed{No}", "no", 1.0),
    ("The answer is no, it is not true that the moon is made of cheese.", "no", 1.0),
    ("The answer is **no**.", "no", 1.0),
    ("Final Answer: The final answer is yes. I hope it is correct.", "yes", 1.0),
    ("The answer is yes (it is well documented).", "yes", 1.0),
    ("The answer is not true.", "no", 1.0),
    ("The answer is yes, not no.", "yes", 1.0),
    ("It is true that birds fly. No, wait: penguins do not. The answer is no.", "no", 1.0),
    ("No, because it is true that penguins are birds.", "no", 1.0),
    ("False.", "no", 1.0),
    ("True. Water boils at 100 C at sea level.", "yes", 1.0),
    ("Let me think.\n\nNo.", "no", 1.0),
    ("Let me think. Yes, it is possible.", "yes", 1.0),
    ("**Answer: No**", "no", 1.0),
    ("The answer is YES.", "yes", 1.0),
    ("The answer is yes, since 2 > 1.", "yes", 1.0),
    ("the answer is no", "no", 1.0),
    ("The answer is $\\boxed{yes}$.", "yes", 1.0),
    ("Yes.\n\nThe Eiffel Tower is in Paris, so it is not true that it is in Rome.", "yes", 1.0),
    ("No. It is not true that penguins can fly.", "yes", 0.0),
    ("The answer is yes and no.", "no", 0.0),                               # both: no answer
    ("The answer is yes and no.", "yes", 0.0),
    ("Yes and no.", "no", 0.0),
    ("The answer is yes/no.", "yes", 0.0),
    ("The answer is maybe.", "yes", 0.0),
    ("It depends on the season.", "no", 0.0),
    ("I cannot say.", "no", 0.0),
    ("The answer is not clear.", "no", 0.0),
    ("Yes, because the Nile is longer than the Danube.", "no", 0.0),
    ("**Yes**", "no", 0.0),
    ("The answer is: No", "yes", 0.0),
    ("\\boxed{No}", "yes", 0.0),
    ("The final answer is:\n\\[ \\boxed{\\text{Yes}} \\]", "no", 0.0),
    ("The answer is not true.", "yes", 0.0),
    ("False.", "yes", 0.0),
    ("The answer is yes, not no.", "no", 0.0),
    ("No, because it is true that penguins are birds.", "yes", 0.0),
    ("Yes. The answer is no.", "yes", 0.0),                                 # the phrase wins
    ("The answer is no. Yes.", "yes", 0.0),
    ("The answer is nobody.", "no", 0.0),
    ("The answer is yesterday.", "yes", 0.0),
    ("The answer is no-one.", "no", 0.0),
    ("Yesterday it rained.", "yes", 0.0),
    ("The answer is true or false.", "yes", 0.0),
    ("The answer is yes or no.", "no", 0.0),
    ("Yes or no? Hard to tell.", "yes", 0.0),
    ("The answer is", "no", 0.0),
    ("Noted.", "no", 0.0),
    ("Notably, penguins swim.", "no", 0.0),
]

DATE = ("Jane visited the museum for a while. How long?\nOptions:\n(A) three hours\n"
        "(B) four hours and fifteen minutes\n(C) two hours\n(D) one hour")

CHOICE_MORE = [
    ("The answer is (B) four hours and fifteen minutes.", "B", DATE, 1.0),  # an option with its text
    ("The answer is four hours and fifteen minutes.", "B", DATE, 1.0),
    ("(B) four hours and fifteen minutes", "B", DATE, 1.0),
    ("The answer is (b).", "B", CSQA, 1.0),                                 # lowercase labels
    ("the answer is d", "D", CSQA, 1.0),
    ("The answer is b) library.", "B", CSQA, 1.0),
    ("**B**", "B", CSQA, 1.0),                                              # a bold label alone
    ("After thinking, **(B)**", "B", CSQA, 1.0),
    ("The answer is (D), not (E).", "D", CSQA, 1.0),                        # a rejected alternative
    ("The answer is D, not E.", "D", CSQA, 1.0),
    ("The answer is (D) rather than (A).", "D", CSQA, 1.0),
    ("It is not (A). It is (D).", "D", CSQA, 1.0),
    ("The final answer is:\n\\[ \\boxed{B} \\]", "B", CSQA, 1.0),          # display math
    ("\\boxed{\\text{(B)}}", "B", CSQA, 1.0),
    ("So \\boxed{B}. Our answer is correct.", "B", CSQA, 1.0),              # a later empty phrase
    ("Final Answer: The final answer is B. I hope it is correct.", "B", CSQA, 1.0),
    ("**Answer:** (B) library", "B", CSQA, 1.0),
    ("The answer is A because banks need security.", "A", CSQA, 1.0),      # 'A because': a label
    ("The answer is A.", "A", CSQA, 1.0),
    ("The answer is option C.", "C", CSQA, 1.0),
    ("The answer is (C) bank account.", "C", CSQA, 1.0),
    ("The answer is library (B).", "B", CSQA, 1.0),
    ("The answer is: **(E) new york**", "E", CSQA, 1.0),
    ("Answer: (2)", "2", ARC, 1.0),
    ("The answer is (C) no.", "C", ESNLI, 1.0),
    ("The answer is: it is not possible to tell", "B", ESNLI, 1.0),
    ("The answer is entailment.", "A", ANLI, 1.0),
    ("The answer is (B) Hunter.", "B", TABMWP, 1.0),
    ("The options are:\n(A) bank\n(B) library\n\nThe answer is (B).", "B", CSQA, 1.0),
    ("Bank is wrong. **(C)** bank account.", "C", CSQA, 1.0),
    ("The answer is A library.", "A", CSQA, 0.0),                           # an article, not a label
    ("The answer is a library.", "A", CSQA, 0.0),
    ("The answer is (B) four hours and fifteen minutes.", "A", DATE, 0.0),
    ("The answer is four hours and fifteen minutes.", "D", DATE, 0.0),
    ("The answer is (b).", "A", CSQA, 0.0),
    ("the answer is d", "E", CSQA, 0.0),
    ("**B**", "A", CSQA, 0.0),
    ("The answer is (D), not (E).", "E", CSQA, 0.0),
    ("The answer is D, not E.", "E", CSQA, 0.0),
    ("The answer is (D) rather than (A).", "A", CSQA, 0.0),
    ("The final answer is:\n\\[ \\boxed{B} \\]", "C", CSQA, 0.0),
    ("So \\boxed{B}. Our answer is correct.", "A", CSQA, 0.0),
    ("The answer is (B) or (D).", "B", CSQA, 0.0),                          # two answers
    ("The answer is b or d.", "B", CSQA, 0.0),
    ("The answer is (B) and (D).", "B", CSQA, 0.0),
    ("The answer is (B) library or (D) mall.", "D", CSQA, 0.0),
    ("The answer is (B) mall.", "D", CSQA, 0.0),                            # label and text disagree: label counts
    ("(A) bank\n(B) library\n(C) bank account\n(D) mall\n(E) new york", "E", CSQA, 0.0),  # an option list
    ("(A) three hours\n(B) four hours and fifteen minutes\n(C) two hours\n(D) one hour", "D", DATE, 0.0),
    ("The answer is (G).", "A", CSQA, 0.0),                                 # not an option
    ("The answer is e.g. a bank.", "E", CSQA, 0.0),
    ("The answer is (3).", "2", ARC, 0.0),
    ("The answer is steam.", "1", ARC, 0.0),
    ("The answer is (A) yes.", "C", ESNLI, 0.0),
    ("The answer is neutral.", "A", ANLI, 0.0),
    ("The answer is Erica.", "B", TABMWP, 0.0),
    ("The answer is none of the above.", "A", CSQA, 0.0),
    ("I think it is a bank account, not a bank.", "A", CSQA, 0.0),
    ("Final Answer: The final answer is C. I hope it is correct.", "B", CSQA, 0.0),
    ("**Answer:** (A) bank", "B", CSQA, 0.0),
    ("The answer is I don't know.", "A", CSQA, 0.0),
]

MATH_MORE = [
    ("The final answer is:\n\\[ \\boxed{\\frac{1}{2}} \\]", "\\frac12", 1.0),  # display math
    ("The final answer is:\n$$\\frac{1}{2}$$", "\\frac12", 1.0),
    ("So $x = \\boxed{18}$. Therefore our answer is correct.", "18", 1.0),   # a later empty phrase
    ("\\boxed{\\frac 59}", "\\frac{5}{9}", 1.0),                            # \frac without braces
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 1.0),
    ("\\boxed{\\begin{pmatrix} -1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix}-1\\\\2\\end{pmatrix}", 1.0),
    ("\\boxed{\\displaystyle \\frac{1}{2}}", "\\frac12", 1.0),
    ("\\boxed{C}", "\\text{(C)}", 1.0),                                     # an option letter
    ("\\boxed{(C)}", "\\text{(C)}", 1.0),
    ("\\boxed{30^\\circ}", "30", 1.0),                                      # degrees
    ("\\boxed{30\u00b0}", "30^\\circ", 1.0),
    ("\\boxed{5\\text{ cm}^2}", "5", 1.0),                                  # units with an exponent
    ("The answer is $\\frac12$, or equivalently $0.5$.", "\\frac{1}{2}", 1.0),
    ("The answer is $\u22125$.", "-5", 1.0),                                # unicode minus
    ("\\boxed{\\frac12\\pi}", "\\pi/2", 1.0),                               # math-verify equivalences
    ("\\boxed{\\sqrt8}", "2\\sqrt2", 1.0),
    ("\\boxed{\\frac{1+x}{2}}", "\\frac{x+1}{2}", 1.0),
    ("\\boxed{0.001}", "10^{-3}", 1.0),
    ("\\boxed{2\\frac{1}{2}}", "\\frac52", 1.0),                            # a mixed number
    ("\\boxed{\\frac{\\sqrt{3}}{3}}", "\\frac{1}{\\sqrt{3}}", 1.0),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
    ("\\boxed{\\{1,2,3\\}}", "3, 2, 1", 1.0),
    ("\\boxed{[2,5)}", "[2, 5)", 1.0),
    ("\\boxed{y=2x+3}", "y = 2x + 3", 1.0),
    ("Final Answer: The final answer is $\\frac{14}{3}$. I hope it is correct.", "\\frac{14}{3}", 1.0),
    ("**Answer:** $p - q$", "p-q", 1.0),
    ("The answer is $\\boxed{\\text{Evelyn}}$.", "\\text{Evelyn}", 1.0),
    ("The answer is $\\boxed{4.5}$.", "\\frac92", 1.0),
    ("\\boxed{90^{\\circ}}", "90^\\circ", 1.0),
    ("The answer is $\\boxed{10\\%}$.", "10", 1.0),
    ("\\boxed{\\frac{1}{1025}}", "\\frac{1}{1024}", 0.0),                   # exact numbers
    ("\\boxed{0.0000675}", "0.0000672", 0.0),
    ("\\boxed{11111111101}", "11111111100", 0.0),
    ("\\boxed{\\frac{\\pi}{3}}", "\\frac{\\pi}{2}", 0.0),
    ("\\boxed{1.5708}", "\\frac{\\pi}{2}", 0.0),                            # a decimal for an exact gold
    ("\\boxed{3\\sqrt2}", "2\\sqrt2", 0.0),
    ("\\boxed{\\sqrt{2}/2}", "\\sqrt{2}", 0.0),
    ("\\boxed{\\frac{x+1}{3}}", "\\frac{x+1}{2}", 0.0),
    ("\\boxed{10^{-2}}", "10^{-3}", 0.0),
    ("\\boxed{2\\frac{1}{3}}", "\\frac52", 0.0),
    ("\\boxed{\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 0.0),
    ("\\boxed{(2,5)}", "[2, 5)", 0.0),
    ("\\boxed{D}", "\\text{(C)}", 0.0),
    ("\\boxed{\\text{west}}", "\\text{east}", 0.0),
    ("\\boxed{x^2+1}", "(x+1)^2", 0.0),
    ("\\boxed{\\{1,2\\}}", "1, 2, 3", 0.0),
    ("\\boxed{60^\\circ}", "30", 0.0),
    ("\\boxed{-5}", "5", 0.0),
    ("The answer is $\\frac12$ or $\\frac13$.", "\\frac{1}{2}", 0.0),       # two answers
    ("The final answer is:\n\\[ \\boxed{\\frac{1}{3}} \\]", "\\frac12", 0.0),
    ("So $x = \\boxed{18}$. The answer is $20$.", "18", 0.0),
    ("Final Answer: The final answer is $\\frac{13}{3}$. I hope it is correct.", "\\frac{14}{3}", 0.0),
    ("**Answer:** $p + q$", "p-q", 0.0),
    ("\\boxed{\\infty}", "-\\infty", 0.0),
    ("\\boxed{y=2x-3}", "y = 2x + 3", 0.0),
    ("\\boxed{4.6}", "\\frac92", 0.0),
    ("\\boxed{\\frac{5}{9}\\pi}", "\\frac{5}{9}", 0.0),
    ("\\boxed{1}", "i", 0.0),
    ("\\boxed{2i}", "-2i", 0.0),
    ("The answer is $x = 3$ and $x = -3$.", "3", 0.0),
    ("\\boxed{\\frac{1}{2}} and \\boxed{\\frac{1}{3}}", "\\frac{1}{3}", 1.0),  # the last box counts
]

TABLES = {"number": [(t, g, None, e) for t, g, e in NUMBER + NUMBER_MORE],
          "yesno": [(t, g, None, e) for t, g, e in YESNO + YESNO_MORE],
          "choice": CHOICE + CHOICE_MORE,
          "math": [(t, g, None, e) for t, g, e in MATH + MATH_MORE]}
CASES = [(kind, t, g, q, e) for kind, rows in TABLES.items() for t, g, q, e in rows]


@pytest.mark.parametrize("answer_type", ANSWER_TYPES)
def test_each_table_has_30_correct_and_30_wrong_rows(answer_type):
    expected = [e for *_, e in TABLES[answer_type]]
    assert expected.count(1.0) >= 30 and expected.count(0.0) >= 30, (expected.count(1.0), expected.count(0.0))


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


# -----------------------------------------------------------------------------
# real SmolLM2-135M-Instruct outputs (zero-shot, greedy; evaluate.py's predictions), each
# verdict judged by reading the output: tests/fixtures/smollm2_outputs.jsonl

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "smollm2_outputs.jsonl"
REAL = [json.loads(line) for line in FIXTURES.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("row", REAL, ids=[r["id"] for r in REAL])
def test_real_smollm2_outputs(row):
    assert extract_answer(row["generated"], row["answer_type"], row["question"]) == row["expected"]
    assert is_correct(row["generated"], row["gold"], row["answer_type"], row["question"]) == row["expected_correct"]


# -----------------------------------------------------------------------------
# states_answer: the leak check of probes; exact numbers; math-verify off the main thread


def test_states_answer_finds_the_gold_anywhere():
    assert states_answer("If Janet ends with 18 eggs, how many did she start with?", "18", "number")
    assert states_answer("She ends with 18.0 eggs.", "18", "number")
    assert not states_answer("She ends with 180 eggs after 1.8 days.", "18", "number")
    assert states_answer("Suppose the result were $\\frac{1}{2}$; what is x?", "\\frac12", "math")
    assert states_answer("Given that the answer is \\boxed{0.5}, check it.", "\\frac{1}{2}", "math")
    assert not states_answer("Suppose the result were $\\frac{1}{3}$.", "\\frac12", "math")
    assert states_answer("Why is (B) right?", "B", "choice") and not states_answer("Why is (C) right?", "B", "choice")
    assert states_answer("The answer is yes. Why?", "yes", "yesno")
    assert not states_answer("Is it yes or no: can penguins fly?", "yes", "yesno")  # a question, no commitment



def test_states_answer_on_choice_sees_labels_and_the_gold_options_words():
    # gold B of this question is 'library': a probe that names it, or points at B, gives Q's answer away
    q = "Where do people borrow books? (A) bank (B) library (C) river (D) park"
    for leak in ("Why is a library the place where people borrow books?", "Why is option B the best answer?",
                 "Explain why B is correct.", "The answer is library. Why?", "Is B) right?", "Why is (b) right?"):
        assert states_answer(leak, "B", "choice", q), leak
    for safe in ("Why is (C) right?", "Is a river wet?", "A bank is near a river.", "Are librarylike shelves tall?"):
        assert not states_answer(safe, "B", "choice", q), safe
    # without the question only the label can be seen; 'A' the article is not the label A
    assert not states_answer("Why is a library the place?", "B", "choice")
    assert not states_answer("A park is green. Why?", "A", "choice", q)


def test_states_answer_on_math_matches_the_bare_gold_as_a_token_only():
    assert states_answer("So x = 2. Check it.", "2", "math")
    assert states_answer("It is 2, so y = 4.", "2", "math")
    assert states_answer("the value \\frac{1} {2} is", "\\frac{1}{2}", "math")   # spaces inside the gold
    for text in ("Expand (x+1)^2 and collect terms.",   # an exponent
                 "Solve 3y + 12 = 40.", "Take 2.5 apples.", "Take 0.2 of it.", "2^3 = 8"):
        assert not states_answer(text, "2", "math"), text
    assert not states_answer("There are 1,000 people.", "1", "math")   # a digit of a longer number

def test_number_rounding_at_the_gold_precision_by_hand():
    # gold 0.33 has 2 places: 0.334 -> round(0.334, 2) = 0.33 (same); 0.335 -> 0.34 (half away from 0)
    assert reward("The answer is 0.334.", "0.33", "number") == 1.0
    assert reward("The answer is 0.335.", "0.33", "number") == 0.0
    assert reward("The answer is -0.334.", "-0.33", "number") == 1.0
    # gold 1/3 (a fraction): a decimal of 4+ places must be 1/3 rounded at its own places
    assert reward("The answer is 0.3333.", "1/3", "number") == 1.0  # round(1/3, 4) = 0.3333
    assert reward("The answer is 0.66667.", "2/3", "number") == 1.0  # round(2/3, 5) = 0.66667
    assert reward("The answer is 0.6666.", "2/3", "number") == 0.0  # round(2/3, 4) = 0.6667


def test_math_verify_runs_off_the_main_thread():
    import threading
    got = []
    t = threading.Thread(target=lambda: got.append(reward("\\boxed{\\sqrt8}", "2\\sqrt2", "math")))
    t.start()
    t.join()
    assert got == [1.0]  # signal-based timeouts are skipped there, not raised


def test_many_boxes_are_read_in_one_pass():
    # 2,000 unclosed boxes took 1.8 s with a scan per box; one pass over the braces is linear
    assert extract_answer("\\boxed{" * 2000, "math") is None
    assert extract_answer("\\boxed{1}" * 5000 + "\\boxed{\\boxed{7}}", "math") == "7"
