"""
Mutation testing, a small harness of our own (stdlib + pytest, no new dependency): single-line bugs put
into the code one at a time, each run against the tests that should catch it. A mutant the tests let
through (a "survivor") is a bug nothing would tell you about: write the test that kills it, or say
why it changes nothing (bench/results/mutation-equivalent.json). Run it before a change to the
algorithm, and after: the kill rate must not drop.

    # the files of issue #33, 45 mutants each, with the tests of a commit (before new tests):
    # how bench/results/mutation-2026-12-07.md began (80 min on 2 busy cores)
    nice -n 19 python bench/mutate.py --max 45 --seed 0 --tests-from HEAD --out bench/results/mutation-DATE.md
    # after writing tests: only that report's survivors, again, against the files of the new tests
    # (its JSON keeps both results; the report shows the kill rate before and after)
    nice -n 19 python bench/mutate.py --retest bench/results/mutation-DATE.json --tests tests/test_wiring.py
    # one file, or some functions of one file; --list shows the mutants and runs nothing
    python bench/mutate.py --files exgrpo.py --max 20
    python bench/mutate.py --files "sample.py:token_logprobs,completion_mask" --list

What it does: parse each target with `ast`, list every single-line mutation of the chosen functions
(below), sample --max of them per file with --seed, copy the working tree to a temporary folder
(tar, without .git, .cache, runs; ../shared is linked beside it), and for each mutant write the
mutated line into the COPY, run `pytest -x` on the file's tests with a time limit, and restore it.
The working tree is never written. Killed = a test failed, errored or ran past --timeout.

Mutations (each on one line): comparison flipped (< <= > >= == != is in), arithmetic swapped
(+ - * / // ** & |, and += -= ...), `and` <-> `or`, `not` / unary minus dropped, an integer
constant +-1, a float negated, True <-> False, `return X` -> `return None`, min <-> max (calls,
methods, keywords, torch.minimum/maximum), a call statement replaced by `pass`, an if/while
condition negated. Not mutated: docstrings, f-strings, print() and tqdm calls (messages), type
annotations, `if __name__ == "__main__":` blocks.

Which tests: --tests, else TESTS below (the files whose tests exercise the target, chosen so that a
mutant costs seconds, not the suite's minutes), else every tests/test_*.py that imports the target.
"""

import argparse
import ast
import concurrent.futures
import datetime
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "bench" / "results" / "mutation-equivalent.json"
# the files of issue #33 and the functions of them that are the method (sample.py: only its scoring)
TARGETS = ["exgrpo.py", "sample.py:completion_mask,pack,token_logprobs,scored_hidden,_shared_prefix_hidden,joint_logprobs",
           "rewards.py", "runs.py", "optim.py", "teachers.py:cache_key,cache_dir,cache_file,TeacherCache"]
TESTS = {
    "exgrpo.py": ["tests/test_exgrpo.py", "tests/test_wiring.py"],
    "sample.py": ["tests/test_sample.py", "tests/test_wiring.py"],
    "rewards.py": ["tests/test_rewards.py"],
    "runs.py": ["tests/test_runs.py", "tests/test_wiring.py"],
    "optim.py": ["tests/test_memory_savings.py", "tests/test_wiring.py"],
    "teachers.py": ["tests/test_teachers.py", "tests/test_env.py"],
}
EXCLUDE = (".git", ".cache", "runs", "__pycache__", ".pytest_cache", ".ruff_cache", ".benchmarks")
QUIET_CALLS = {"print", "write", "set_postfix", "warn", "tqdm"}   # messages, not behaviour

# -----------------------------------------------------------------------------
# the mutations

COMPARE = {ast.Lt: ("<", ["<=", ">"]), ast.LtE: ("<=", ["<", ">"]), ast.Gt: (">", [">=", "<"]),
           ast.GtE: (">=", [">", "<"]), ast.Eq: ("==", ["!="]), ast.NotEq: ("!=", ["=="]),
           ast.Is: ("is", ["is not"]), ast.IsNot: ("is not", ["is"]), ast.In: ("in", ["not in"]),
           ast.NotIn: ("not in", ["in"])}
