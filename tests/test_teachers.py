"""Teachers and the teacher cache (teachers.py): the OpenAI-compatible endpoint against a real
local HTTP server with injected faults, a CLI killed mid-run and resumed, 4xx and unreachable
endpoints, a cache whose last line was cut short, and the probes.py CLI on StrategyQA with the
teacher writing the probes (its default there) and with the templates."""
import json
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import pytest

import probes
import teachers
from data.oracle import solve
from data.synth import generate, oracle_solution
from fake_openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(timeout=1.5, retries=4, backoff=0.01, concurrency=4)  # short waits: tests, not production
HANG = 2.0  # a hung request outlasts the client timeout


def oracle_table(records, rules=None):
    """prompt text -> the oracle's answer, for every probe and question of the records."""
    table = {}
    for r in records:
        table[probes.format_question(r["question"], r["answer_type"])] = oracle_solution(r["problem"])
        for p in probes.make_probes(r, rules):
            table[probes.format_question(p["question"], p["answer_type"])] = solve(p["spec"])[1]
    return table


def answer_from(table):
    # a consistency dialogue ends with Q, so the last user turn is always the one to answer
    return lambda messages: table[messages[-1]["content"]]


def every_fault_once(messages, attempt):
    """First attempt of each prompt: one of six faults (or none), picked by a hash of the prompt;
    a few prompts fail twice in a row."""
    h = zlib.crc32(json.dumps(messages).encode())
    fault = [None, "500", "429", "hang", "malformed", "reset", "503"][h % 7]
    if attempt == 1 or (attempt == 2 and h % 5 == 0):
        return fault
    return None


def dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -----------------------------------------------------------------------------
# the endpoint teacher


def test_endpoint_survives_faults_and_never_asks_twice(tmp_path):
    recs = generate("train", 8, seed=11)
    table = oracle_table(recs, ["counterfactual", "decompose", "why"])
    prompts = list(table)
    special = prompts[0]  # this one is rate limited with Retry-After: 1 (backoff alone is 0.01 s)

    def faults(messages, attempt):
        if messages[-1]["content"] == special:
            return "429-wait" if attempt == 1 else None
        return every_fault_once(messages, attempt)

    cache = tmp_path / "cache.jsonl"
    with FakeOpenAI(answer_from(table), faults, hang_s=HANG) as srv:
        teacher = teachers.make_teacher(url=srv.url, model="fake", key="sk-test", cache_path=cache, **FAST)
        out = teacher.answer(prompts + prompts[:5])  # repeats within one call are asked once
        assert out == [table[p] for p in prompts + prompts[:5]]
        assert set(srv.answered.values()) == {1} and len(srv.answered) == len(prompts)
        for f in ("500", "503", "429", "429-wait", "hang", "malformed", "reset"):
            assert srv.faults[f] >= 1, srv.faults  # every fault really happened
        times = [t for k, t, _ in srv.requests if json.loads(k)[-1]["content"] == special]
        assert len(times) == 2 and times[1] - times[0] >= 0.9  # Retry-After honoured
        assert all(auth == "Bearer sk-test" for _, _, auth in srv.requests)
        assert len(cache.read_text().splitlines()) == len(prompts)
        n = len(srv.requests)
        again = teachers.make_teacher(url=srv.url, model="fake", cache_path=cache, **FAST)
        assert again.answer(prompts) == out[:len(prompts)]
        assert len(srv.requests) == n and again.calls == 0 and again.cache_hits == len(prompts)


