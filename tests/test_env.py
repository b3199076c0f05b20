"""Every environment variable the project reads, each tested for the effect it promises (issue #33).

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_env.py

Where each one is read, and where its test lives:
  EXGRPO_CACHE          models.py      converted checkpoints and tokenizers      here
  EXGRPO_DATA_DIR       data/real.py   where the datasets are read               test_datasets.py
                        data/download.py  where they are downloaded to           here
  EXGRPO_DATA_BASE_URL  data/download.py  the mirror files are fetched from      here
  XDG_CACHE_HOME        data/real.py   the default data folder                   here
                        teachers.py    the default teacher cache folder          here (+ test_teachers.py, CLI)
  EXGRPO_TEACHER_CACHE  teachers.py    the shared teacher cache folder           here (+ test_teachers.py, CLI)
  EXGRPO_TEACHER_KEY,   teachers.py    the endpoint's key, sent as a Bearer      here (+ test_teachers.py: a
  OPENAI_API_KEY                       header; the first one set wins             wrong EXGRPO_TEACHER_KEY)
  HF_HUB_CACHE          models.py      the hub cache the presets read configs in test_presets.py
  HF_HUB_OFFLINE        models.py      named in the error of a student not found here
(bench/ reads OMP_NUM_THREADS, tested in test_ablation.py, and OUT, a --out-dir default.)

Module-level reads (EXGRPO_CACHE, XDG_CACHE_HOME in data/real.py) happen at import: those tests run
a fresh interpreter. The rest are read at call time and are tested in this process.
"""
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import teachers
from data import download, real
from fake_openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(timeout=5, retries=0, backoff=0.0, concurrency=1)


