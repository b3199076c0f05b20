"""
Answer checking: the binary outcome reward R_base of ExGRPO and the metric of every table,
as pure functions of text.

    from rewards import reward, is_correct, extract_answer, states_answer
    reward("... so 9 * 2 = 18. The answer is 18.", "18", "number")   # -> 1.0
    extract_answer("The answer is (B).", "choice", "Where? (A) bank (B) library")  # -> "B"
    states_answer("If she ends with 18 eggs, how many ...?", "18", "number")   # -> True (a leak)

    python rewards.py "model output" GOLD TYPE ["question"]   # check one output by hand
    git show 8f16c51:rewards.py > /tmp/rewards_old.py          # verdicts changed by a new checker:
    python rewards.py --compare /tmp/rewards_old.py runs/eval/smollm2-135m/predictions_*.jsonl

Ground floor: imports nothing of the project. `reward` never raises on a model output
(empty, garbage, huge numbers); only an unknown answer_type raises ValueError.

Where the final answer is (the same for every type, `_answer_texts`):
1. Echo removal: when the question is given, every verbatim copy of it (and of each of its
   sentences of 20+ characters that names no option) is cut out of the output first, so an
   output that only repeats the question earns nothing.
2. Two candidates: the LAST answer phrase ("the answer is", or a line starting "Answer:" /
   "Final answer:") and the LAST \\boxed{}. The phrase runs to the end of its line or
   sentence; when nothing follows it on its line, the display block (\\[...\\], $$...$$) or
   line after it is the answer ("The final answer is:\\n\\[ \\boxed{18} \\]"). The later
   candidate is read first; one that holds no answer of the type ("... so our answer is
   correct" after a box) passes to the other. A box inside the phrase is its answer.
3. Commitment, one rule (`_commit`): in the answer text, asides in parentheses and
   alternatives rejected with "not" / "rather than" / "instead of" ("18, not 28",
   "(D), not (E)") are dropped; what remains must name ONE answer. Two different answers
   ("18 or 20", "(B) or (C)", "yes and no") are no answer (extract_answer returns None).
4. With neither a phrase nor a box, a per-type fallback: the last number (number), the last
   sentence opening with yes/no (yesno), the last "(X)" / "**X**" mark not part of an echoed
   option list (choice), nothing (math).

How answers compare (`is_correct`):
- number: exact Fractions ("1,234", "1 234", "$1,234.00", "-5", "\u22125", "3/4"). A gold
  written with d decimals accepts what rounds to it at d decimals (gold 0.33 accepts 0.333);
  a non-terminating fraction gold (1/3) accepts a decimal of 4+ places rounded correctly.
  No blanket tolerance: 11111111101 != 11111111100, 1/1025 != 1/1024.
- yesno / choice: the committed word / option label (labels case-insensitive; the article
  "A" in "A library" is no label).
- math: normalized strings (fast path), then exact numbers, then Hugging Face `math-verify`
  (\\pi/2 == \\frac12\\pi, 2\\sqrt2 == \\sqrt8, 10^{-3} == 0.001) on the answer WE extracted.
"""
import re
import sys
import threading
from fractions import Fraction
from functools import lru_cache

ANSWER_TYPES = ("number", "yesno", "choice", "math")

MV_TIMEOUT = 5  # seconds per math-verify parse/compare (signal-based: main thread only)
DECIMALS_FOR_FRACTION = 4  # a decimal of this many places may stand for 1/3, 5/11, ...

# -----------------------------------------------------------------------------
# shared: echo removal, the answer phrase, the last box, the commitment rule

# 'the answer is' anywhere; 'Answer:' / '**Final Answer:**' only at a line start, since
# prose like 'we get our answer: \[ ... \]' is not a final answer
_FINAL = re.compile(r"\banswer\s+is\b|^[ \t]*[*#]*[ \t]*(?:final\s+)?answer[ \t*]*:",
                    re.IGNORECASE | re.MULTILINE)