def test_endpoint_4xx_is_a_clear_error_without_retries(tmp_path, monkeypatch):
    monkeypatch.setenv("EXGRPO_TEACHER_KEY", "sk-wrong")
    with FakeOpenAI(lambda m: "unused", lambda m, a: "401") as srv:
        teacher = teachers.make_teacher(url=srv.url, model="fake", cache_path=tmp_path / "c.jsonl",
                                      **dict(FAST, retries=5, backoff=0.2))
        t0 = time.time()
        with pytest.raises(teachers.TeacherError) as e:
            teacher.answer([f"question {i}" for i in range(40)])
        assert time.time() - t0 < 1.0  # no backoff waits at all
        msg = str(e.value)
        assert "401" in msg and "Incorrect API key" in msg and "EXGRPO_TEACHER_KEY" in msg and "Not retried" in msg
        assert max(srv.attempts.values()) == 1  # no prompt tried twice
        assert len(srv.requests) <= FAST["concurrency"]  # and no storm of new prompts after the error
        assert srv.requests[0][2] == "Bearer sk-wrong"  # the key came from the environment
    with FakeOpenAI(lambda m: "unused", lambda m, a: "404") as srv:
        with pytest.raises(teachers.TeacherError, match="404"):
            teachers.make_teacher(url=srv.url, model="nope", **FAST).answer(["q"])
        assert len(srv.requests) == 1


def test_unreachable_endpoint_errors_after_retries_and_keeps_the_cache(tmp_path):
    cache = tmp_path / "cache.jsonl"
    with FakeOpenAI(lambda m: f"The answer is {len(m[-1]['content'])}.") as srv:
        teachers.make_teacher(url=srv.url, model="fake", cache_path=cache, **FAST).answer(["a", "bb", "ccc"])
    before = cache.read_bytes()
    url = f"http://127.0.0.1:{dead_port()}/v1"
    teacher = teachers.make_teacher(url=url, model="fake", cache_path=cache, **dict(FAST, retries=2))
    with pytest.raises(teachers.TeacherError) as e:
        teacher.answer(["a", "bb", "ccc", "dddd"])
    msg = str(e.value)
    assert "could not get an answer" in msg and "after 3 tries" in msg and url in msg and str(cache) in msg
    assert cache.read_bytes() == before  # intact: nothing lost, nothing half-written
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file: no corrupt-line warning
        offline = teachers.make_teacher(url=url, model="fake", cache_path=cache, **FAST)
    assert offline.answer(["ccc", "a"]) == ["The answer is 3.", "The answer is 1."]  # no network needed


def test_endpoint_needs_url_and_model():
    with pytest.raises(teachers.TeacherError, match="teacher-model"):
        teachers.make_teacher(url="http://127.0.0.1:1/v1")
    with pytest.raises(teachers.TeacherError, match="teacher-url"):
        teachers.make_teacher("openai")
    with pytest.raises(teachers.TeacherError, match="unknown teacher"):
        teachers.make_teacher("gpt-9")


# -----------------------------------------------------------------------------
# the cache


def test_cache_skips_a_corrupt_last_line_and_appends_cleanly(tmp_path):
    path = tmp_path / "cache.jsonl"
    c = teachers.TeacherCache(path)
    for i in range(3):
        c.put(f"k{i}", "t", [{"role": "user", "content": str(i)}], f"answer {i}")
    c.close()
    with open(path, "ab") as f:
        f.write(b'{"key": "k3", "teacher": "t", "answ')  # killed mid-write
    with pytest.warns(UserWarning, match="line 4 is corrupt"):
        c = teachers.TeacherCache(path)
    assert len(c) == 3 and c.get("k2") == "answer 2" and "k3" not in c
    c.put("k3", "t", [], "answer 3")
    c.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = teachers.TeacherCache(path)
    assert len(c) == 4 and c.get("k3") == "answer 3"
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_cache_key_covers_teacher_prompt_and_sampling():
    m = [{"role": "user", "content": "2+2?"}]
    k = teachers.cache_key("openai:a", m, {"temperature": 0})
    assert k == teachers.cache_key("openai:a", [dict(m[0])], {"temperature": 0})
    assert k != teachers.cache_key("openai:b", m, {"temperature": 0})
    assert k != teachers.cache_key("openai:a", [{"role": "user", "content": "2+3?"}], {"temperature": 0})
    assert k != teachers.cache_key("openai:a", m, {"temperature": 1})


