"""A real HTTP server on 127.0.0.1 (port 0) that speaks OpenAI chat-completions, with faults.

    with FakeOpenAI(answer_fn, fault_fn) as srv:      # answer_fn(messages) -> text
        teacher = probes.make_teacher(url=srv.url, model="fake")
        ...
        srv.answered      # Counter: successful answers per prompt (the JSON of its messages)

fault_fn(messages, attempt) -> None or one of FAULTS, for the attempt-th request of that
prompt. block_after = N makes every request after N successful answers wait on `gate`
(then close without an answer): a client killed meanwhile has cached exactly what it got.
"""
import json
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("500", "503", "429", "429-wait", "hang", "malformed", "reset", "401", "404")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code, body, headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def do_GET(self):
        """GET /v1/models: the served model names (models=None: no such route, 404)."""
        srv = self.server.fake
        with srv.lock:
            srv.gets.append((self.path, self.headers.get("Authorization")))
        self.close_connection = True
        if srv.key is not None and self.headers.get("Authorization") != f"Bearer {srv.key}":
            return self._send(401, {"error": {"message": "Incorrect API key provided"}})
        if srv.models is None or not self.path.endswith("/models"):
            return self._send(404, {"error": {"message": "Not found"}})
        self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in srv.models]})

    def do_POST(self):
        srv = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        messages = body["messages"]
        key = json.dumps(messages, sort_keys=True)
        with srv.lock:
            srv.attempts[key] += 1
            attempt = srv.attempts[key]
            srv.requests.append((key, time.time(), self.headers.get("Authorization")))
            blocked = srv.block_after is not None and sum(srv.answered.values()) >= srv.block_after
        self.close_connection = True
        if blocked:
            srv.gate.wait()
            return  # close without an answer: the client that asked is gone
        fault = srv.fault_fn(messages, attempt) if srv.fault_fn else None
        with srv.lock:
            srv.faults[fault] += 1
        if fault in ("500", "503"):
            return self._send(int(fault), {"error": {"message": "server error"}})
        if fault in ("429", "429-wait"):
            return self._send(429, {"error": {"message": "rate limited"}},
                              [("Retry-After", "1" if fault == "429-wait" else "0")])
        if fault == "401":
            return self._send(401, {"error": {"message": "Incorrect API key provided"}})
        if fault == "404":
            return self._send(404, {"error": {"message": "The model does not exist"}})
        if fault == "hang":
            time.sleep(srv.hang_s)
            return  # past the client's timeout, then no answer at all
        if fault == "malformed":
            return self._send(200, b'{"choices": [{"message": {"content": "The ans')
        if fault == "reset":  # RST instead of an answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        text = srv.answer_fn(messages)
        self._send(200, {"id": "chatcmpl-fake", "object": "chat.completion", "model": body.get("model"),
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}]})
        with srv.lock:
            srv.answered[key] += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # resets and dead clients are expected
        pass


class FakeOpenAI:
    def __init__(self, answer_fn, fault_fn=None, hang_s=1.0, block_after=None, models=("fake", "fake-2"), key=None):
        self.answer_fn, self.fault_fn, self.hang_s, self.block_after = answer_fn, fault_fn, hang_s, block_after
        self.models, self.key = models, key   # GET /v1/models lists `models`; a key set: GETs must carry it
        self.gets = []  # (path, Authorization header) of every GET
        self.lock, self.gate = threading.Lock(), threading.Event()
        self.attempts, self.answered, self.faults = Counter(), Counter(), Counter()
        self.requests = []  # (prompt key, time, Authorization header)
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.fake = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def total_answered(self):
        with self.lock:
            return sum(self.answered.values())
