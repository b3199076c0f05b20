"""
Answer checkers: the binary outcome reward R_base of ExGRPO, as pure functions of text.

    from rewards import reward, is_correct, extract_answer
    reward("... so 9 * 2 = 18. The answer is 18.", "18", "number")   # -> 1.0
    extract_answer("The answer is (B).", "choice", "Where? (A) bank (B) library")  # -> "B"

    python rewards.py "model output" GOLD TYPE ["question"]   # check one output by hand

Ground floor: imports nothing of the project. `reward` never raises on a model output
(empty, garbage, huge numbers); only an unknown answer_type raises ValueError.

How an answer is found (the same for every type):
1. Echo removal: when the question is given, every verbatim copy of it (and of each of
   its sentences of 20+ characters) is cut out of the output first, so an output that only
   repeats the question (or its option list) earns nothing.
2. The model is asked to end with "The answer is X." When "answer is" (or a line starting
   "Answer:" / "Final answer:") occurs, the LAST one wins and only its phrase counts: the
   text after it, up to the end of the line or of the sentence ('.' then a space or the
   end). A phrase that names two different answers ("(B) or (C)", "18 or 20") is wrong
   (extract_answer returns None). A \\boxed{} earlier in the output does not override it.
3. Without that phrase a per-type fallback applies: last number (number), last yes/no word
   (yesno), last "(X)" option mark (choice), last \\boxed{} (math).
"""
import re
import sys
from fractions import Fraction

ANSWER_TYPES = ("number", "yesno", "choice", "math")

# -----------------------------------------------------------------------------
# shared: echo removal and the final answer phrase

# 'the answer is' anywhere; 'Answer:' / '**Final Answer:**' only at a line start, since
# prose like 'we get our answer: \[ ... \]' is not a final answer
_FINAL = re.compile(r"\banswer\s+is\b|^[ \t]*[*#]*[ \t]*(?:final\s+)?answer[ \t*]*:", re.IGNORECASE | re.MULTILINE)
# a period after a title ('Mr. Green', 'Mt. McKinley' in TabMWP/OBQA options) ends no sentence
_ABBREV = "".join(rf"(?<!\b{a})" for a in ("Mr", "Mrs", "Ms", "Dr", "Mt", "St"))
_ECHO_MIN = 20  # shorter question sentences ("(A) yes") are too common to cut out


def _strip_echo(text, question):
    """Cut verbatim copies of the question, and of its longer sentences, out of the output."""
    if not question:
        return text
    pieces = [question.strip()] + re.split(r"(?<=[.?!])\s+|\n", question)
    for piece in sorted({p.strip() for p in pieces if len(p.strip()) >= _ECHO_MIN}, key=len, reverse=True):
        text = text.replace(piece, " ")
    return text


def _final_phrase(text):
    """The phrase after the last 'answer is' / 'answer:', or None when there is none."""
    last = None
    for last in _FINAL.finditer(text):
        pass
    if last is None:
        return None
    tail = text[last.end():].lstrip(" \t\n:*")  # '**Answer:**\n18' is common in chat models
    # the phrase ends at the line end or at a sentence end; '1.25' has no space after its '.'
    return re.split(r"\n|" + _ABBREV + r"\.(?:\s|$)", tail, maxsplit=1)[0].replace("*", "").strip()


def _single(values):
    """The one distinct value of a list, None for zero or several (several answers = wrong)."""
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else None


# -----------------------------------------------------------------------------
# number: GSM8K, TabMWP (free text), GSM8K-Reversal, the synthetic world

# a number: optional minus, thousands separators or plain digits, decimals, a '/q' fraction;
# not glued to a word or another number on its left ('x2', '1.2.3' do not start a number)
_NUM = re.compile(r"(?<![\w./])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?")


