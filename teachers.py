"""
Teachers for stage 1 (probes.py): one interface, answer(prompts, specs=None) -> list[str],
over the synthetic oracle, a local transformers model, or an OpenAI-compatible endpoint,
with a durable cache so that a rerun never asks the same thing twice.

    from teachers import make_teacher
    t = make_teacher("oracle")                                   # exact, synthetic probes only
    t = make_teacher("hf:HuggingFaceTB/SmolLM2-135M-Instruct", cache_path="runs/teacher_cache.jsonl")
    t = make_teacher(url="http://localhost:8000/v1", model="Qwen/Qwen2.5-72B-Instruct",
                     cache_path=cache_file(cache_dir(), "openai:Qwen/Qwen2.5-72B-Instruct"), concurrency=8)
    t.answer(["What is 2 + 3? End with 'The answer is X.'"])    # -> ["2 + 3 = 5. The answer is 5."]

The cache is shared: one file per teacher under ~/.cache/exgrpo/teacher ($EXGRPO_TEACHER_CACHE,
or --teacher-cache of train.py and probes.py), so every run and probes.py reuse each other's
answers, and an answer is paid for once. A line records the teacher and its sampling, and its
key hashes both with the prompt: another teacher, or other sampling, never reuses it.

A prompt is a string (one user turn) or a chat conversation; specs carry the synthetic
structure the oracle needs (data/oracle.py). The endpoint client is stdlib only: timeouts,
retries with exponential backoff and jitter on timeouts, resets, malformed replies, 429
(Retry-After honoured) and 5xx; any other 4xx stops the run at once with the server's message.
"""

import argparse
import fcntl
import hashlib
import http.client
import json
import os
import re
import random
import threading
import time
import urllib.error
import urllib.request
import warnings
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from pathlib import Path

from data.oracle import solve
import models
import sample

# -----------------------------------------------------------------------------
# defaults

TEACHER = "oracle"         # oracle | hf:<path-or-id> | openai (with a url)
TEACHER_MAX_TOKENS = 1024  # a teacher's answer budget
CONCURRENCY = 8            # endpoint requests in flight at once
TIMEOUT = 120.0            # seconds before one endpoint request counts as hung
RETRIES = 6                # extra tries per request (timeouts, resets, 429, 5xx, bad JSON)
BACKOFF = 1.0              # first retry wait in seconds, doubled each try
MAX_BACKOFF = 60.0         # no single wait (backoff or Retry-After) is longer than this
DEADLINE = 0.0             # seconds one prompt may take over all its tries (0 = no limit beyond the retries)
PING_TIMEOUT = 5.0         # seconds for the start-up check of an endpoint (one short request)
CACHE_ENV_VAR = "EXGRPO_TEACHER_CACHE"  # the shared cache folder, when set
KEY_ENV_VARS = ("EXGRPO_TEACHER_KEY", "OPENAI_API_KEY")  # the endpoint key, first one set wins


def user(text):
    """One user turn as a chat conversation."""
    return [{"role": "user", "content": text}]


# -----------------------------------------------------------------------------
# the teacher cache: one JSON line per answer, fsynced as it arrives