# a period after a title or an abbreviation ('Mr. Green', 'approx. 18') ends no sentence
_ABBREV = "".join(rf"(?<!\b{a})"
                  for a in ("Mr", "Mrs", "Ms", "Dr", "Mt", "St", "approx", "vs", "i\\.e", "e\\.g"))
_SENTENCE_END = re.compile(r"\n|" + _ABBREV + r"\.(?:\s|$)")
_DISPLAY = re.compile(r"(\$\$|\\\[)(.*?)(?:\$\$|\\\])", re.DOTALL)  # \[ ... \] or $$ ... $$
_MARK = re.compile(r"\(([A-Za-z]|[1-9])\)")
_ECHO_MIN = 20  # shorter question sentences ("(A) yes") are too common to cut out
# what a sentence says to reject an alternative: '18, not 28', '(D) rather than (E)'
_NEGATION = r"(?:\bnot|\brather\s+than|\binstead\s+of|\bisn't|\bis\s+not)\s+(?:the\s+|option\s+|answer\s+)?"


def _strip_echo(text, question):
    """Cut verbatim copies of the question, and of its longer sentences, out of the output.
    A sentence naming an option ('(B) four hours and fifteen minutes') is kept: repeating
    one option is how many models answer, and a copied option list names several (= none)."""
    for piece in _echo_pieces(question) if question else ():
        text = text.replace(piece, " ")
    return text


@lru_cache(maxsize=1024)
def _echo_pieces(question):
    pieces = [question.strip()] + [p for p in re.split(r"(?<=[.?!])\s+|\n", question) if not _MARK.search(p)]
    return sorted({p.strip() for p in pieces if len(p.strip()) >= _ECHO_MIN}, key=len, reverse=True)


def _final_phrase(text):
    """(start, end, phrase) of the last answer phrase, or None when there is none."""
    last = None
    for last in _FINAL.finditer(text):
        pass
    if last is None:
        return None
    i = last.end() + re.match(r"[ \t:*]*", text[last.end():]).end()
    if i == len(text) or text[i] == "\n":  # 'The final answer is:' then the answer below
        i += re.match(r"\s*", text[i:]).end()
    block = _DISPLAY.match(text, i)
    if block:  # display math: the whole block, over several lines
        return last.start(), block.end(), block.group(2).replace("\n", " ").strip()
    m = _SENTENCE_END.search(text, i)
    end = m.start() if m else len(text)
    return last.start(), end, text[i:end].replace("*", "").strip()


def _boxes(text):
    """[(start, end, content)] of every outermost \\boxed{...} / \\fbox{...}, nested braces
    included; an unbalanced one (a truncated output) is skipped. One pass over the braces."""
    opens = {m.end() - 1: m.start() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)}
    if not opens:
        return []
    found, stack = [], []
    for m in re.finditer(r"[{}]", text):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            i = stack.pop()
            if i in opens:
                found.append((opens[i], m.end(), text[i + 1:m.start()]))
    out = []
    for box in sorted(found):  # nested boxes start inside the previous outer one
        if not out or box[0] >= out[-1][1]:
            out.append(box)
    return out


def _last_boxed(text):
    """Content of the last \\boxed{...} (or \\fbox{...}); None if none."""
    boxes = _boxes(text)
    return boxes[-1][2] if boxes else None


def _answer_texts(text):
    """The texts that may hold the final answer, the first to read first (see the module
    docstring, step 2); [] when there is neither an answer phrase nor a box."""
    phrase, boxes = _final_phrase(text), _boxes(text)
    if phrase is None:
        return [boxes[-1][2]] if boxes else []
    start, end, said = phrase
    inside = [b[2] for b in boxes if start <= b[0] and b[1] <= end + 1]
    if inside:  # 'The answer is $\boxed{18}$ dollars': the box is the answer
        return inside if len(inside) == 1 else [" or ".join(inside)]
    later = [b for b in boxes if b[0] >= end]
    if later:
        return [later[-1][2], said]
    return [said] + ([boxes[-1][2]] if boxes else [])


def _commit(values):
    """THE commitment rule: the one distinct answer of an answer text (asides and negated
    alternatives already dropped), None for zero or several (two answers = no answer)."""
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    return distinct[0] if len(distinct) == 1 else None


