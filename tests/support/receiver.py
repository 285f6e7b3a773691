"""A real local webhook receiver for the notification tests (http.server in a thread):
it checks each request's signature with the subscription's secret, answers from a
script (500, 500, 500, 200…), and can hold a request until the test lets it go."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: not signed (a Slack-style request)
    answered: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    secret: str | None = None
    script: list[int] = field(default_factory=list)  # answers in order; then 200
    hold_first: bool = False
    requests: list[Received] = field(default_factory=list)
    first_arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted_keys(self) -> set[str]:
        """Distinct idempotency keys answered with a 2xx and a valid signature."""
        with self._lock:
            return {
                r.headers.get("Idempotency-Key", "")
                for r in self.requests
                if 200 <= r.answered < 300 and r.signature_ok is not False
            }

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        signature_ok = None
        if "X-Modelcert-Signature" in headers and self.secret is not None:
            signed = headers.get("X-Modelcert-Timestamp", "").encode() + b"." + body
            expected = hmac.new(self.secret.encode(), signed, hashlib.sha256).hexdigest()
            signature_ok = hmac.compare_digest(
                headers["X-Modelcert-Signature"], f"sha256={expected}"
            )
        with self._lock:
            first = not self.requests and not self.first_arrived.is_set()
            answer = self.script.pop(0) if self.script else 200
            if first:
                self.first_arrived.set()
        if first and self.hold_first:
            self.release.wait(120)
        if signature_ok is False:
            answer = 401
        with self._lock:
            self.requests.append(Received(headers, body, signature_ok, answer))
        return answer


@contextmanager
def running_receiver(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            code = receiver.handle(dict(self.headers.items()), body)
            try:
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:  # the sender is gone (killed while we held its request)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook/tok3n-in-the-path"
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