def test_function_teacher_reruns_from_the_cache(tmp_path):
    calls = []

    def fn(messages, spec):
        calls.append(messages)
        return solve(spec)[1]
    recs = generate("train", 5)
    dei1, _ = probes.build_dei(recs, teachers.make_teacher(fn, cache_path=tmp_path / "c.jsonl"), progress=False)
    n = len(calls)
    assert n > 50
    dei2, stats = probes.build_dei(recs, teachers.make_teacher(fn, cache_path=tmp_path / "c.jsonl"), progress=False)
    assert len(calls) == n and stats["teacher"]["cache_hits"] == n and dei1 == dei2


# -----------------------------------------------------------------------------
# the CLI: killed mid-run, then resumed


def cli(*args):
    return [sys.executable, "probes.py", "--no-progress", *args]


def test_cli_killed_mid_run_resumes_without_repeating_a_call(tmp_path):
    rules = "counterfactual,decompose,why"
    recs = generate("train", 12, seed=0)
    table = oracle_table(recs, rules.split(","))
    cache, out = tmp_path / "cache.jsonl", tmp_path / "dei.jsonl"
    args = cli("--dataset", "synth", "--limit", "12", "--rules", rules, "--out", str(out), "--teacher-cache",
               str(cache), "--teacher-model", "fake", "--teacher-concurrency", "4", "--teacher-timeout", "30",
               "--teacher-backoff", "0.01")
    with FakeOpenAI(answer_from(table), block_after=20) as srv:
        proc = subprocess.Popen(args + ["--teacher-url", srv.url], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while time.time() < deadline:  # wait until 20+ answers were given and all are cached
            n = srv.total_answered
            lines = len(cache.read_text().splitlines()) if cache.exists() else 0
            if n >= 20 and lines == n and len(srv.requests) > n:
                break
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail(f"the CLI did not get going: {proc.communicate()}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists()  # it really died mid-run
        first = srv.total_answered
        srv.block_after = None
        srv.gate.set()  # the requests that were blocked end without an answer
        r = subprocess.run(args + ["--teacher-url", srv.url], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert max(srv.answered.values()) == 1  # zero repeated successful calls across the kill
        assert f"{first} from the cache" in r.stdout
    dei = probes.load_dei(out, kept_only=False)
    assert len(dei) == 12 and all(d["kept"] for d in dei)
    assert all(p["teacher_reasoning"] == table[probes.format_question(p["question"], p["answer_type"])]
               for d in dei for p in d["probes"])


def test_cli_reports_a_teacher_error_cleanly(tmp_path):
    url = f"http://127.0.0.1:{dead_port()}/v1"
    r = subprocess.run(cli("--limit", "2", "--rules", "why", "--teacher-url", url, "--teacher-model", "m",
                           "--teacher-retries", "1", "--teacher-backoff", "0.01",
                           "--teacher-cache", str(tmp_path / "c.jsonl"),
                           "--out", str(tmp_path / "d.jsonl")), cwd=ROOT, capture_output=True, text=True)
    # found by the start-up check, before any question is read
    assert r.returncode == 1 and f"--teacher-url {url}: unreachable" in r.stderr and "Traceback" not in r.stderr


# -----------------------------------------------------------------------------
# a real dataset through the CLI, with the endpoint teacher


def strategyqa_teacher(recs):
    """A canned endpoint teacher for StrategyQA: right on every Q; as a probe writer it writes a
    probe for most rules, NOT APPLICABLE for compare, Q itself again for why (must be dropped),
    a probe stating the gold for hypothesis (must be marked reveals_answer); no final answer
    to necessity probes (reasoning_correct false)."""
    gold = {probes.format_question(r["question"], r["answer_type"]): r["answer"] for r in recs}

    def canned(messages):
        last = messages[-1]["content"]
        if last in gold:
            return f"Thinking about the facts. The answer is {gold[last]}."
        if last.startswith("You write explanatory probes"):
            rule = last.split("Rule: ", 1)[1].split("\n", 1)[0]
            q = last.split("Original question: ", 1)[1].split("\n", 1)[0]
            a = last.split("Gold answer: ", 1)[1].split("\n", 1)[0]
            return {"compare": "NOT APPLICABLE", "why": f"Probe: {q}",
                    "hypothesis": f"Probe: Someone claims the answer is {a}. Which fact would support it?",
                    }.get(rule, f"Sure.\nProbe: Which single fact matters most for the {rule} view of: {q}")
        if "(X)" in last:
            return "Working backwards. The answer is (A)."
        if "fact matters most for the necessity view" in last:
            return "Hard to say."
        return "Weighing it up. The answer is yes."
    return canned, gold


def test_cli_strategyqa_teacher_writes_the_probes_by_default(shared_data, tmp_path):
    from data.real import load_dataset
    recs = load_dataset("strategyqa", "train", data_dir=shared_data, limit=5)
    canned, gold = strategyqa_teacher(recs)
    out = tmp_path / "dei.jsonl"
    with FakeOpenAI(canned, every_fault_once, hang_s=HANG) as srv:
        r = subprocess.run(cli("--dataset", "strategyqa", "--limit", "5", "--data-dir", str(shared_data),
                               "--teacher-url", srv.url, "--teacher-model", "fake",
                               "--teacher-timeout", str(FAST["timeout"]), "--teacher-backoff", "0.01",
                               "--teacher-cache", str(tmp_path / "c.jsonl"), "--out", str(out)),
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert max(srv.answered.values()) == 1
        asked = [json.loads(k)[-1]["content"] for k, _, _ in srv.requests]
        assert sum(a.startswith("You write explanatory probes") for a in set(asked)) == 5 * len(probes.RULES)
        dialogues = [json.loads(k) for k, _, _ in srv.requests if len(json.loads(k)) == 3]
        assert dialogues and all([m["role"] for m in d] == ["user", "assistant", "user"] for d in dialogues)
        assert all(d[-1]["content"] in gold for d in dialogues)  # ... and each ends with the original Q
    dei = probes.load_dei(out, kept_only=False)
    assert len(dei) == 5 and all(d["reasoning_source"] == "dataset" for d in dei)  # Gemini's reasoning shipped
    assert any(d["kept"] for d in dei)
    ps = [p for d in dei for p in d["probes"]]
    assert {p["rule"] for p in ps} == set(probes.RULES) - {"compare", "why"}  # n/a, and Q asked again
    assert all(p["writer"] == "teacher" and p["teacher_reasoning"] for p in ps)
    assert all(p["reveals_answer"] is (p["rule"] == "hypothesis") for p in ps)  # "the answer is <gold>"
    assert all(p["reasoning_correct"] is (p["rule"] != "necessity") for p in ps)  # no answer given
    assert not any(p["kept"] for p in ps if p["rule"] == "necessity")
    assert all(p not in probes.rl_probes(d) for d in dei for p in d["probes"] if p["rule"] == "hypothesis")
    table = r.stdout
    assert re.search(r"^why +teacher +0 +5 +0 ", table, re.MULTILINE), table
    assert re.search(r"^necessity +teacher +5 +0 +5 +5 +0 +0 +0 ", table, re.MULTILINE), table
    assert re.search(r"^hypothesis +teacher +5 +0 +5 +0 +0 +5 +0 ", table, re.MULTILINE), table
    wrong_q = sum(not d["reasoning_correct"] for d in dei)  # Gemini's shipped reasoning, checked too
    assert f"{wrong_q} of 5 questions, 5 of 40 probes" in table, table


def test_cli_strategyqa_templates_write_only_real_probes(shared_data, tmp_path):
    """--probe-writer template on text: rules that could only ask Q again write nothing."""
    from data.real import load_dataset
    recs = load_dataset("strategyqa", "train", data_dir=shared_data, limit=5)
    canned, _ = strategyqa_teacher(recs)
    out = tmp_path / "dei.jsonl"
    with FakeOpenAI(canned) as srv:
        r = subprocess.run(cli("--dataset", "strategyqa", "--limit", "5", "--data-dir", str(shared_data),
                               "--teacher-url", srv.url, "--teacher-model", "fake", "--probe-writer", "template",
                               "--teacher-cache", "none", "--out", str(out)), cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
    dei = probes.load_dei(out, kept_only=False)
    ps = [p for d in dei for p in d["probes"]]
    assert {p["rule"] for p in ps} == {"counterfactual", "challenge", "reverse"}
    for d in dei:
        for p in d["probes"]:
            assert p["writer"] == "template" and isinstance(p["reveals_answer"], bool)
            assert p["question"].strip() != d["question"].strip()
            if not p["reveals_answer"]:  # an RL probe is never graded with Q's own answer
                assert p["answer"] is None and p["rule"] in ("counterfactual", "challenge"), p
    for rule in ("decompose", "why", "cause_effect", "process", "compare", "hypothesis", "necessity"):
        assert re.search(rf"^{rule} +template +0 +5 +0 ", r.stdout, re.MULTILINE), r.stdout


# -----------------------------------------------------------------------------
# one cache per teacher, shared by every train.py run and probes.py


def write_strategyqa(root, n_train):
    """A small StrategyQA copy: n_train training questions (gold yes, reasoning shipped), 2 test."""
    d = root / "strategyqa" / "revthink"
    (d / "training_data").mkdir(parents=True)
    (d / "test_data").mkdir(parents=True)
    train = [{"question": f"Would a {w} fit in a shoebox?", "gold_answer": True,
              "forward_reasoning": f"A {w} is small. The answer is yes."} for w in ("mouse", "ring", "pen", "key")]
    (d / "training_data" / "SQA.json").write_text(json.dumps(train[:n_train]))
    (d / "test_data" / "SQA_test.json").write_text(json.dumps(train[:2]))
    return [{"question": r["question"], "answer": "yes", "answer_type": "yesno"} for r in train[:n_train]]


def test_train_runs_and_probes_share_one_teacher_cache(tmp_path, monkeypatch):
    """A second train.py run asks the endpoint nothing it answered before (another run folder,
    more questions: only the new question is asked), probes.py neither; another teacher model or
    other sampling never reuses the answers. Cache lines record the teacher and the sampling."""
    import train
    monkeypatch.setenv(teachers.CACHE_ENV_VAR, str(tmp_path / "not-this-one"))  # --teacher-cache wins
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    recs = write_strategyqa(data_dir, 4)
    canned, _ = strategyqa_teacher(recs)

    def run(srv, n, out, *extra):
        before = len(srv.requests)
        train.main(["--student", "tiny", "--dataset", "strategyqa", "--data-dir", str(data_dir), "--train-n", str(n),
                    "--eval-n", "1", "--no-zero-shot", "--no-sft", "--no-rl", "--teacher-url", srv.url,
                    "--teacher-model", "fake", "--teacher-cache", str(cache), "--teacher-timeout", "5",
                    "--teacher-backoff", "0.01", "--out", str(tmp_path / out), *extra])
        return [json.loads(k) for k, _, _ in srv.requests[before:]]

    with FakeOpenAI(canned) as srv:
        first = run(srv, 3, "run1")
        assert len(first) > 3 * len(probes.RULES)     # a probe writer per rule, then the probes and their consistency checks
        assert run(srv, 3, "run2") == []                    # a new run folder: every answer from the cache
        new = run(srv, 4, "run3")                           # one more question: only it is asked
        seen = [r["question"] for r in recs if any(r["question"] in json.dumps(m) for m in first)]
        (added,) = [r["question"] for r in recs if r["question"] not in seen]   # (a seeded draw: a superset)
        assert len(seen) == 3 and new and all(added in json.dumps(m) for m in new)
        assert not any(q in json.dumps(m) for m in new for q in seen)
        before = len(srv.requests)
        assert probes.main(["--dataset", "strategyqa", "--data-dir", str(data_dir), "--limit", "4", "--no-progress",
                            "--teacher-url", srv.url, "--teacher-model", "fake", "--teacher-cache", str(cache),
                            "--out", str(tmp_path / "dei.jsonl")]) == 0
        assert len(srv.requests) == before                  # probes.py: the same cache, nothing asked
        assert len(run(srv, 1, "run4", "--teacher-max-tokens", "64")) > 0   # other sampling: asked again
        srv.answered.clear()
        assert len(run(srv, 1, "run5", "--teacher-model", "fake-2")) > 0    # another teacher: asked again
    assert max(srv.answered.values()) == 1
    files = sorted(cache.iterdir())
    assert len(files) == 2 and not (tmp_path / "not-this-one").exists()  # one file per teacher
    lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    assert {(x["teacher"], x["sampling"]["max_tokens"]) for x in lines} == \
        {("openai:fake", 1024), ("openai:fake", 64), ("openai:fake-2", 1024)}
    assert all(x["key"] == teachers.cache_key(x["teacher"], x["messages"], x["sampling"]) for x in lines)
    assert not any((tmp_path / f"run{i}" / "teacher_cache.jsonl").exists() for i in range(1, 6))


def test_deadline_bounds_one_prompt_over_all_its_tries(tmp_path):
    """A hung server: without a deadline 7 tries x 5 s; with --teacher-deadline 1 the prompt gives up
    after about a second, with a message naming the flag."""
    with FakeOpenAI(lambda m: "x", lambda m, a: "hang", hang_s=3.0) as srv:
        teacher = teachers.make_teacher(url=srv.url, model="fake", timeout=5.0, retries=6, backoff=0.01, deadline=1.0)
        t0 = time.time()
        with pytest.raises(teachers.TeacherError, match=r"after 1 tries within the 1 s deadline \(--teacher-deadline\)"):
            teacher.answer(["Is it?"])
        assert time.time() - t0 < 3.0   # bounded by the deadline, not by 7 x the 5 s timeout


def test_two_processes_append_to_one_cache_without_mixing_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    code = ("import sys, teachers; c = teachers.TeacherCache(sys.argv[1]); "
            "[c.put(f'{sys.argv[2]}{i}', 't', [], sys.argv[2] * 5000, {}) for i in range(100)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), tag], cwd=ROOT) for tag in "ab"]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # not one line cut or glued to another
        c = teachers.TeacherCache(path)
    assert len(c) == 200 and c.get("a7") == "a" * 5000 and c.get("b99") == "b" * 5000


def test_sft_skips_the_wrong_shipped_reasoning_of_a_real_dataset(shared_data, capsys):
    """StrategyQA's training file ships Gemini's reasoning; where its answer misses the gold (e.g.
    strategyqa-train-4 ends 'I cannot provide a yes or no answer'), EI marks it reasoning_correct
    false and SFT leaves it out, counted."""
    import argparse
    import train
    from data.real import load_dataset
    from rewards import is_correct
    recs = load_dataset("strategyqa", "train", data_dir=shared_data, limit=20)
    canned, _ = strategyqa_teacher(recs)
    dei, _ = probes.build_dei(recs, teachers.make_teacher(lambda m, s: canned(m)), probe_writer="template",
                              progress=False)
    wrong = {r["id"] for r in recs if not is_correct(r["reasoning"], r["answer"], r["answer_type"], r["question"])}
    assert "strategyqa-train-4" in wrong and len(wrong) < len(recs)
    assert {d["id"] for d in dei if not d["reasoning_correct"]} == wrong
    capsys.readouterr()
    pairs = train.sft_examples(argparse.Namespace(seed=0, sft_probes=0, sft_dialogues=0, k=3), recs, dei)
    taught = {turns[0][1] for turns in pairs}
    assert taught == {d["reasoning"] for d in dei if d["id"] not in wrong}
    assert f"SFT: {len(recs) - len(wrong)} examples; {len(wrong)} teacher answers skipped as wrong" in \
        capsys.readouterr().out


# -----------------------------------------------------------------------------
# the default path: no --teacher-cache flag at all


def _probes_cli_twice(tmp_path, env):
    """probes.py twice on 3 synthetic questions against one fake endpoint, no --teacher-cache:
    -> (requests of the first run, requests of the second run, stdout of the second)."""
    import os
    rules = "counterfactual,why"
    recs = generate("train", 3, seed=0)
    table = oracle_table(recs, rules.split(","))
    counts, out2 = [], ""
    with FakeOpenAI(answer_from(table)) as srv:
        for i in range(2):
            before = len(srv.requests)
            r = subprocess.run(cli("--limit", "3", "--rules", rules, "--teacher-url", srv.url, "--teacher-model",
                                   "fake", "--out", str(tmp_path / f"dei{i}.jsonl")),
                               cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **env})
            assert r.returncode == 0, r.stderr
            counts.append(len(srv.requests) - before)
            out2 = r.stdout
    return counts[0], counts[1], out2


def test_teacher_answers_are_cached_by_default_in_the_user_cache_folder(tmp_path):
    """No --teacher-cache and no $EXGRPO_TEACHER_CACHE: the answers go to
    $XDG_CACHE_HOME/exgrpo/teacher and the second run asks the endpoint nothing."""
    xdg = tmp_path / "xdg"
    first, second, out = _probes_cli_twice(tmp_path, {"XDG_CACHE_HOME": str(xdg), teachers.CACHE_ENV_VAR: ""})
    assert first > 0 and second == 0
    assert f"0 answers asked, {first} from the cache" in out
    files = list((xdg / "exgrpo" / "teacher").iterdir())
    assert len(files) == 1 and files[0].name.startswith("openai_fake-")
    assert len(files[0].read_text().splitlines()) == first


def test_teacher_cache_env_var_names_the_default_folder(tmp_path):
    """$EXGRPO_TEACHER_CACHE, when set, is where the default cache lives (not the XDG folder)."""
    where, xdg = tmp_path / "shared-cache", tmp_path / "xdg"
    first, second, _ = _probes_cli_twice(tmp_path, {teachers.CACHE_ENV_VAR: str(where), "XDG_CACHE_HOME": str(xdg)})
    assert first > 0 and second == 0
    assert len(list(where.iterdir())) == 1 and not xdg.exists()


def test_teacher_cache_none_opts_out(tmp_path):
    import argparse
    t = teachers.make_teacher(url="http://127.0.0.1:1/v1", model="m")
    args = argparse.Namespace(teacher_cache="none")
    assert teachers.cache_path(args, t) is None
    args.teacher_cache = None
    assert teachers.cache_path(args, t) == teachers.cache_file(teachers.cache_dir(), "openai:m")


# -----------------------------------------------------------------------------
# the start-up check of an endpoint: one short request, one line naming the flag


def test_ping_names_the_flag_for_each_way_an_endpoint_can_be_wrong():
    dead = teachers.make_teacher(url=f"http://127.0.0.1:{dead_port()}/v1", model="fake")
    with pytest.raises(teachers.TeacherError, match=r"^--teacher-url http://127\.0\.0\.1:\d+/v1: unreachable"):
        dead.ping()
    with FakeOpenAI(lambda m: "x", models=("served-a", "served-b")) as srv:
        with pytest.raises(teachers.TeacherError, match=r"^--teacher-model typo: .* serves served-a, served-b$"):
            teachers.make_teacher(url=srv.url, model="typo").ping()
        teachers.make_teacher(url=srv.url, model="served-b").ping()   # fine: no error
        assert srv.requests == [] and len(srv.gets) == 2               # no chat completion was asked
    with FakeOpenAI(lambda m: "x", key="sk-right") as srv:
        with pytest.raises(teachers.TeacherError, match=r"the key was rejected \(HTTP 401\); set \$EXGRPO_TEACHER_KEY"):
            teachers.make_teacher(url=srv.url, model="fake", key="sk-wrong").ping()
        teachers.make_teacher(url=srv.url, model="fake", key="sk-right").ping()
        assert srv.gets[-1][1] == "Bearer sk-right"


def test_ping_falls_back_to_one_token_when_the_server_has_no_models_route():
    """A server without GET /models (404): one chat request of max_tokens 1; a 404 there names the model."""
    with FakeOpenAI(lambda m: "pong", models=None) as srv:
        teachers.make_teacher(url=srv.url, model="anything").ping()
        assert len(srv.requests) == 1 and json.loads(srv.requests[0][0])[0]["content"] == "ping"
    with FakeOpenAI(lambda m: "pong", lambda m, a: "404", models=None) as srv:
        with pytest.raises(teachers.TeacherError, match=r"^--teacher-model nope: .* refused it \(HTTP 404"):
            teachers.make_teacher(url=srv.url, model="nope").ping()


@pytest.mark.parametrize("script", ["probes.py", "train.py"])
def test_a_dead_endpoint_stops_the_cli_in_seconds_before_anything_loads(tmp_path, script):
    """Unreachable --teacher-url: exit with one line naming the flag in < 10 s; train.py makes no
    run folder (nothing evaluated, no model loaded)."""
    url = f"http://127.0.0.1:{dead_port()}/v1"
    out = tmp_path / "run"
    extra = ["--student", "tiny", "--out", str(out)] if script == "train.py" else ["--out", str(tmp_path / "d.jsonl")]
    t0 = time.time()
    r = subprocess.run([sys.executable, script, "--teacher-url", url, "--teacher-model", "fake", *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    took = time.time() - t0
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and f"--teacher-url {url}: unreachable" in lines[0], r.stderr
    assert took < 10, took
    assert not out.exists()


def test_train_checks_the_model_name_before_the_zero_shot_evaluation(tmp_path):
    import train
    with FakeOpenAI(lambda m: "x") as srv:
        with pytest.raises(SystemExit, match=r"--teacher-model typo: .* serves fake, fake-2"):
            train.main(["--student", "tiny", "--teacher-url", srv.url, "--teacher-model", "typo",
                        "--out", str(tmp_path / "run")])
        assert srv.requests == []
    assert not (tmp_path / "run").exists()


def test_the_teacher_bar_moves_with_every_answer_not_once_per_chunk(monkeypatch):
    """build_dei ticks its teacher bar once per answer as it arrives, inside one chunk of
    questions (the question bar moves once per chunk); the callback is removed afterwards."""
    recs = generate("train", 4, seed=0)
    table = oracle_table(recs, ["why"])
    teacher = teachers.make_teacher(lambda m, s: table[m[-1]["content"]])
    ticks, tick = [], teachers.Teacher._tick
    monkeypatch.setattr(teachers.Teacher, "_tick", lambda self, n=1: (ticks.append(n), tick(self, n)))
    probes.build_dei(recs, teacher, rules=["why"], chunk=256, progress=True)
    assert teacher.calls > 4 and ticks.count(1) == teacher.calls   # one tick per answer, not one per chunk
    assert teacher.on_answer is None


def test_probes_and_train_ask_with_the_same_budget_so_they_share_the_cache(shared_data, tmp_path):
    """On a real dataset both derive the teacher's budget from its rationales (presets.data_budgets):
    answers probes.py caches are the ones train.py looks up (the budget is part of the key)."""
    import train
    from data.real import load_dataset
    recs = load_dataset("strategyqa", "train", data_dir=shared_data, limit=2)
    canned, _ = strategyqa_teacher(recs)
    cache = tmp_path / "c.jsonl"
    with FakeOpenAI(canned) as srv:
        assert probes.main(["--dataset", "strategyqa", "--data-dir", str(shared_data), "--limit", "2",
                            "--no-progress", "--probe-writer", "template", "--teacher-url", srv.url,
                            "--teacher-model", "fake", "--teacher-cache", str(cache),
                            "--out", str(tmp_path / "d.jsonl")]) == 0
    sampled = {json.loads(x)["sampling"]["max_tokens"] for x in cache.read_text().splitlines()}
    for student in ("smollm2-135m", "tiny", "gemma-7b"):
        a = train.get_args(["--student", student, "--dataset", "strategyqa", "--data-dir", str(shared_data),
                            "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "fake"])
        assert sampled == {a.teacher_max_tokens} != {teachers.TEACHER_MAX_TOKENS}