def _drop_asides(phrase):
    """'18 (since 2 x 9 = 18)' -> '18': a parenthesized aside after the answer says no answer."""
    return re.sub(r"(?<=\S)\s*\([^()]*\)", " ", phrase)


def _unwrap(s):
    """'\\text{(B)}' -> '(B)', '$\\boxed{yes}$' -> 'yes': LaTeX around a word answer."""
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox|boxed)\s*\{([^{}]*)\}", r"\1", s)
    return s.replace("$", " ").replace("\\(", " ").replace("\\)", " ")


def _read(text, parse, fallback):
    """The answer of text: the first answer text that holds one (parse -> value, or
    _NONE when it names no answer of the type), else the fallback when there is none."""
    texts = _answer_texts(text)
    if not texts:
        return fallback(text)
    for t in texts:
        value = parse(t)
        if value is not _NONE:
            return value
    return None


_NONE = object()  # 'this text names no answer of the type' (distinct from 'two answers')

# -----------------------------------------------------------------------------
# number: GSM8K, TabMWP (free text), GSM8K-Reversal, the synthetic world

# a number: optional minus, thousands separators (',' or a space) or plain digits, decimals,
# a '/q' fraction; not glued to a word or another number on its left ('x2', '1.2.3')
_NUM = re.compile(r"(?<![\w./])-?(?:\d{1,3}(?:,\d{3})+(?!\d)"
                  r"|\d{1,3}(?:[ \u00a0\u202f\u2009]\d{3})+(?![\d.,])|\d+|(?=\.\d))"
                  r"(?:\.\d+)?(?:/\d+(?:\.\d+)?)?")


def _to_fraction(s):
    """'1,234.50' -> Fraction(2469, 2); None when it cannot be parsed (x/0, 5000 digits)."""
    try:
        return Fraction(re.sub(r"[, \u00a0\u202f\u2009]", "", s))
    except (ValueError, ZeroDivisionError):
        return None


def _number_tokens(s):
    """[(matched text, Fraction)] of the numbers in s, in order. LaTeX fractions, unicode minus."""
    s = s.replace("\u2212", "-").replace("$", " ").replace("\\!", "").replace("{,}", ",")
    s = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"\1/\2", s)
    out = [(m.group(), _to_fraction(m.group())) for m in _NUM.finditer(s)]
    return [(t, v) for t, v in out if v is not None]


def _numbers(s):
    return [v for _, v in _number_tokens(s)]


def _number_phrase(phrase):
    """The committed number of an answer text; _NONE when it has no number."""
    phrase = _drop_asides(re.sub(r"\\[()]", " ", phrase.replace("\u2212", "-")))  # '\(18\)'
    phrase = re.sub(r"(?<=[a-zA-Z])\^\{?\d+\}?|[²³]", "", phrase)  # 'm^2', 'cm²': units, not numbers
    phrase = re.sub(_NEGATION + r"-?\$?\d[\d,.]*", " ", phrase, flags=re.IGNORECASE)  # '18, not 28'
    phrase = phrase.rsplit("=", 1)[-1]  # 'The answer is 9 * 2 = 18': the result, not the equation
    found = _numbers(phrase)
    return _commit(found) if found else _NONE


def _number_fallback(text):
    found = _numbers(text)  # the last number of the output
    return found[-1] if found else None


def _decimals(token):
    """Places after the point of a written number: '1.250' -> 3, '18' -> 0, '3/4' -> None."""
    if "/" in token:
        return None
    return len(token.split(".", 1)[1]) if "." in token else 0


def _round_to(v, places):
    """v rounded half away from zero at `places` decimals, exactly (Fractions)."""
    scaled = abs(v) * 10**places
    n = int(scaled) + (1 if scaled - int(scaled) >= Fraction(1, 2) else 0)
    return Fraction(n if v >= 0 else -n, 10**places)


