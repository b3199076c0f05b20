"""
Teachers for stage 1 (probes.py): one interface, answer(prompts, specs=None) -> list[str],
over the synthetic oracle, a local transformers model, or an OpenAI-compatible endpoint,
with a durable cache so that a rerun never asks the same thing twice.

    from teachers import make_teacher
    t = make_teacher("oracle")                                   # exact, synthetic probes only
    t = make_teacher("hf:HuggingFaceTB/SmolLM2-135M-Instruct", cache_path="runs/teacher_cache.jsonl")
    t = make_teacher(url="http://localhost:8000/v1", model="Qwen/Qwen2.5-72B-Instruct",
                     cache_path="runs/teacher_cache.jsonl", concurrency=8)
    t.answer(["What is 2 + 3? End with 'The answer is X.'"])    # -> ["2 + 3 = 5. The answer is 5."]

A prompt is a string (one user turn) or a chat conversation; specs carry the synthetic
structure the oracle needs (data/oracle.py). The endpoint client is stdlib only: timeouts,
retries with exponential backoff and jitter on timeouts, resets, malformed replies, 429
(Retry-After honoured) and 5xx; any other 4xx stops the run at once with the server's message.
"""

import hashlib
import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
import warnings
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from pathlib import Path

from data.oracle import solve

# -----------------------------------------------------------------------------
# defaults

TEACHER = "oracle"         # oracle | hf:<path-or-id> | openai (with a url)
TEACHER_MAX_TOKENS = 1024  # a teacher's answer budget
CONCURRENCY = 8            # endpoint requests in flight at once
TIMEOUT = 120.0            # seconds before one endpoint request counts as hung
RETRIES = 6                # extra tries per request (timeouts, resets, 429, 5xx, bad JSON)
BACKOFF = 1.0              # first retry wait in seconds, doubled each try
MAX_BACKOFF = 60.0         # no single wait (backoff or Retry-After) is longer than this
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
        if not prompts:  # nothing to ask: never start a teacher (no model load, no request)
            return []
        convs = [user(p) if isinstance(p, str) else list(p) for p in prompts]
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
# command line: the teacher flags of probes.py (and of any script that asks a teacher)

def add_arguments(ap, cache_default):
    """The teacher flags, as one argument group of an argparse parser."""
    g = ap.add_argument_group("teacher")
    g.add_argument("--teacher", default=TEACHER, help="oracle | hf:<path-or-id> | openai (with --teacher-url)")
    g.add_argument("--teacher-url", default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    g.add_argument("--teacher-model", default=None, help="model name sent to the endpoint")
    g.add_argument("--cache", default=str(cache_default),
                   help="teacher cache JSONL ('none': no cache; the oracle is never cached)")
    g.add_argument("--concurrency", type=int, default=CONCURRENCY, help="endpoint requests in flight")
    g.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds before a request counts as hung")
    g.add_argument("--retries", type=int, default=RETRIES)
    g.add_argument("--backoff", type=float, default=BACKOFF, help="first retry wait, doubled each try")
    g.add_argument("--max-tokens", type=int, default=TEACHER_MAX_TOKENS, help="a teacher's answer budget")


def from_args(args):
    """The teacher the flags of add_arguments describe."""
    kw = ({"concurrency": args.concurrency, "timeout": args.timeout, "retries": args.retries,
           "backoff": args.backoff, "max_tokens": args.max_tokens} if args.teacher_url
          else {"max_new_tokens": args.max_tokens} if args.teacher.startswith("hf:") else {})
    return make_teacher(args.teacher, args.teacher_url, args.teacher_model,
                        cache_path=None if args.cache == "none" else args.cache, **kw)