def _to_fraction(s):
    """'1,234.50' -> Fraction(2469, 2); None when it cannot be parsed (x/0, 5000 digits)."""
    try:
        return Fraction(s.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def _numbers(s):
    """All numbers in s as Fractions, in order. LaTeX fractions and unicode minus first."""
    s = s.replace("\u2212", "-").replace("$", " ")
    s = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", s)
    values = (_to_fraction(m.group()) for m in _NUM.finditer(s))
    return [v for v in values if v is not None]


def _number_answer(text):
    phrase = _final_phrase(text)
    if phrase is None:  # fallback: the last number of the output
        found = _numbers(text)
        return found[-1] if found else None
    phrase = phrase.rsplit("=", 1)[-1]  # 'The answer is 9 * 2 = 18': the result, not the equation
    return _single(_numbers(phrase))


def _same_number(a, b):
    # exact for 1.25 == 1.250 and 18.0 == 18 (Fractions); the absolute 1e-6 admits a decimal
    # written to 6+ places for a fraction (0.333333 ~ 1/3); the relative 1e-9 only absorbs
    # rounding on huge values, so 1000000 vs 1000001 stays wrong
    return abs(a - b) <= max(Fraction(1, 10**6), abs(b) / 10**9)


def _format_number(v):
    """Fraction -> '18', '-1.25' (a terminating decimal), else '5/11'."""
    for k in range(20):  # 1.25 = 125 / 10**2: the smallest k with 10**k divisible by q
        if 10**k % v.denominator == 0:
            digits = str(abs(v.numerator) * 10**k // v.denominator).rjust(k + 1, "0")
            return ("-" if v < 0 else "") + (digits[:-k] + "." + digits[-k:] if k else digits)
    return f"{v.numerator}/{v.denominator}"


# -----------------------------------------------------------------------------
# yesno: StrategyQA, BoolQ

_YESNO = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
_YESNO_MAP = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}


def _yesno_answer(text):
    phrase = _final_phrase(text)
    words = [_YESNO_MAP[w.lower()] for w in _YESNO.findall(text if phrase is None else phrase)]
    if phrase is None:  # fallback: the last yes/no/true/false word of the output
        return words[-1] if words else None
    return _single(words)


# -----------------------------------------------------------------------------
# choice: CSQA, ARC, ANLI, Date, TabMWP (multi-choice rows), OBQA, e-SNLI

_MARK = re.compile(r"\(([A-Z]|[1-9])\)")
_ANY_LABELS = "ABCDEFGHIJ123456789"  # when no question tells us the options


def _options(question):
    """{label: option text} from '... (A) bank (B) library.' or ARC's '(1) ... (2) ...'.
    The option list is the longest run of consecutive marks starting at (A) or (1), so a
    stray '(C)' in the question body is not an option."""
    best, run = [], []
    for m in _MARK.finditer(question or ""):
        label = m.group(1)
        if label in "A1":
            run = [m]
        elif run and ord(label) == ord(run[-1].group(1)) + 1:
            run.append(m)
        else:
            continue
        if len(run) >= 2 and len(run) >= len(best):
            best = list(run)
    options = {}
    for i, m in enumerate(best):
        end = best[i + 1].start() if i + 1 < len(best) else len(question)
        body = question[m.end():end]
        if i + 1 == len(best):  # the last option ends at its line's end
            body = body.split("\n")[0]
        options[m.group(1)] = body.strip().rstrip(".,;").strip()
    return options


def _inside(span, spans):
    """Whether (start, end, ...) lies inside a strictly longer span of spans."""
    return any(o[0] <= span[0] and span[1] <= o[1] and o[1] - o[0] > span[1] - span[0] for o in spans)


def _choice_label(phrase, options):
    """The one option label a phrase names, None for none or several.
    Tiers, first that finds any wins: '(B)', 'B)', a bare 'B', the option's text. A letter
    inside a matched option text ('A tree ...', '9:50 A.M.') is part of the text, not a label."""
    # option text ('library' for (B)): whole words, exact case first ('Rr' vs 'RR' genotypes),
    # then any case; a text inside a longer matched text ('bank' in 'bank account') does not count
    for flags in (0, re.IGNORECASE):
        texts = [(m.start(), m.end(), label) for label, body in options.items() if body
                 for m in re.finditer(r"(?<!\w)" + re.escape(body) + r"(?!\w)", phrase, flags)]
        if texts:
            break
    texts = [t for t in texts if not _inside(t, texts)]
    labels = "".join(options) or _ANY_LABELS
    for pattern in (r"\(\s*([A-Z1-9])\s*\)", r"(?<![\w(])([A-Z1-9])\)",
                    r"(?<![\w.,/(-])([A-Z1-9])(?![\w/)]|[.,]\d)"):
        found = [m.group(1) for m in re.finditer(pattern, phrase)
                 if m.group(1) in labels and not _inside(m.span(1), texts)]
        if found:
            return _single(found)
    return _single([label for _, _, label in texts])


def _choice_answer(text, question):
    options = _options(question)
    phrase = _final_phrase(text)
    if phrase is None:  # fallback: the last '(X)' option mark of the output
        found = [x for x in _MARK.findall(text) if x in ("".join(options) or _ANY_LABELS)]
        return found[-1] if found else None
    return _choice_label(phrase, options)


# -----------------------------------------------------------------------------
# math: MATH (LaTeX answers)


def _last_boxed(text):
    """Content of the last \\boxed{...} (or \\fbox{...}), nested braces included; None if none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None  # unbalanced: a truncated output


def _normalize_math(s):
    """Canonical text of a LaTeX answer, so that equal answers compare equal as strings."""
    s = s.strip().rstrip(".").replace("\\$", "").replace("$", "")
    s = re.sub(r"\\[\[\]()]", "", s)  # \( \) \[ \] math delimiters
    s = re.sub(r"\\(?:left|right)\b", "", s)
    s = re.sub(r"\\[,;:! ]", "", s)  # LaTeX spacing commands
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "").replace("%", "")
    # trailing units '5.4 \text{ cents}': only when something precedes them ('\text{(C)}' is the answer)
    s = re.sub(r"(?<=\S)\s*\\(?:text|mbox|mathrm)\{\s*[a-zA-Z ]*\}$", "", s)
    s = re.sub(r"\\(?:text|mbox|mathrm|textbf)\{([^{}]*)\}", r"\1", s)  # '\text{east}' -> 'east'
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # '\frac12' -> '\frac{1}{2}'
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)  # '\frac{270}7'
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)  # '\sqrt2' -> '\sqrt{2}'
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # 'x = 5' -> '5'
    s = s.replace(" ", "").replace("{,}", ",")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):  # '10,080' -> '10080'; tuples keep commas
        s = s.replace(",", "")
    return s


def _math_value(s):
    """The number a normalized answer denotes ('\\frac{1}{2}', '-0.5', '3/4'), else None."""
    m = re.fullmatch(r"(-?)\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}", s)
    if m:
        s = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    return _to_fraction(s) if re.fullmatch(r"-?[\d.]+(/-?[\d.]+)?", s) else None


def _math_answer(text):
    phrase = _final_phrase(text)
    if phrase is not None and re.search(r"\bor\b", phrase):  # 'The answer is 2 or 3': two answers
        return None
    boxed = _last_boxed(text if phrase is None else phrase)  # fallback: the last \boxed{} of the output
    if boxed is not None:
        return _normalize_math(boxed) or None
    if phrase is None:
        return None
    # 'The answer is $\frac{1}{2}$ cm': only the $...$ part counts
    inline = re.findall(r"\$+([^$]+)\$+", phrase.replace("\\$", ""))
    if inline:
        return _single([_normalize_math(x) for x in inline]) or None
    return _normalize_math(phrase) or None


def _same_math(a, b):
    if a == b:
        return True
    va, vb = _math_value(a), _math_value(b)  # '0.5' == '\frac{1}{2}'
    return va is not None and vb is not None and _same_number(va, vb)


# -----------------------------------------------------------------------------
# public API


def _check_type(answer_type):
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; known: {', '.join(ANSWER_TYPES)}")


def extract_answer(text: str, answer_type: str, question: str | None = None) -> str | None:
    """The normalized final answer in a model's output, or None.
    number -> '18', '-3', '5/4'; yesno -> 'yes'/'no'; choice -> option label 'B' (or '2');
    math -> normalized LaTeX ('\\frac{1}{2}')."""
    _check_type(answer_type)
    text = _strip_echo(text or "", question)
    if answer_type == "number":
        value = _number_answer(text)
        return None if value is None else _format_number(value)
    if answer_type == "yesno":
        return _yesno_answer(text)
    if answer_type == "choice":
        return _choice_answer(text, question)
    return _math_answer(text)


def is_correct(text: str, gold: str, answer_type: str, question: str | None = None) -> bool:
    """True iff the output's final answer equals the gold answer (a dataset's gold string)."""
    pred = extract_answer(text, answer_type, question)
    if pred is None:
        return False
    gold = str(gold).strip()
    if answer_type == "number":
        found = _numbers(gold)  # gold '18.0', '1,454.36', '19.4%', '5/11'
        return len(found) == 1 and _same_number(_to_fraction(pred), found[0])
    if answer_type == "yesno":
        return pred == _YESNO_MAP.get(gold.lower())
    if answer_type == "choice":
        return pred == _choice_label(gold, _options(question))
    return _same_math(pred, _normalize_math(gold))


def reward(text: str, gold: str, answer_type: str, question: str | None = None) -> float:
    """R_base: 1.0 if the final answer is correct, else 0.0."""
    return 1.0 if is_correct(text, gold, answer_type, question) else 0.0



if __name__ == "__main__":
    out, gold, kind = sys.argv[1:4]
    q = sys.argv[4] if len(sys.argv) > 4 else None
    print(f"extracted={extract_answer(out, kind, q)!r} reward={reward(out, gold, kind, q)}")