def _same_number(pred, gold, pred_token="", gold_token=""):
    """pred equals gold exactly, or at the gold's own precision (module docstring)."""
    if pred == gold:
        return True
    places = _decimals(gold_token)
    if places:  # gold '0.33': what rounds to 0.33 (0.333, 0.3333) is the same answer
        return _round_to(pred, places) == gold
    p = _decimals(pred_token)  # gold 1/3 (a fraction), pred '0.3333'
    if gold_token and places is None and p and p >= DECIMALS_FOR_FRACTION:
        return _round_to(gold, p) == pred
    return False


def _format_number(v):
    """Fraction -> '18', '-1.25' (a terminating decimal), else '5/11'."""
    for k in range(20):  # 1.25 = 125 / 10**2: the smallest k with 10**k divisible by q
        if 10**k % v.denominator == 0:
            digits = str(abs(v.numerator) * 10**k // v.denominator).rjust(k + 1, "0")
            return ("-" if v < 0 else "") + (digits[:-k] + "." + digits[-k:] if k else digits)
    return f"{v.numerator}/{v.denominator}"


def _number_token(text):
    """The written form of the committed number (its precision matters), or None."""
    value = _read(text, _number_phrase, _number_fallback)
    if value is None:
        return None, None
    # the token as written: the last one in the text with that value ('18.50' keeps its places)
    tokens = [t for t, v in _number_tokens(text) if v == value]
    return (tokens[-1] if tokens else _format_number(value)), value

# -----------------------------------------------------------------------------
# yesno: StrategyQA, BoolQ

_YESNO = re.compile(r"\b(?:(not\s+)?(true|false)|(yes|no))\b(?!\s*[-'])", re.IGNORECASE)
_YESNO_MAP = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}


def _yesno_words(s):
    """[(start, end, 'yes'/'no')]: 'not true' is no, 'not false' yes."""
    out = []
    for m in _YESNO.finditer(_unwrap(s)):
        word = _YESNO_MAP[(m.group(2) or m.group(3)).lower()]
        if m.group(1):
            word = "no" if word == "yes" else "yes"
        out.append((m.start(), m.end(), word))
    return out


def _yesno_phrase(phrase):
    """The committed yes/no of an answer text: its first yes/no word ('No, it is not true
    that ...' -> no), unless joined to the other one ('yes and no', 'yes/no' -> None)."""
    words = _yesno_words(phrase)
    if not words:
        return _NONE
    first = words[0]
    s = _unwrap(phrase)
    for w in words[1:]:
        if w[2] != first[2] and re.fullmatch(r"[\s,]*(?:and|or|/|nor|but)?[\s,]*(?:also\s+)?",
                                             s[first[1]:w[0]], re.I):
            return None
    return first[2]


def _yesno_fallback(text):
    """The last sentence that opens with yes/no ('No. It is not true that X.' -> no)."""
    starts = [m.end() for m in re.finditer(r"(?:^|[.!?:\n])[\s*#>\"'_]*", text)]
    committed = None
    for i in starts:
        words = _yesno_words(text[i:i + 12])
        if words and words[0][0] == 0:
            end = _SENTENCE_END.search(text, i)
            committed = _yesno_phrase(text[i:end.start() if end else len(text)])
    return None if committed is _NONE else committed

# -----------------------------------------------------------------------------
# choice: CSQA, ARC, ANLI, Date, TabMWP (multi-choice rows), OBQA, e-SNLI

_ANY_LABELS = "ABCDEFGHIJ123456789"  # when no question tells us the options
# after a bare 'A', these words keep it a label ('A because ...'); other words make it an article
_LABEL_FOLLOWERS = r"(?:because|since|as|is|was|which|for|and|or|but|so|with|from|in|on|\(|-|:|,)"


@lru_cache(maxsize=1024)  # a group of rollouts shares its question
def _options(question):
    """{label: option text} from '... (A) bank (B) library.' or ARC's '(1) ... (2) ...'.
    The option list is the longest run of consecutive marks starting at (A) or (1), so a
    stray '(C)' in the question body is not an option."""
    best, run = [], []
    for m in re.finditer(r"\(([A-Z]|[1-9])\)", question or ""):
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