BINARY = {ast.Add: ("+", ["-"]), ast.Sub: ("-", ["+"]), ast.Mult: ("*", ["/"]), ast.Div: ("/", ["*"]),
          ast.FloorDiv: ("//", ["/"]), ast.Pow: ("**", ["*"]), ast.BitAnd: ("&", ["|"]),
          ast.BitOr: ("|", ["&"]), ast.LShift: ("<<", [">>"]), ast.RShift: (">>", ["<<"])}
SWAP = {"min": "max", "max": "min", "minimum": "maximum", "maximum": "minimum", "amin": "amax", "amax": "amin"}


@dataclass
class Mutant:
    file: str
    line: int
    op: str
    before: str          # the line as it is
    after: str           # the line mutated
    outcome: str = ""    # killed | timeout | survived | equivalent | error
    by: str = ""         # the test that killed it, or why it is equivalent
    seconds: float = 0.0
    history: list = field(default_factory=list)   # earlier outcomes (--retest)

    @property
    def key(self):
        return (self.file, self.before.strip(), self.after.strip())


def _spans(tree, names):
    """Line ranges of the functions / classes named (any depth; "Class.method" too); None: all."""
    if not names:
        return None
    found = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                q = prefix + child.name
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                for n in (q, child.name):
                    if n in names:
                        found.setdefault(n, []).append((start, child.end_lineno))
                visit(child, q + ".")
    visit(tree, "")
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"error: no function or class {', '.join(missing)}")
    return [s for n in names for s in found[n]]


def _skipped_lines_and_nodes(tree):
    """Nodes not to mutate (docstrings, f-strings, messages, annotations) and __main__ lines."""
    skip, lines = set(), set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            skip.add(id(body[0]))
        if isinstance(node, ast.JoinedStr):
            skip.add(id(node))
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in QUIET_CALLS:
                skip.add(id(node))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
                if a is not None and a.annotation is not None:
                    skip.add(id(a.annotation))
            if node.returns is not None:
                skip.add(id(node.returns))
        if isinstance(node, ast.AnnAssign):
            skip.add(id(node.annotation))
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) \
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__":
            lines.update(range(node.lineno, node.end_lineno + 1))
    # everything under a skipped node is skipped
    inside = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            inside.update(id(n) for n in ast.walk(node))
    return inside, lines


class _Lines:
    """The source as lines of bytes (ast's col_offset counts UTF-8 bytes)."""

    def __init__(self, source):
        self.lines = source.splitlines(keepends=True)
        self.raw = [x.encode("utf-8") for x in self.lines]

    def replace(self, lineno, start, end, text):
        """(line before, line after) with bytes [start, end) of the line replaced by text."""
        b = self.raw[lineno - 1]
        return self.lines[lineno - 1], (b[:start] + text.encode("utf-8") + b[end:]).decode("utf-8")

    def between(self, a, b, token):
        """(line, start, end) of `token` between node a's end and node b's start, one line."""
        if a.end_lineno != b.lineno:
            return None
        seg = self.raw[b.lineno - 1][a.end_col_offset:b.col_offset].decode("utf-8")
        core = seg.strip(" \t()[]")
        if re.sub(r"\s+", " ", core) != token:
            return None
        start = a.end_col_offset + len(seg[:seg.index(core)].encode("utf-8"))
        return b.lineno, start, start + len(core.encode("utf-8"))