def _fresh_python(code, env):
    """Run `code` in a new interpreter in the repository with exactly these variables (+ PATH and
    offline flags); returns its stdout parsed as JSON."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])

# -----------------------------------------------------------------------------
# EXGRPO_CACHE, XDG_CACHE_HOME: folders read at import


def test_exgrpo_cache_is_where_converted_models_are_read_and_written(tmp_path, tok):
    """Catches: $EXGRPO_CACHE ignored (the converted SmolLM2 tokenizer, and every converted student,
    taken from or written to the checkout's .cache instead). A tokenizer saved under
    $EXGRPO_CACHE/smollm2-135m-tokenizer with a marker (model_max_length 4242) is the one
    models.smollm2_tokenizer() loads; without the variable, the folder is the checkout's .cache."""
    cache = tmp_path / "cache"
    tok.save_pretrained(cache / "smollm2-135m-tokenizer")
    cfg = cache / "smollm2-135m-tokenizer" / "tokenizer_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "model_max_length": 4242}))
    code = ("import json, models; t = models.smollm2_tokenizer(); "
            "print(json.dumps([str(models.CACHE_DIR), t.model_max_length]))")
    assert _fresh_python(code, {"EXGRPO_CACHE": str(cache), "HOME": str(tmp_path)}) == [str(cache), 4242]
    code = "import json, models; print(json.dumps(str(models.CACHE_DIR)))"
    assert _fresh_python(code, {"HOME": str(tmp_path)}) == str(ROOT / ".cache")


def test_xdg_cache_home_is_the_default_data_folder(tmp_path):
    """Catches: $XDG_CACHE_HOME ignored for the datasets (data/real.py and data/download.py): with it
    set, the default folder is $XDG_CACHE_HOME/exgrpo/data, the one read when it exists (and
    $EXGRPO_DATA_DIR is unset); without it, ~/.cache/exgrpo/data."""
    xdg = tmp_path / "xdg"
    (xdg / "exgrpo" / "data").mkdir(parents=True)
    code = ("import json; from data import real, download; "
            "print(json.dumps([str(real.USER_DATA_DIR), str(download.USER_DATA_DIR), str(real.resolve_data_dir())]))")
    want = str(xdg / "exgrpo" / "data")
    assert _fresh_python(code, {"XDG_CACHE_HOME": str(xdg), "HOME": str(tmp_path / "home")}) == [want] * 3
    code = "import json; from data import real; print(json.dumps(str(real.USER_DATA_DIR)))"
    assert _fresh_python(code, {"HOME": str(tmp_path / "home")}) == str(tmp_path / "home" / ".cache" / "exgrpo" / "data")

# -----------------------------------------------------------------------------
# EXGRPO_DATA_BASE_URL, EXGRPO_DATA_DIR: where data.download fetches from and writes to


class _Files(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def mirror(monkeypatch):
    """A local mirror in GitHub's raw layout serving one small file, and a manifest of that file alone."""
    import hashlib
    body = b'[{"question": "Is the sky blue?", "gold_answer": true}]'
    f = download.File("tiny/revthink/test.json", "owner/repo/" + "0" * 40, "data/test.json", len(body),
                      hashlib.sha256(body).hexdigest(), False)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    srv.files, srv.hits = {f"/{f.source}/{f.src}": body}, []
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setattr(download, "select", lambda only=None, optional=False: [f])
    yield f"http://127.0.0.1:{srv.server_address[1]}", f, body, srv
    srv.shutdown()
    srv.server_close()


def test_data_base_url_is_the_mirror_files_come_from(mirror, monkeypatch, tmp_path):
    """Catches: $EXGRPO_DATA_BASE_URL ignored (files fetched from GitHub: offline, every one fails),
    or winning over --base-url. With it set (a trailing slash too), url_of and the download use it."""
    url, f, body, srv = mirror
    monkeypatch.setenv(download.BASE_ENV, url + "/")
    assert download.url_of(f) == f"{url}/{f.source}/{f.src}"
    assert download.url_of(f, "http://flag.example") == f"http://flag.example/{f.source}/{f.src}"   # the flag wins
    r = download.download(tmp_path / "d", progress=False, retries=1)
    assert r == {"downloaded": [f.path], "skipped": [], "failed": []}
    assert srv.hits == [f"/{f.source}/{f.src}"] and (tmp_path / "d" / f.path).read_bytes() == body
    monkeypatch.delenv(download.BASE_ENV)
    assert download.url_of(f) == f"{download.BASE_URL}/{f.source}/{f.src}"


def test_data_dir_is_where_data_download_writes(mirror, monkeypatch, tmp_path, capsys):
    """Catches: $EXGRPO_DATA_DIR ignored by data.download (the files land in ~/.cache/exgrpo/data
    while the loaders read $EXGRPO_DATA_DIR), in download() and in the command line, and --data-dir
    not winning over it."""
    url, f, body, srv = mirror
    monkeypatch.setenv(download.BASE_ENV, url)
    monkeypatch.setenv(real.ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setattr(download, "USER_DATA_DIR", tmp_path / "user")   # never the real ~/.cache
    assert download.download(progress=False, retries=1)["downloaded"] == [f.path]
    assert (tmp_path / "env" / f.path).read_bytes() == body
    (tmp_path / "env" / f.path).unlink()
    assert download.main(["--no-progress"]) == 0
    assert (tmp_path / "env" / f.path).read_bytes() == body
    assert f"in {tmp_path / 'env'}" in capsys.readouterr().out
    assert download.main(["--no-progress", "--data-dir", str(tmp_path / "flag")]) == 0
    assert (tmp_path / "flag" / f.path).read_bytes() == body and not (tmp_path / "user").exists()

# -----------------------------------------------------------------------------
# EXGRPO_TEACHER_KEY, OPENAI_API_KEY: the endpoint's key


def _auth_sent(monkeypatch, env, key=None):
    """The Authorization headers an endpoint teacher sends (one chat request, one ping) with these
    variables set ("" = set but empty, None = unset)."""
    for name in teachers.KEY_ENV_VARS:
        if env.get(name) is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, env[name])
    with FakeOpenAI(lambda m: "The answer is 4.") as srv:
        t = teachers.make_teacher(url=srv.url, model="fake", key=key, **FAST)
        assert t.answer(["What is 2 + 2?"]) == ["The answer is 4."]
        t.ping()
        return [a for _, _, a in srv.requests] + [a for _, a in srv.gets]


def test_teacher_key_from_the_environment_is_sent_as_a_bearer_header(monkeypatch):
    """Catches: a key variable not read, read in the wrong order, an empty one taken, or the header
    missing from the chat requests or the start-up ping. The first of EXGRPO_TEACHER_KEY,
    OPENAI_API_KEY that is set and non-empty is sent; an explicit key wins; none: no header."""
    assert _auth_sent(monkeypatch, {"OPENAI_API_KEY": "sk-openai"}) == ["Bearer sk-openai"] * 2
    assert _auth_sent(monkeypatch, {"EXGRPO_TEACHER_KEY": "sk-exgrpo"}) == ["Bearer sk-exgrpo"] * 2
    both = {"EXGRPO_TEACHER_KEY": "sk-exgrpo", "OPENAI_API_KEY": "sk-openai"}
    assert _auth_sent(monkeypatch, both) == ["Bearer sk-exgrpo"] * 2
    assert _auth_sent(monkeypatch, {"EXGRPO_TEACHER_KEY": "", "OPENAI_API_KEY": "sk-openai"}) == ["Bearer sk-openai"] * 2
    assert _auth_sent(monkeypatch, both, key="sk-flag") == ["Bearer sk-flag"] * 2
    assert _auth_sent(monkeypatch, {}) == [None, None]

# -----------------------------------------------------------------------------
# EXGRPO_TEACHER_CACHE, XDG_CACHE_HOME: the shared teacher cache


def test_teacher_cache_folder_from_the_environment(monkeypatch, tmp_path):
    """Catches: $EXGRPO_TEACHER_CACHE ignored, an empty one taken as the folder, $XDG_CACHE_HOME
    ignored. Order: $EXGRPO_TEACHER_CACHE, else $XDG_CACHE_HOME/exgrpo/teacher, else
    ~/.cache/exgrpo/teacher."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(teachers.CACHE_ENV_VAR, str(tmp_path / "shared"))
    assert teachers.cache_dir() == tmp_path / "shared"
    monkeypatch.setenv(teachers.CACHE_ENV_VAR, "")
    assert teachers.cache_dir() == tmp_path / "xdg" / "exgrpo" / "teacher"
    monkeypatch.delenv(teachers.CACHE_ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert teachers.cache_dir() == tmp_path / "home" / ".cache" / "exgrpo" / "teacher"


def test_teacher_answers_go_to_the_env_cache_and_are_not_asked_twice(monkeypatch, tmp_path):
    """Catches: $EXGRPO_TEACHER_CACHE ignored by the flags' path (from_args without --teacher-cache):
    the answers land in one file under it, and a second teacher built from the same flags answers
    from that file without a request."""
    import argparse
    monkeypatch.setenv(teachers.CACHE_ENV_VAR, str(tmp_path / "shared"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ap = argparse.ArgumentParser()
    teachers.add_arguments(ap)
    with FakeOpenAI(lambda m: f"The answer is {len(m[-1]['content'])}.") as srv:
        args = ap.parse_args(["--teacher-url", srv.url, "--teacher-model", "fake", "--teacher-retries", "0"])
        first = teachers.from_args(args).answer(["a", "bb"])
        files = list((tmp_path / "shared").iterdir())
        assert len(files) == 1 and len(files[0].read_text().splitlines()) == 2
        n = len(srv.requests)
        again = teachers.from_args(args)
        assert again.answer(["a", "bb"]) == first == ["The answer is 1.", "The answer is 2."]
        assert len(srv.requests) == n == 2 and not (tmp_path / "xdg").exists()

# -----------------------------------------------------------------------------
# HF_HUB_OFFLINE: named in the error of a student that cannot be loaded


def test_hf_hub_offline_is_named_when_a_student_is_not_found(monkeypatch):
    """Catches: the error of a hub id not in the local cache hiding that the hub was off
    ($HF_HUB_OFFLINE=1): the one line says offline=1 and how to download the model once."""
    import models
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as e:
        models.load_student("exgrpo-tests/no-such-model", device="cpu", dtype="fp32")
    assert "(offline=1)" in str(e.value) and "hf download exgrpo-tests/no-such-model" in str(e.value)