def _option_texts(phrase, options):
    """[(start, end, label)] of option texts named in phrase ('library' for (B)): whole
    words, exact case first ('Rr' vs 'RR'), then any case; not inside a longer match."""
    for pattern in _option_patterns(tuple(options.items())):
        if pattern.search(phrase):  # one quick test before the scan option by option
            texts = [(s, e, label) for label, body in options.items() if body
                     for s, e in _all_matches(body, phrase, pattern.flags & re.IGNORECASE)]
            return [t for t in texts if not _inside(t, texts)]
    return []


@lru_cache(maxsize=1024)
def _option_patterns(items):
    """One alternation of all option texts, exact case then any case: a quick first test."""
    alts = "|".join(re.escape(body) for _, body in items if body)
    return [re.compile(rf"(?<!\w)(?:{alts})(?!\w)", f) for f in (0, re.IGNORECASE)] if alts else []


def _all_matches(body, phrase, flags):
    """Spans of every whole-word occurrence of body (overlapping options are all found)."""
    return [m.span() for m in re.finditer(r"(?<!\w)" + re.escape(body) + r"(?!\w)", phrase, flags)]


def _choice_label(phrase, options):
    """The one option label a phrase commits to; None for several, _NONE for none.
    Tiers, the first that finds any wins: '(B)', 'B)', a bare 'B', the option's text. A
    letter inside a named option text ('A tree ...', '9:50 A.M.') is no label; a label
    after 'not' / 'rather than' is a rejected alternative."""
    phrase = _unwrap(phrase).replace("*", " ")
    texts = _option_texts(phrase, options)
    labels = "".join(options) or _ANY_LABELS
    negated = [m.end() for m in re.finditer(_NEGATION + r"\(?", phrase, re.IGNORECASE)]
    bare_a = rf"(?!\s+(?!{_LABEL_FOLLOWERS}\b)[a-z])"  # 'A library' is an article
    for pattern in (r"\(\s*([A-Za-z1-9])\s*\)", r"(?<![\w(])([A-Za-z1-9])\)",
                    r"(?<![\w.,/(\-'])([A-Z1-9])(?![\w/)'\-]|[.,]\w)" + bare_a,
                    r"(?<![\w.,/(\-'])([b-hB-H])(?![\w/)'\-]|[.,]\w)"):
        found = [m for m in re.finditer(pattern, phrase) if m.group(1).upper() in labels
                 and not _inside(m.span(1), texts)]
        if found:
            kept = [m.group(1).upper() for m in found
                    if m.start() not in negated and m.start(1) not in negated]
            return _commit(kept) if kept else _NONE
    kept = [label for s, _, label in texts if s not in negated]
    return _commit(kept) if kept else _NONE


def _listed(marks):
    """Indices of marks that belong to a copied option list: runs of 2+ consecutive labels."""
    out, run = set(), [0] if marks else []
    for i in range(1, len(marks) + 1):
        if i < len(marks) and ord(marks[i][1]) == ord(marks[run[-1]][1]) + 1:
            run.append(i)
            continue
        if len(run) >= 2:
            out.update(run)
        run = [i]
    return out


def _choice_fallback(text, options):
    """The last '(X)' or bold '**X**' mark of the output that is not part of a listing."""
    labels = "".join(options) or _ANY_LABELS
    text = re.sub(_NEGATION + r"\(?[A-Za-z1-9]\)?", " ", text, flags=re.IGNORECASE)  # '(D), not (E)'
    marks = [(m.start(), next(g for g in m.groups() if g).upper()) for m in  # '(B)', '**B**', 'B) text'
             re.finditer(r"\(([A-Za-z1-9])\)|\*\*\(?([A-Za-z1-9])[).:]?\*\*|^[ \t]*([A-Z])\)", text, re.M)]
    marks = [m for m in marks if m[1] in labels]
    listed = _listed(marks)
    kept = [m[1] for i, m in enumerate(marks) if i not in listed]
    return kept[-1] if kept else None


def _choice_answer(text, question):
    options = _options(question)
    return _read(text, lambda t: _choice_label(t, options), lambda t: _choice_fallback(t, options))