def mutants_of(path, names=None, rel=None):
    """Every single-line mutant of the file at `path` (restricted to the functions `names`)."""
    source = Path(path).read_text(encoding="utf-8")
    tree = ast.parse(source)
    src = _Lines(source)
    spans = _spans(tree, names)
    skip, main_lines = _skipped_lines_and_nodes(tree)
    rel = rel or str(path)
    out = []

    def add(lineno, start, end, text, op):
        if lineno in main_lines or (spans is not None and not any(a <= lineno <= b for a, b in spans)):
            return
        before, after = src.replace(lineno, start, end, text)
        if before != after:
            out.append(Mutant(rel, lineno, op, before.rstrip("\n"), after.rstrip("\n")))

    one_line = lambda n: n.lineno == n.end_lineno
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                token, repl = COMPARE[type(op)]
                at = src.between(left, right, token)
                for r in (repl if at else []):
                    add(*at, r, f"{token} -> {r}")
                left = right
        elif isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            if all(isinstance(x, (ast.Constant, ast.JoinedStr)) and not isinstance(getattr(x, "value", 0), (int, float))
                   for x in (node.left, node.right)):
                continue   # joining strings
            token, repl = BINARY[type(node.op)]
            at = src.between(node.left, node.right, token)
            for r in (repl if at else []):
                add(*at, r, f"{token} -> {r}")
        elif isinstance(node, ast.AugAssign) and type(node.op) in BINARY:
            token, repl = BINARY[type(node.op)]
            at = src.between(node.target, node.value, token + "=")
            for r in (repl if at else []):
                add(*at, r + "=", f"{token}= -> {r}=")
        elif isinstance(node, ast.BoolOp):
            token = "and" if isinstance(node.op, ast.And) else "or"
            for a, b in zip(node.values, node.values[1:]):
                at = src.between(a, b, token)
                if at:
                    add(*at, "or" if token == "and" else "and", f"{token} -> {'or' if token == 'and' else 'and'}")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
            if node.lineno == node.operand.lineno:
                name = {ast.Not: "not", ast.USub: "-", ast.Invert: "~"}[type(node.op)]
                add(node.lineno, node.col_offset, node.operand.col_offset, "", f"drop {name}")
        elif isinstance(node, ast.Constant) and one_line(node):
            v = node.value
            if isinstance(v, bool):
                add(node.lineno, node.col_offset, node.end_col_offset, str(not v), f"{v} -> {not v}")
            elif isinstance(v, int):
                for w in (v + 1, v - 1):
                    add(node.lineno, node.col_offset, node.end_col_offset, f"({w})" if w < 0 else str(w),
                        f"{v} -> {w}")
            elif isinstance(v, float):
                w = -v if v else 1.0
                add(node.lineno, node.col_offset, node.end_col_offset, f"({w!r})" if w < 0 else repr(w),
                    f"{v!r} -> {w!r}")
        elif isinstance(node, ast.Return) and node.value is not None and one_line(node):
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                add(node.lineno, node.value.col_offset, node.value.end_col_offset, "None", "return None")
        elif isinstance(node, ast.Name) and node.id in ("min", "max") and one_line(node):
            add(node.lineno, node.col_offset, node.end_col_offset, SWAP[node.id], f"{node.id} -> {SWAP[node.id]}")
        elif isinstance(node, ast.Attribute) and node.attr in SWAP and one_line(node):
            end = node.end_col_offset
            add(node.lineno, end - len(node.attr), end, SWAP[node.attr], f".{node.attr} -> .{SWAP[node.attr]}")
        elif isinstance(node, ast.keyword) and node.arg in ("min", "max") and node.lineno == node.value.lineno:
            add(node.lineno, node.col_offset, node.col_offset + 3, SWAP[node.arg], f"{node.arg}= -> {SWAP[node.arg]}=")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and one_line(node):
            add(node.lineno, node.col_offset, node.end_col_offset, "pass", "call -> pass")
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)) and one_line(node.test):
            t = node.test
            seg = src.raw[t.lineno - 1][t.col_offset:t.end_col_offset].decode("utf-8")
            add(t.lineno, t.col_offset, t.end_col_offset, f"not ({seg})", "negate condition")
    seen, unique = set(), []
    for m in sorted(out, key=lambda m: (m.line, m.op, m.after)):
        if (m.line, m.after) not in seen:
            seen.add((m.line, m.after))
            unique.append(m)
    return unique

# -----------------------------------------------------------------------------
# running the tests on a copy of the working tree


TESTS_FROM = None   # --tests-from REV: the tests/ folder of that commit, not the working tree's


def _untar(cmd, repo):
    src = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-C", str(repo), "-xf", "-"], stdin=src.stdout, check=True)
    if src.wait():
        raise SystemExit(f"error: {' '.join(cmd)} failed")


