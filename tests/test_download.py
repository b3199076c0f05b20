"""Tests of data/download.py, offline: the manifest against ../shared/data, and the downloader
against a local http.server that serves ../shared/data in the sources' URL layout
(/{owner}/{repo}/{commit}/{path}) and can cut or corrupt a file on request.

    python -m pytest -q tests/test_download.py
"""
import hashlib
import re
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data import download
from data.download import MANIFEST, RETRIES, fetch, select, url_of

ROOT = Path(__file__).resolve().parent.parent
SMALL = "strategyqa,date_understanding"  # 8 files, 1.8 MB: enough to see every path of the code


# -----------------------------------------------------------------------------
# the manifest


def test_manifest_checksums_and_sizes_match_shared_data(shared_data):
    on_disk = {str(p.relative_to(shared_data)) for p in shared_data.rglob("*") if p.is_file()} - {"README.md"}
    required = [f for f in MANIFEST if not f.optional]
    assert {f.path for f in required} == on_disk  # every file of the copy, and nothing else
    for f in required:
        data = (shared_data / f.path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f.size, f.sha256), f.path


def test_manifest_urls_are_pinned_github_raw_urls(shared_data, monkeypatch):
    monkeypatch.delenv(download.BASE_ENV, raising=False)
    readme = (shared_data / "README.md").read_text(encoding="utf-8")
    for f in MANIFEST:
        url = url_of(f)
        m = re.fullmatch(r"https://raw\.githubusercontent\.com/([\w.-]+/[\w.-]+)/([0-9a-f]{40})/(.+)", url)
        assert m, url
        repo, commit, path = m.groups()
        assert path == f.src and Path(f.path).name == Path(path).name or f.optional, url  # names unchanged
        if repo != "openai/grade-school-math":  # the copy's README names every other commit
            assert commit[:7] in readme and repo in readme, url
    assert len({f.path for f in MANIFEST}) == len(MANIFEST)
    optional = {f.path for f in MANIFEST if f.optional}
    assert {"math/revthink/test_data/MATH_test.json"} < optional and len(optional) == 5
    assert all(f.size is None and f.sha256 is None for f in MANIFEST if f.optional)


def test_select_by_folder_and_optional():
    assert {f.path.split("/")[0] for f in select("gsm8k, strategyqa")} == {"gsm8k", "strategyqa"}
    assert not any(f.optional for f in select())
    assert [f.path for f in select("math", optional=True) if f.optional] == [
        "math/revthink/test_data/MATH_test.json", "math/revthink/training_data_augmented/MATH.json"]
    with pytest.raises(ValueError, match="unknown dataset folder.*sqa.*strategyqa"):
        select("sqa")