# -----------------------------------------------------------------------------
# math: MATH (LaTeX answers)

_UNITS = r"\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z ]*\}(?:\^\{?\d\}?)?$"  # '5\text{ cm}^2'


def _clean_math(s):
    """Canonical text of a LaTeX answer, so that plainly equal answers compare equal."""
    s = s.strip().replace("\u2212", "-").replace("\\$", "").replace("$", "").replace("\u00b0", "")
    boxes = _boxes(s.strip())
    while len(boxes) == 1 and boxes[0][0] == 0 and boxes[0][1] == len(s.strip()):  # '\boxed{\boxed{4}}'
        s = boxes[0][2]
        boxes = _boxes(s.strip())
    s = re.sub(r"\\[\[\]()]", "", s)  # \( \) \[ \] math delimiters
    s = re.sub(r"\\(?:left|right|displaystyle|textstyle)\b|\\!", "", s)
    s = re.sub(r"(?<!\\)\\[,;: ]", " ", s)  # spacing commands; never the 2nd '\' of a '\\' row break
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(" .")
    s = re.sub(r"\^\s*\{?\\circ\}?|\\degree|\\%|%", "", s)  # degrees, percent
    s = re.sub(r"(?<=\S)" + _UNITS, "", s)  # trailing units; '\text{(C)}' alone is the answer
    s = re.sub(r"\\(?:text|mbox|mathrm|textbf)\s*\{([^{}]*)\}", r"\1", s)  # '\text{east}' -> 'east'
    s = re.sub(r"^\(([A-Za-z])\)$", r"\1", s.strip())  # '(C)' -> 'C'
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)  # '\frac12', '\frac 59'
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", s)  # '\frac{270}7'
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\sqrt\s*(\w)", r"\\sqrt{\1}", s)  # '\sqrt2' -> '\sqrt{2}'
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s).replace("{,}", ",")  # 'x = 5' -> '5'
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s.replace(" ", "")):  # '10,080'; tuples keep commas
        s = s.replace(",", "")
    return s.strip()


def _normalize_math(s):
    return re.sub(r"\s+", "", _clean_math(s))


def _math_value(s):
    """(written number, Fraction) of a plain-number answer ('\\frac{1}{2}', '-0.5'), else None."""
    s = re.sub(r"\s+", "", s)
    m = re.fullmatch(r"(-?)\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}", s)
    if m:
        s = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    if not re.fullmatch(r"-?(\d+|\d*\.\d+)(/-?[\d.]+)?", s):
        return None
    v = _to_fraction(s)
    return None if v is None else (s, v)


def _math_phrase(phrase, prose_ok=True):
    """The answer of a math answer text (cleaned LaTeX), None for two answers, _NONE for none.
    prose_ok=False: words alone ('our answer is correct') are no answer (a box is there)."""
    phrase = re.split(r",?\s*(?:or\s+equivalently|i\.e\.|that\s+is,|which\s+is\s+(?:about|approx))",
                      phrase)[0]
    inline = re.findall(r"\$+([^$]+)\$+|\\\((.+?)\\\)", phrase.replace("\\$", "\\dollar"))
    if inline:
        parts = [_clean_math((a or b).replace("\\dollar", "")) for a, b in inline]
    elif re.search(r"\bor\b", phrase):  # 'The answer is 2 or 3': two answers
        return None
    elif not prose_ok and re.fullmatch(r"[A-Za-z ,'!]*", phrase):
        return _NONE
    else:  # bare text: drop trailing words ('18 square units')
        parts = [_clean_math(re.sub(r"(?<=[\d}])\s+(?:[a-zA-Z]{2,}\s*)+$", "", phrase))]
    parts = [p for p in parts if p]
    if not parts:
        return _NONE
    same = _commit([re.sub(r"\s+", "", p) for p in parts])  # '$x=2$ and $y=3$': two answers
    return None if same is None else parts[0]


def _math_answer(text):
    boxed = len(_answer_texts(text)) > 1  # a box beside the phrase: prose in the phrase is no answer
    return _read(text, lambda t: _math_phrase(t, prose_ok=not boxed), lambda t: None)