def copy_tree(dest):
    """The working tree (no .git, caches or runs) into dest/repo; ../shared linked beside it. With
    TESTS_FROM, tests/ is that commit's (git archive: read-only, the working tree is untouched)."""
    repo = Path(dest) / "repo"
    repo.mkdir(parents=True)
    excl = [f"--exclude=./{e}" if e in (".git", ".cache", "runs") else f"--exclude={e}" for e in EXCLUDE]
    _untar(["tar", "-C", str(ROOT), *excl, "-cf", "-", "."], repo)
    if TESTS_FROM:
        shutil.rmtree(repo / "tests")
        _untar(["git", "-C", str(ROOT), "archive", TESTS_FROM, "tests"], repo)
    if (ROOT.parent / "shared").exists():
        os.symlink(ROOT.parent / "shared", Path(dest) / "shared")
    return repo


def tests_for(target):
    """The tests of a target file: TESTS, else every test file that imports it."""
    if target in TESTS:
        return TESTS[target]
    mod = target[:-3].replace("/", ".")
    pat = re.compile(rf"^\s*(import|from)\s+({re.escape(mod)}|{re.escape(mod.rsplit('.', 1)[-1])})\b", re.M)
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if pat.search(p.read_text()))


def env_for():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1",
               TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("EXGRPO_CACHE", str(ROOT / ".cache"))   # converted models: read from the real tree
    return env