# -----------------------------------------------------------------------------
# a local server in GitHub's raw layout


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        srv.hits[self.path] += 1
        src = srv.routes.get(self.path)
        if src is None:
            self.send_error(404)
            return
        dest = srv.dest_of.get(self.path)
        if dest is not None and srv.watch and dest.exists():
            srv.seen_final.append(self.path)  # a file under its final name while it is still being fetched
        body = src.read_bytes()
        fault = srv.faults[self.path].pop(0) if srv.faults.get(self.path) else None
        if fault == "corrupt":
            body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)  # HTTP/1.0: then it closes

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(shared_data, tmp_path):
    """http://127.0.0.1:PORT serving every manifest file at /{owner}/{repo}/{commit}/{path}."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.routes = {"/" + f"{f.source}/{f.src}": shared_data / f.path for f in MANIFEST if not f.optional}
    srv.dest_of = {"/" + f"{f.source}/{f.src}": tmp_path / "data" / f.path for f in MANIFEST}
    srv.hits, srv.faults, srv.seen_final, srv.watch = Counter(), {}, [], True
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _route(srv, path):
    f = next(f for f in MANIFEST if f.path == path)
    return "/" + f"{f.source}/{f.src}"


def _same_bytes(a, b):
    return a.read_bytes() == b.read_bytes()


# -----------------------------------------------------------------------------
# the downloader


def test_fetches_then_skips_on_a_second_run(server, shared_data, tmp_path):
    out = tmp_path / "data"
    r = download.download(out, only=SMALL, base_url=server.url, progress=False, backoff=0)
    files = select(SMALL)
    assert len(files) == 8 and sorted(r["downloaded"]) == sorted(f.path for f in files) and not r["failed"]
    assert all(_same_bytes(out / f.path, shared_data / f.path) for f in files)
    assert sum(server.hits.values()) == 8 and not server.seen_final
    assert not list(out.rglob("*.part"))
    r = download.download(out, only=SMALL, base_url=server.url, progress=False, backoff=0)
    assert len(r["skipped"]) == 8 and not r["downloaded"] and sum(server.hits.values()) == 8  # nothing asked again


def test_a_changed_local_file_is_fetched_again(server, shared_data, tmp_path):
    path = "date_understanding/revthink/test_data/Date_test.json"
    dest = tmp_path / "data" / path
    dest.parent.mkdir(parents=True)
    dest.write_text("[]")
    r = download.download(tmp_path / "data", only="date_understanding", base_url=server.url, progress=False)
    assert path in r["downloaded"] and _same_bytes(dest, shared_data / path)


@pytest.mark.parametrize("fault", ["truncate", "corrupt"])
def test_recovers_from_a_file_served_cut_or_corrupted(server, shared_data, tmp_path, fault):
    path = "strategyqa/revthink/test_data/SQA_test.json"
    route = _route(server, path)
    server.faults[route] = [fault]  # the first try is bad, the second good
    f = next(f for f in MANIFEST if f.path == path)
    status, note = fetch(f, tmp_path / "data", server.url, backoff=0)
    assert status == "downloaded" and server.hits[route] == 2 and not server.seen_final
    assert _same_bytes(tmp_path / "data" / path, shared_data / path)
    assert not (tmp_path / "data" / (path + ".part")).exists()


@pytest.mark.parametrize("fault, reason", [("truncate", "truncated: got 33086 of 66173 bytes"),
                                           ("corrupt", "checksum mismatch")])
def test_a_file_bad_on_every_try_is_one_clear_line_and_the_others_complete(server, tmp_path, fault, reason):
    path = "strategyqa/revthink/test_data/SQA_test.json"
    route = _route(server, path)
    server.faults[route] = [fault] * RETRIES
    r = download.download(tmp_path / "data", only=SMALL, base_url=server.url, progress=False, backoff=0)
    assert len(r["downloaded"]) == 7 and len(r["failed"]) == 1 and server.hits[route] == RETRIES
    line = r["failed"][0]
    assert "\n" not in line and line.startswith(path) and server.url + route in line and reason in line
    assert f"after {RETRIES} tries" in line
    assert not (tmp_path / "data" / path).exists() and not list((tmp_path / "data").rglob("*.part"))


def test_missing_and_unreachable_sources_are_clear_errors(server, tmp_path):
    path = "date_understanding/revthink/test_data/Date_test.json"
    del server.routes[_route(server, path)]  # the server answers 404
    r = download.download(tmp_path / "a", only="date_understanding", base_url=server.url, progress=False, backoff=0)
    assert len(r["failed"]) == 1 and "HTTP 404" in r["failed"][0] and server.hits[_route(server, path)] == 1
    # nothing listens on the port of a closed server
    dead = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    dead_url = f"http://127.0.0.1:{dead.server_address[1]}"
    dead.server_close()
    f = select("date_understanding")[0]
    status, note = fetch(f, tmp_path / "b", dead_url, retries=2, backoff=0)
    assert status == "failed" and "unreachable" in note and dead_url in note and "after 2 tries" in note
    assert not (tmp_path / "b" / f.path).exists()


def test_an_interrupted_download_leaves_no_file_under_the_final_name(server, shared_data, tmp_path, monkeypatch):
    f = select("date_understanding")[0]
    real_get = download._get

    def killed(url, part, bar):  # writes half the bytes, then the process is "killed"
        Path(part).write_bytes((shared_data / f.path).read_bytes()[: f.size // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_get", killed)
    with pytest.raises(KeyboardInterrupt):
        fetch(f, tmp_path / "data", server.url)
    assert not (tmp_path / "data" / f.path).exists()
    monkeypatch.setattr(download, "_get", real_get)
    assert fetch(f, tmp_path / "data", server.url)[0] == "downloaded"  # the next run completes it
    assert _same_bytes(tmp_path / "data" / f.path, shared_data / f.path)
    assert not list((tmp_path / "data").rglob("*.part"))


def test_optional_files_without_a_checksum_are_fetched_unverified(server, shared_data, tmp_path):
    f = next(f for f in MANIFEST if f.path == "math/revthink/test_data/MATH_test.json")
    server.routes["/" + f"{f.source}/{f.src}"] = shared_data / "math/math-evaluation-harness/math_oai/test.jsonl"
    status, note = fetch(f, tmp_path / "data", server.url, backoff=0)
    sha = hashlib.sha256((tmp_path / "data" / f.path).read_bytes()).hexdigest()
    assert status == "downloaded" and f"unverified sha256 {sha}" in note


def test_every_file_byte_identical_then_evaluate_runs(server, shared_data, tmp_path):
    """The issue's 'done when': a clean download from the (local) sources equals ../shared/data,
    and the command line reads it."""
    out = tmp_path / "data"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "data.download", "--data-dir", str(out), "--base-url", server.url, "--no-progress"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "48 downloaded, 0 already present, 0 failed" in run.stdout
    got = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert got == {f.path for f in MANIFEST if not f.optional}
    assert all(_same_bytes(out / p, shared_data / p) for p in got)
    # every loader reads the fresh copy (its Arrow cache under the tmp HOME)
    code = ("from data import real\n"
            "for n, s in real.DATASETS.items():\n"
            "    for split in s['files']: assert real.load_dataset(n, split, limit=3)\n"
            "print('ok')")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env | {"EXGRPO_DATA_DIR": str(out)},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
    # a file served corrupted on every try: exit 1, one line naming the file and the URL
    (out / "gsm8k" / "test.jsonl").unlink()
    server.faults[_route(server, "gsm8k/test.jsonl")] = ["corrupt"] * RETRIES
    run = subprocess.run(cmd + ["--only", "gsm8k"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "3 already present, 1 failed" in run.stdout
    assert re.search(r"FAILED gsm8k/test\.jsonl from http://127\.0\.0\.1:\d+/openai/grade-school-math/\w{40}/"
                     r"grade_school_math/data/test\.jsonl: checksum mismatch", run.stderr), run.stderr