@lru_cache(maxsize=4096)
def _mv_parse(latex, timeout):
    """math-verify's SymPy reading of one LaTeX answer (cached: golds repeat); [] if none."""
    from math_verify import LatexExtractionConfig, parse
    return parse(f"${latex}$", extraction_config=[LatexExtractionConfig()],
                 fallback_mode="no_fallback", parsing_timeout=timeout)


def _mv_equal(pred, gold):
    """Equivalence by math-verify; False when it is missing, cannot parse, or times out."""
    try:
        import logging
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        from math_verify import verify
    except ImportError:
        return False
    # its timeouts use signal.alarm, which only the main thread may set
    timeout = MV_TIMEOUT if threading.current_thread() is threading.main_thread() else None
    try:
        g, p = _mv_parse(gold, timeout), _mv_parse(pred, timeout)
        return bool(g and p and verify(g, p, timeout_seconds=timeout))
    except Exception:  # a SymPy corner case must not stop training
        return False


def _same_math(pred, gold):
    """pred, gold: cleaned LaTeX. Fast path, exact numbers, then math-verify."""
    if re.sub(r"\s+", "", pred) == re.sub(r"\s+", "", gold):
        return True
    vp, vg = _math_value(pred), _math_value(gold)
    if vp and vg:  # plain numbers: the number rule, never a float tolerance
        return _same_number(vp[1], vg[1], vp[0], vg[0])
    if re.fullmatch(r"[A-Za-z]", pred.strip()) or re.fullmatch(r"[A-Za-z]", gold.strip()):
        return pred.strip().upper() == gold.strip().upper()  # an option letter: 'C' == '(C)'
    return _mv_equal(pred, gold)

# -----------------------------------------------------------------------------
# public API


def _check_type(answer_type):
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; known: {', '.join(ANSWER_TYPES)}")


def _extract(text, answer_type, question):
    """The committed answer in its comparable form: (token, Fraction) / 'yes' / 'B' / LaTeX."""
    text = _strip_echo(text or "", question)
    if answer_type == "number":
        return _number_token(text)
    if answer_type == "yesno":
        return _read(text, _yesno_phrase, _yesno_fallback)
    if answer_type == "choice":
        return _choice_answer(text, question)
    return _math_answer(text)


def extract_answer(text: str, answer_type: str, question: str | None = None) -> str | None:
    """The normalized final answer in a model's output, or None.
    number -> '18', '-3', '5/4'; yesno -> 'yes'/'no'; choice -> option label 'B' (or '2');
    math -> normalized LaTeX ('\\frac{1}{2}')."""
    _check_type(answer_type)
    pred = _extract(text, answer_type, question)
    if answer_type == "number":
        return None if pred[1] is None else _format_number(pred[1])
    if answer_type == "math":
        return (re.sub(r"\s+", "", pred) or None) if pred else None
    return pred


def _gold_matches(pred, gold, answer_type, question):
    """Whether an extracted answer (_extract's form) equals the gold string."""
    gold = str(gold).strip()
    if answer_type == "number":
        found = _number_tokens(gold)  # gold '18.0', '1,454.36', '19.4%', '5/11'
        return len(found) == 1 and _same_number(pred[1], found[0][1], pred[0], found[0][0])
    if answer_type == "yesno":
        return pred == _YESNO_MAP.get(gold.lower())
    if answer_type == "choice":
        return pred == _choice_label(gold, _options(question))
    return _same_math(pred, _clean_math(gold))


def is_correct(text: str, gold: str, answer_type: str, question: str | None = None) -> bool:
    """True iff the output's final answer equals the gold answer (a dataset's gold string)."""
    _check_type(answer_type)
    pred = _extract(text, answer_type, question)
    if pred is None or pred == (None, None) or pred is _NONE:
        return False
    return _gold_matches(pred, gold, answer_type, question)


def reward(text: str, gold: str, answer_type: str, question: str | None = None) -> float:
    """R_base: 1.0 if the final answer is correct, else 0.0."""
    return 1.0 if is_correct(text, gold, answer_type, question) else 0.0