def run_pytest(repo, tests, timeout, first=True):
    """(outcome, the first failing test (first=False: every one, space-separated) or the tail of the
    output, seconds) of pytest -x in repo."""
    t0 = time.time()
    cmd = [sys.executable, "-m", "pytest", *(["-x"] if first else []), "-q", "-rfE", "-p", "no:cacheprovider", *tests]
    proc = subprocess.Popen(cmd, cwd=repo, env=env_for(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "timeout", f"over {timeout:.0f} s", time.time() - t0
    dt = time.time() - t0
    if proc.returncode == 0:
        return "survived", "", dt
    if proc.returncode in (4, 5):   # usage error, no tests collected: not a verdict on the mutant
        return "error", out.strip().splitlines()[-1] if out.strip() else f"rc {proc.returncode}", dt
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    if not first and failed:
        return "killed", " ".join(dict.fromkeys(failed)), dt
    return "killed", failed[0] if failed else (out.strip().splitlines() or ["?"])[-1][:120], dt


def apply(repo, m, original):
    """Write mutant m into the copy (original: the file's text there). When the file has moved on
    since the mutant was made (--retest), its line is found again by its text, nearest first;
    False when it is gone."""
    lines = original.splitlines(keepends=True)
    same = [i + 1 for i, x in enumerate(lines) if x.rstrip("\r\n") == m.before]
    if not same:
        return False
    m.line = min(same, key=lambda i: abs(i - m.line))
    eol = lines[m.line - 1][len(lines[m.line - 1].rstrip("\r\n")):]
    lines[m.line - 1] = m.after + eol
    text = "".join(lines)
    ast.parse(text)   # never a syntax error
    (repo / m.file).write_text(text, encoding="utf-8")
    return True


def run_all(mutants, tests_of, timeout, jobs, log):
    """Each mutant against its file's tests, in `jobs` copies of the tree; fills outcome/by/seconds."""
    tmp = Path(tempfile.mkdtemp(prefix="exgrpo-mutate-"))
    try:
        copies = [copy_tree(tmp / f"w{i}") for i in range(max(1, jobs))]
        free, lock, done = list(copies), threading.Lock(), [0]
        originals = {m.file: (copies[0] / m.file).read_text(encoding="utf-8") for m in mutants}

        def one(m):
            with lock:
                repo = free.pop()
            try:
                if apply(repo, m, originals[m.file]):
                    m.outcome, m.by, m.seconds = run_pytest(repo, tests_of[m.file], timeout[m.file])
                else:
                    m.outcome, m.by, m.seconds = "error", "the line is no longer in the file", 0.0
            finally:
                (repo / m.file).write_text(originals[m.file], encoding="utf-8")
                with lock:
                    free.append(repo)
                    done[0] += 1
                    log(f"[{done[0]}/{len(mutants)}] {m.outcome:8s} {m.seconds:5.1f}s {m.file}:{m.line} {m.op}: "
                        f"{m.after.strip()[:90]}" + (f"  <- {m.by}" if m.outcome == "killed" else ""))

        with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
            list(pool.map(one, mutants))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def baseline(targets, tests_of, log, deselected=None):
    """Seconds the unmutated tests take per file. They must pass, else every mutant looks killed:
    tests that fail on the unmutated tree (someone's work in progress) are deselected, listed in
    `deselected`, and the rest run again. Test files the copy lacks (--tests-from an older commit)
    are dropped from tests_of."""
    tmp = Path(tempfile.mkdtemp(prefix="exgrpo-mutate-base-"))
    deselected = {} if deselected is None else deselected
    try:
        repo, times, seen = copy_tree(tmp), {}, {}
        for f in targets:
            tests_of[f][:] = [t for t in tests_of[f] if t.startswith("-") or (repo / t.split("::")[0]).exists()]
            if tuple(tests_of[f]) in seen:   # the same tests as another file's: run once
                times[f], tests_of[f][:], failing = seen[tuple(tests_of[f])]
                if failing:
                    deselected[f] = failing
                continue
            asked = tuple(tests_of[f])
            outcome, by, dt = run_pytest(repo, tests_of[f], timeout=3600)
            if outcome != "survived":
                outcome, by, _ = run_pytest(repo, tests_of[f], timeout=3600, first=False)
                failing = by.split() if outcome == "killed" else []
                if not failing or not all("::" in t for t in failing):
                    raise SystemExit(f"error: the tests of {f} fail before any mutation ({by}); fix them first")
                log(f"baseline {f}: failing before any mutation, deselected: {' '.join(failing)}")
                deselected[f] = failing
                tests_of[f] += [a for t in failing for a in ("--deselect", t)]
                outcome, by, dt = run_pytest(repo, tests_of[f], timeout=3600)
                if outcome != "survived":
                    raise SystemExit(f"error: the tests of {f} still fail ({by})")
            times[f] = dt
            seen[asked] = (dt, list(tests_of[f]), deselected.get(f))
            log(f"baseline {f}: {' '.join(tests_of[f])} pass in {dt:.1f} s")
        return times
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

# -----------------------------------------------------------------------------
# the report


def load_equivalent():
    """{(file, line, mutated line): (kind, why)} of EQUIVALENT. kind "equivalent" (the default): the
    mutant changes nothing a test could see; any other kind (e.g. "elsewhere": only tests outside
    the harness's set reach it) stays a survivor, with its why."""
    if not EQUIVALENT.exists():
        return {}
    return {(e["file"], e["before"].strip(), e["after"].strip()): (e.get("kind", "equivalent"), e["why"])
            for e in json.loads(EQUIVALENT.read_text())}


def mark_equivalent(mutants):
    eq = load_equivalent()
    for m in mutants:
        if m.outcome == "survived" and m.key in eq:
            kind, why = eq[m.key]
            m.outcome, m.by = ("equivalent", why) if kind == "equivalent" else ("survived", f"{kind}: {why}")


def rate(ms, outcomes=("killed", "timeout")):
    n = [m for m in ms if m.outcome != "error"]
    return sum(m.outcome in outcomes for m in n), len(n)


def pct(k, n):
    return f"{100 * k / n:.1f}%" if n else "-"


def _cell(s):
    return "`" + s.strip().replace("|", "\\|").replace("`", "'") + "`"


def report(meta, mutants, out):
    files = list(dict.fromkeys(m.file for m in mutants))
    first = lambda m: (m.history[0]["outcome"] if m.history else m.outcome)
    lines = [f"# Mutation testing, {meta['date']}", "",
             "Single-line mutations of the method's code, each run against its tests (`bench/mutate.py`; how it "
             "works and what it mutates: its docstring). Killed = a test failed or ran past the time limit.", "",
             "```", meta["command"], "```", "",
             f"Tree: commit {meta['commit']}{' + uncommitted changes' if meta['dirty'] else ''}; seed {meta['seed']}, "
             f"--max {meta['max']} per file; {meta['jobs']} job(s); {meta['minutes']:.0f} min in all"
             + (f"; the first run used the tests of commit {meta['tests_from']}" if meta.get("tests_from") else "")
             + ".", ""]
    for key, when in (("deselected", "the first run"), ("deselected_retest", "the re-test")):
        for f, ids in (meta.get(key) or {}).items():
            lines += [f"Failing on the unmutated tree in {when}, so left out for {f}: " + ", ".join(ids), ""]
    if meta.get("retests"):
        lines += ["Re-tested since (`--retest`, the survivors only): " + "; ".join(meta["retests"]), ""]
    lines += ["| file | functions | tests | mutants | sampled | killed (first run) | killed now | survived | "
              "equivalent | kill rate | without equivalents |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in files:
        ms = [m for m in mutants if m.file == f]
        k0 = sum(first(m) in ("killed", "timeout") for m in ms if first(m) != "error")
        k, n = rate(ms)
        eq = sum(m.outcome == "equivalent" for m in ms)
        sv = sum(m.outcome == "survived" for m in ms)
        info = meta["files"][f]
        names = lambda ts: " ".join(t for t in ts if t.endswith(".py"))
        again = list(dict.fromkeys(names(ts) for ts in info.get("tests_retests", [])))
        tests = names(info["tests"]) + (f" (re-tests: {'; '.join(again)})" if again else "")
        lines.append(f"| {f} | {info['functions'] or 'all'} | {tests} | {info['found']} | {len(ms)} | "
                     f"{k0} ({pct(k0, n)}) | {k} | {sv} | {eq} | {pct(k, n)} | {pct(k, n - eq)} |")
    k, n = rate(mutants)
    k0 = sum(first(m) in ("killed", "timeout") for m in mutants if first(m) != "error")
    eq = sum(m.outcome == "equivalent" for m in mutants)
    lines += [f"| **all** | | | | {n} | {k0} ({pct(k0, n)}) | {k} | "
              f"{sum(m.outcome == 'survived' for m in mutants)} | {eq} | **{pct(k, n)}** | **{pct(k, n - eq)}** |", ""]
    left = [m for m in mutants if m.outcome in ("survived", "equivalent")]
    lines += ["## Survivors", "", "Each is equivalent (it changes nothing a test could see), reached only by tests outside "
              "the harness's set, or a test is missing; the reasons: `bench/results/mutation-equivalent.json`, matched "
              "on the line's text." if left else "None.", ""]
    if left:
        lines += ["| file:line | mutation | the line | mutated | why |", "|---|---|---|---|---|"]
        lines += [f"| {m.file}:{m.line} | {m.op} | {_cell(m.before)} | {_cell(m.after)} | "
                  f"{m.outcome}: {m.by.replace('|', '/') if m.by else '**no test catches it**'} |" for m in left]
        lines.append("")
    fixed = [m for m in mutants if m.history and first(m) == "survived" and m.outcome in ("killed", "timeout")]
    if fixed:
        lines += ["## Survivors of the first run killed since", "", "| file:line | mutated | killed by |", "|---|---|---|"]
        lines += [f"| {m.file}:{m.line} | {_cell(m.after)} | {m.by} |" for m in fixed]
        lines.append("")
    lines += ["<details><summary>Every sampled mutant</summary>", "", "| file:line | mutation | mutated | outcome | by |",
              "|---|---|---|---|---|"]
    lines += [f"| {m.file}:{m.line} | {m.op} | {_cell(m.after)} | {m.outcome} | {m.by.replace('|', '/')} |"
              for m in mutants]
    lines += ["", "</details>", ""]
    Path(out).write_text("\n".join(lines))
    Path(out).with_suffix(".json").write_text(json.dumps({"meta": meta, "mutants": [asdict(m) for m in mutants]},
                                                          indent=1))

# -----------------------------------------------------------------------------


def parse_target(spec):
    f, _, names = spec.partition(":")
    return f, [n.strip() for n in names.split(",") if n.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="+", default=TARGETS,
                    help="FILE or FILE:func,Class,Class.method (default: the method's files, issue #33)")
    ap.add_argument("--max", type=int, default=60, help="mutants sampled per file (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tests", nargs="+", default=None,
                    help="pytest arguments for every file (default: TESTS; with --retest: the first run's)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per mutant (default: 3x the unmutated tests' time, at least 60)")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run side by side, each in its own copy")
    ap.add_argument("--out", default=None, help="the markdown report (+ .json); default bench/results/mutation-DATE.md")
    ap.add_argument("--list", action="store_true", help="print the sampled mutants and exit")
    ap.add_argument("--retest", default=None, help="a report's .json: run its survivors again, update the report")
    ap.add_argument("--tests-from", default=None, metavar="REV",
                    help="run the tests/ folder of git commit REV (e.g. HEAD: the kill rate before new tests)")
    args = ap.parse_args(argv)
    global TESTS_FROM
    TESTS_FROM = args.tests_from
    log = lambda s: print(s, flush=True)
    t0 = time.time()

    if args.retest:
        saved = json.loads(Path(args.retest).read_text())
        meta, mutants = saved["meta"], [Mutant(**m) for m in saved["mutants"]]
        for m in mutants:   # equivalents listed since are not run again
            if m.outcome == "equivalent":
                m.outcome = "survived"
        mark_equivalent(mutants)
        again = [m for m in mutants if m.outcome == "survived"]
        # the tests the first run used (default), or --tests: e.g. only the files with the new tests
        # (the others let every one of these through already)
        tests_of = {f: list(args.tests or info["tests_asked"]) for f, info in meta["files"].items()}
        deselected = {}
        times = baseline(sorted({m.file for m in again}), tests_of, log, deselected)
        meta["deselected_retest"] = deselected
        for f in times:
            meta["files"][f].setdefault("tests_retests", []).append(tests_of[f])
        timeout = {f: args.timeout or max(60.0, 3 * t) for f, t in times.items()}
        for m in again:
            m.history.append({"outcome": m.outcome, "by": m.by})
        run_all(again, tests_of, timeout, args.jobs, log)
        mark_equivalent(mutants)
        meta.setdefault("retests", []).append(f"{datetime.date.today()}, `python bench/mutate.py "
                                              f"{' '.join(map(shlex.quote, argv or sys.argv[1:]))}`, "
                                              f"{len(again)} mutant{'s' * (len(again) != 1)}, "
                                              f"{(time.time() - t0) / 60:.0f} min")
        report(meta, mutants, Path(args.retest).with_suffix(".md"))
        log(f"report: {Path(args.retest).with_suffix('.md')}")
        return 0

    files, mutants = {}, []
    for spec in args.files:
        f, names = parse_target(spec)
        found = mutants_of(ROOT / f, names, rel=f)
        pick = found if not args.max or len(found) <= args.max else \
            random.Random(f"{args.seed}:{f}").sample(found, args.max)
        pick.sort(key=lambda m: (m.line, m.op, m.after))
        asked = args.tests or tests_for(f)
        files[f] = {"functions": ", ".join(names), "tests": list(asked), "tests_asked": asked, "found": len(found),
                    "sha256": hashlib.sha256((ROOT / f).read_bytes()).hexdigest()[:12]}
        mutants += pick
        log(f"{f}: {len(found)} mutants, {len(pick)} sampled; tests: {' '.join(files[f]['tests'])}")
    if args.list:
        for m in mutants:
            print(f"{m.file}:{m.line} {m.op:16s} {m.after.strip()}")
        return 0
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit, dirty = git("rev-parse", "--short", "HEAD"), bool(git("status", "--porcelain", "--", *files))
    tests_of = {f: info["tests"] for f, info in files.items()}
    deselected = {}
    times = baseline(list(files), tests_of, log, deselected)
    timeout = {f: args.timeout or max(60.0, 3 * t) for f, t in times.items()}
    run_all(mutants, tests_of, timeout, args.jobs, log)
    mark_equivalent(mutants)
    today = datetime.date.today().isoformat()
    out = Path(args.out or ROOT / "bench" / "results" / f"mutation-{today}.md")
    meta = {"date": today, "command": "python bench/mutate.py " + " ".join(map(shlex.quote, argv or sys.argv[1:])),
            "commit": commit, "dirty": dirty,
            "seed": args.seed, "max": args.max, "jobs": args.jobs, "tests_from": args.tests_from, "minutes": (time.time() - t0) / 60,
            "files": files, "baseline_seconds": times, "deselected": deselected}
    report(meta, mutants, out)
    k, n = rate(mutants)
    log(f"{k}/{n} killed ({pct(k, n)}); report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