def cache_key(teacher_id, messages, sampling):
    """sha256 of (teacher id, the full prompt, the sampling settings)."""
    blob = json.dumps([teacher_id, messages, sampling], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cache_dir():
    """The shared cache folder: $EXGRPO_TEACHER_CACHE, else $XDG_CACHE_HOME or ~/.cache, /exgrpo/teacher."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "exgrpo" / "teacher"


def cache_file(where, teacher_id):
    """The cache file of one teacher: `where` itself when it names a .jsonl file, else
    <where>/<teacher id as a file name>-<8 hex of its hash>.jsonl (the hash keeps 'a/b' and 'a_b' apart)."""
    where = Path(where)
    if where.suffix == ".jsonl":
        return where
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", teacher_id).strip("_")[:80]
    return where / f"{name}-{hashlib.sha256(teacher_id.encode()).hexdigest()[:8]}.jsonl"


class TeacherCache:
    """Append-only JSONL of teacher answers: {"key", "teacher", "sampling", "messages", "answer"}
    a line.

    Each answer is written, flushed and fsynced the moment it arrives, so a crash loses at
    most the calls in flight. Several processes may share one file (two runs, probes.py): each
    line is one append under an exclusive lock. A last line cut short by a kill is skipped with
    a warning and cut off the file, so the next append starts on a clean line."""

    def __init__(self, path):
        self.path = Path(path)
        self.answers = {}
        self.lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)   # no other process is mid-line while we read (and maybe cut)
        try:
            self._load()
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _load(self):
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
            os.write(self.fd, b"\n")

    def __contains__(self, key):
        return key in self.answers

    def __len__(self):
        return len(self.answers)

    def get(self, key):
        return self.answers[key]

    def put(self, key, teacher_id, messages, answer, sampling=None):
        line = json.dumps({"key": key, "teacher": teacher_id, "sampling": sampling, "messages": messages,
                           "answer": answer}, ensure_ascii=False) + "\n"
        data = line.encode("utf-8")
        with self.lock:
            self.answers[key] = answer
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                while data:  # O_APPEND: each write lands at the end, after other processes' lines
                    data = data[os.write(self.fd, data):]
                os.fsync(self.fd)
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

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
        self.on_answer = None  # called once per answer as it arrives (a progress bar); cached ones too

    def _tick(self, n=1):
        if self.on_answer is not None:
            self.on_answer(n)

    def answer(self, prompts, specs=None):
        """One answer text per prompt. Cached answers are reused; identical prompts asked once."""
        if not prompts:  # nothing to ask: never start a teacher (no model load, no request)
            return []
        convs = [user(p) if isinstance(p, str) else list(p) for p in prompts]
        specs = list(specs) if specs is not None else [None] * len(convs)
        out = [None] * len(convs)
        if self.cache is None or not self.cacheable:
            for j, text in self._stream(convs, specs):
                out[j] = text
                self.calls += 1
                self._tick()
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
        self._tick(len(convs) - len(firsts))
        if not firsts:  # everything cached: the teacher is never started (no model load, no request)
            return out
        try:
            for j, text in self._stream([convs[i] for i in firsts], [specs[i] for i in firsts]):
                self.cache.put(keys[firsts[j]], self.id, convs[firsts[j]], text, self.sampling)
                self.calls += 1
                self._tick()
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
        # a local folder by its absolute path: the shared cache must not mix up two runs' "runs/x/sft/final"
        self.id = f"hf:{Path(name).resolve()}" if Path(name).is_dir() else f"hf:{name}"
        self.name, self.batch_size = name, batch_size
        self.sampling = {"max_new_tokens": max_new_tokens, "temperature": temperature}
        self.model = self.tokenizer = None

    def _stream(self, convs, specs):
        if self.model is None:  # load on first use: a fully cached rerun never loads it
            self.model, self.tokenizer = models.load_student(self.name, role="teacher")
        for s in range(0, len(convs), self.batch_size):  # one batch at a time, so answers cache early
            texts = sample.generate_text(self.model, self.tokenizer, convs[s:s + self.batch_size],
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
                 backoff=BACKOFF, max_backoff=MAX_BACKOFF, temperature=0.0, max_tokens=TEACHER_MAX_TOKENS,
                 deadline=DEADLINE):
        super().__init__()
        if not url or not model:
            raise TeacherError("an endpoint teacher needs both --teacher-url and --teacher-model")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.id = model, f"openai:{model}"
        self.key = (key if key is not None
                    else next((os.environ[v] for v in KEY_ENV_VARS if os.environ.get(v)), None))
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries
        self.backoff, self.max_backoff, self.deadline = backoff, max_backoff, deadline
        self.sampling = {"temperature": temperature, "max_tokens": max_tokens}

    # --- the start-up check: one short request, before anything loads

    def ping(self, timeout=PING_TIMEOUT):
        """Check the endpoint, the model name and the key with one short request, no retries;
        raise TeacherError with one line naming the flag to fix.

        GET <url>/models first (vLLM, SGLang and the OpenAI API serve it; it costs no tokens and
        lists the served model names); a server without that route gets a 1-token chat request."""
        base = self.url[: -len("/chat/completions")]
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        keyhint = f"set ${KEY_ENV_VARS[0]} (or ${KEY_ENV_VARS[1]})"
        try:
            try:
                with urllib.request.urlopen(urllib.request.Request(base + "/models", headers=headers),
                                            timeout=timeout) as r:
                    served = [m.get("id") for m in json.loads(r.read()).get("data", [])
                              if isinstance(m, dict)]
            except urllib.error.HTTPError as e:
                if e.code in (401, 403):
                    raise
                served = None   # no /models route (or a proxy that hides it): ask for one token instead
            except (ValueError, AttributeError):
                served = None   # /models answered something that is not the OpenAI list
            if served is not None:
                if served and self.model not in served:
                    raise TeacherError(f"--teacher-model {self.model}: {base} serves "
                                       f"{', '.join(map(str, served[:8]))}")
                return
            body = json.dumps({"model": self.model, "messages": user("ping"), "max_tokens": 1}).encode()
            req = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", **headers})
            with urllib.request.urlopen(req, timeout=timeout) as r:
                r.read()
        except urllib.error.HTTPError as e:
            try:
                detail = e.read()[:200].decode("utf-8", "replace").strip()
            except Exception:
                detail = ""
            if e.code in (401, 403):
                raise TeacherError(f"--teacher-url {base}: the key was rejected (HTTP {e.code}); "
                                   f"{keyhint}") from None
            if e.code in (400, 404, 422):
                raise TeacherError(f"--teacher-model {self.model}: {base} refused it "
                                   f"(HTTP {e.code}: {detail})") from None
            raise TeacherError(f"--teacher-url {base}: answered HTTP {e.code} {e.reason} to a 1-token "
                               f"request ({detail})") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            why = getattr(e, "reason", None) or e
            raise TeacherError(f"--teacher-url {base}: unreachable within {timeout:g} s ({why}); is the "
                               f"server up, and is the URL its /v1 root?") from None

    def _post(self, messages, timeout):
        """One HTTP request -> the answer text; raises on any failure."""
        body = json.dumps({"model": self.model, "messages": messages, **self.sampling}).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
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
        `stop` (a threading.Event) is set, i.e. another request hit an error that ends the run.
        With a deadline, the prompt's tries and waits together never take longer than it."""
        last, tries, t_end = None, 0, time.monotonic() + self.deadline if self.deadline else None
        for attempt in range(self.retries + 1):
            if stop is not None and stop.is_set():
                raise _Stopped()
            left = float("inf") if t_end is None else t_end - time.monotonic()
            if left <= 0:
                break
            # jitter so that many clients do not retry in step; Retry-After is a floor, never jittered
            wait = min(self.max_backoff, self.backoff * 2 ** attempt) * random.uniform(0.8, 1.0)
            tries += 1
            try:
                return self._post(messages, min(self.timeout, left))
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
                time.sleep(max(0.0, min(wait, (t_end or float("inf")) - time.monotonic())))
        if stop is not None:
            stop.set()
        within = f" within the {self.deadline:g} s deadline (--teacher-deadline)" if t_end else ""
        raise TeacherError(f"could not get an answer from teacher endpoint {self.url} after "
                           f"{tries} tries{within} (last error: {last})")

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
# command line: the teacher flags of train.py and probes.py, checked before anything runs

def add_arguments(ap, teacher_help="oracle | hf:<path-or-id> | openai (with --teacher-url)", default=TEACHER):
    """The teacher flags, into an argparse parser (as their own group) or an existing group."""
    g = ap.add_argument_group("teacher") if isinstance(ap, argparse.ArgumentParser) else ap
    g.add_argument("--teacher", default=default, help=teacher_help)
    g.add_argument("--teacher-url", default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    g.add_argument("--teacher-model", default=None, help="model name sent to the endpoint")
    g.add_argument("--teacher-cache", default=None, metavar="DIR|FILE|none",
                   help=f"answer cache (default ${CACHE_ENV_VAR}, else ~/.cache/exgrpo/teacher)")
    g.add_argument("--teacher-max-tokens", type=int, default=TEACHER_MAX_TOKENS,
                   help="a teacher's answer budget")
    g.add_argument("--teacher-concurrency", type=int, default=CONCURRENCY, help="endpoint requests in flight")
    g.add_argument("--teacher-timeout", type=float, default=TIMEOUT,
                   help="seconds before one try counts as hung")
    g.add_argument("--teacher-retries", type=int, default=RETRIES, help="extra tries per prompt")
    g.add_argument("--teacher-backoff", type=float, default=BACKOFF,
                   help="first retry wait, doubled each try")
    g.add_argument("--teacher-deadline", type=float, default=DEADLINE,
                   help="seconds one prompt may take over all its tries and waits (0 = no limit)")


FLAG_RANGES = {  # flag -> (test, what is allowed)
    "teacher_max_tokens": (lambda v: v >= 1, ">= 1"), "teacher_concurrency": (lambda v: v >= 1, ">= 1"),
    "teacher_timeout": (lambda v: 0 < v < float("inf"), "> 0 seconds"),
    "teacher_retries": (lambda v: v >= 0, ">= 0"),
    "teacher_backoff": (lambda v: 0 <= v < float("inf"), ">= 0 seconds"),
    "teacher_deadline": (lambda v: 0 <= v < float("inf"), ">= 0 seconds (0 = no limit)")}


def _teacher_kw(args):
    if args.teacher_url:
        return {"concurrency": args.teacher_concurrency, "timeout": args.teacher_timeout,
                "retries": args.teacher_retries, "backoff": args.teacher_backoff,
                "max_tokens": args.teacher_max_tokens, "deadline": args.teacher_deadline}
    return {"max_new_tokens": args.teacher_max_tokens} if str(args.teacher).startswith("hf:") else {}


def check_args(args):
    """Why the teacher flags cannot work (one line naming the flag), or None. Builds the teacher
    without its cache: no folder is made, no model loads, nothing is asked."""
    for flag, (ok, allowed) in FLAG_RANGES.items():
        if not ok(getattr(args, flag)):
            return f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be {allowed}"
    local = str(args.teacher)[3:] if str(args.teacher).startswith("hf:") else ""
    if models.is_path(local) and not Path(local).expanduser().exists():
        return f"--teacher {args.teacher}: no folder at {Path(local).expanduser().resolve()}"
    # a hub id the offline cache lacks: said now, not after the zero-shot eval
    if ("/" in local and not models.is_path(local) and not Path(local).exists()
            and os.environ.get("HF_HUB_OFFLINE") == "1" and models.hub_config(local) is None):
        return (f"--teacher {args.teacher}: hub id {local} is not in the local hub cache and "
                f"HF_HUB_OFFLINE=1; download it once with `hf download {local}`, or give a local folder")
    if args.teacher_url and not args.teacher_url.startswith(("http://", "https://")):
        return f"--teacher-url {args.teacher_url}: must start with http:// or https://"
    try:
        make_teacher(args.teacher, args.teacher_url, args.teacher_model, **_teacher_kw(args))
    except TeacherError as e:  # its messages name the flags, but for an unknown --teacher
        return str(e) if "--teacher" in str(e) else f"--teacher {args.teacher}: {e}"
    return None


def cache_path(args, teacher):
    """The cache file of this teacher: under --teacher-cache when given, else in the shared
    cache folder (cache_dir()); None only for `--teacher-cache none` or an uncacheable teacher.
    The flag absent (None) means the default folder, never "no cache": a run that crashes must
    not pay for its answers again."""
    flag = args.teacher_cache
    if not teacher.cacheable or (flag is not None and str(flag).strip().lower() == "none"):
        return None
    return cache_file(flag or cache_dir(), teacher.id)


def check_endpoint(args):
    """The endpoint of --teacher-url answers, serves --teacher-model and takes the key: one short
    request at start-up, so that a typo costs seconds, not the zero-shot evaluation and a model
    load. None when fine (or no endpoint), else one line naming the flag."""
    if not getattr(args, "teacher_url", None) or getattr(args, "teacher", None) == "none":
        return None
    try:
        make_teacher(args.teacher, args.teacher_url, args.teacher_model, **_teacher_kw(args)).ping()
    except TeacherError as e:
        return str(e)
    return None


def from_args(args, cache=True):
    """The teacher the flags of add_arguments describe, with its cache file in --teacher-cache
    (cache=False: without it, e.g. to count what is cached, via cache_path, before a run)."""
    teacher = make_teacher(args.teacher, args.teacher_url, args.teacher_model, **_teacher_kw(args))
    path = cache_path(args, teacher) if cache else None
    if path is not None:
        teacher.cache = TeacherCache(path)
    return teacher