def states_answer(text: str, gold: str, answer_type: str, question: str | None = None) -> bool:
    """Whether a text (a probe, a hint) contains the gold answer anywhere, not only as its
    final answer: the leak check for probes that must not reveal the original answer.
    number: any number in it equals the gold ('she ends with 18 eggs' states 18);
    math: any $...$ / \\(...\\) / \\boxed{} part equals the gold, or the bare gold stands in it as a
      token of its own ('x = 2.' states 2; 'x^2', '12', '2.5' and '1,000' do not);
    choice: an option mark of the gold label ('(B)', 'B)', 'option B', 'B is correct'), an answer
      phrase naming it, or, given the question, the gold option's own words ('library');
    yesno: an answer phrase or a sentence committing to the gold ('The answer is yes', 'Yes.').
    A yes/no gold is a single word of every question, so only a committed one counts; a quoted
    step that implies it ('So penguins cannot fly.') is not caught. Over-flagging is cheap (the
    probe is kept for SFT only), a missed leak is not (the DSU then rewards copying)."""
    _check_type(answer_type)
    text, gold = text or "", str(gold).strip()
    if answer_type == "number":
        return any(_gold_matches((t, v), gold, "number", None) for t, v in _number_tokens(text))
    if answer_type == "math":
        parts = ([b[2] for b in _boxes(text)]
                 + [a or b for a, b in re.findall(r"\$+([^$]+)\$+|\\\((.+?)\\\)", text)])
        g = _normalize_math(gold)
        # the bare gold as a token: not inside a longer number or word, not a base or exponent
        spaced = r"\s*".join(map(re.escape, g))   # '\frac{1}{2}' also as '\frac{1} {2}'
        bare = bool(g) and re.search(rf"(?<![\w^])(?<!\d[.,]){spaced}(?![\w^]|[.,]\d)", text)
        return bool(bare) or any(_same_math(_clean_math(p), _clean_math(gold)) for p in parts if p.strip())
    if answer_type == "choice":
        label = gold.strip("() ").upper()
        L = re.escape(label)
        marks = (rf"\(\s*{L}\s*\)",                                          # (B)
                 rf"(?<![\w(]){L}\)",                                           # B)
                 rf"\b(?i:option|choice|answer|letter)\s+{L}\b",               # option B
                 rf"(?<![\w(]){L}\s+(?i:is\s+(?:the\s+)?(?:correct|right|best))\b")   # B is correct
        words = _options(question).get(label, "")   # the gold option's own words, given the question
        return (any(re.search(m, text) for m in marks)
                or bool(words and re.search(rf"(?<!\w){re.escape(words)}(?!\w)", text, re.IGNORECASE))
                or is_correct(text, gold, "choice", question))
    return is_correct(text, gold, "yesno")


def compare(old_module_path, prediction_files):
    """Rescore evaluate.py's saved predictions with another version of this file and with
    this one: {file: (questions, correct before, correct now, verdicts changed)}."""
    import importlib.util
    import json
    spec = importlib.util.spec_from_file_location("rewards_old", old_module_path)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    out = {}
    for path in prediction_files:
        rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        verdicts = [(old.is_correct(r["generated"], r["gold"], r["answer_type"], r["question"]),
                     is_correct(r["generated"], r["gold"], r["answer_type"], r["question"])) for r in rows]
        out[path] = (len(rows), sum(a for a, _ in verdicts), sum(b for _, b in verdicts),
                     sum(a != b for a, b in verdicts))
        print(f"{path}: {out[path][0]} questions, correct {out[path][1]} -> {out[path][2]}, "
              f"{out[path][3]} verdicts changed", flush=True)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:  # python rewards.py --compare OLD_rewards.py predictions_*.jsonl
        compare(sys.argv[2], sys.argv[3:])
        sys.exit()
    out, gold, kind = sys.argv[1:4]
    q = sys.argv[4] if len(sys.argv) > 4 else None
    print(f"extracted={extract_answer(out, kind, q)!r} reward={reward(out, gold, kind, q)}")
