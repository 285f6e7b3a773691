"""What the local servers speaking a vendor's HTTP wire format share (fake_anthropic.py,
fake_gemini.py): a threaded server on a free loopback port, requests recorded, JSON and
server-sent-event answers, and the misbehaviours a test needs — a request held with no
answer at all (its hang-up noted, so a test sees when the client gave up), a stream
stalled mid-answer, a connection cut mid-answer.

Every answer is HTTP/1.1 with a length or chunked encoding, so the SDK's own HTTP client
and parsers read it as they would a real service's.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # with the query string
    model_id: str  # the model the request names, "" for other operations
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, None when there was none


@dataclass(frozen=True)
class Cut:
    """Close the connection mid-stream: no further bytes, not even the chunked encoding's
    last chunk (what a dropped connection or a crashed proxy leaves the client with)."""


@dataclass(frozen=True)
class Stall:
    """Send nothing more while the connection stays open (until the client leaves)."""


StreamItem = bytes | Cut | Stall


def split_text(text: str, parts: int) -> list[str]:
    """Split into at most `parts` non-empty consecutive pieces."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


def sse_event(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: `event:` (when named) and one `data:` line of JSON."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


class FakeHTTPServer:
    """Start and stop, record requests, wait for hang-ups; subclasses route requests
    (`handle_request`) and answer with `FakeHandler`'s writers."""

    thread_name = "fake-http"

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._hangups: dict[str, float] = {}
        self._hangup = threading.Condition(self._lock)
        self.closing = threading.Event()  # set on stop(): stalled handlers finish
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        handler = type("BoundHandler", (FakeHandler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval keeps stop() (which waits for one poll) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests read ----------------------------------------------------------------

    def record(self, recorded: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(recorded)

    def calls(self, model_id: str) -> list[RecordedRequest]:
        """The requests that named `model_id`, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.model_id == model_id]

    def last_request(self, model_id: str | None = None) -> RecordedRequest:
        with self._lock:
            for recorded in reversed(self.requests):
                if model_id is None or recorded.model_id == model_id:
                    return recorded
        raise LookupError(f"no request for {model_id!r}")

    def record_hangup(self, key: str) -> None:
        with self._hangup:
            self._hangups.setdefault(key, time.monotonic())
            self._hangup.notify_all()

    def wait_for_hangup(self, key: str, timeout: float) -> float | None:
        """When (`time.monotonic()`) the client hung up on a request held for `key`; None
        if it has not within `timeout` seconds."""
        with self._hangup:
            self._hangup.wait_for(lambda: key in self._hangups, timeout)
            return self._hangups.get(key)

    # -- routing (subclasses) -----------------------------------------------------------

    def handle_request(self, handler: FakeHandler, method: str, body: Any) -> None:
        raise NotImplementedError


class FakeHandler(BaseHTTPRequestHandler):
    fake: FakeHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def handle(self) -> None:
        """A client that went away (timeout, cancel) is not an error."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.fake.handle_request(self, method, json.loads(raw) if raw else None)

    def header_map(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    # -- answers ------------------------------------------------------------------------

    def send_json(self, status: int, body: Any, headers: Mapping[str, str] = {}) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def send_stream(
        self, items: Iterable[StreamItem], headers: Mapping[str, str] = {}, pause_s: float = 0.01
    ) -> None:
        """A `text/event-stream` answer, chunked, one chunk per item (with a pause between
        them, so the client sees separate reads), until a `Cut` or `Stall`."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        for item in items:
            if isinstance(item, Cut):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if isinstance(item, Stall):
                self.wait_for_client_to_leave()
                self.close_connection = True
                return
            self.wfile.write(f"{len(item):x}\r\n".encode() + item + b"\r\n")
            self.wfile.flush()
            time.sleep(pause_s)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def hold(self, key: str) -> None:
        """Answer nothing at all, not even a status line, until the client leaves (its
        hang-up recorded under `key`) or the server stops."""
        if self.wait_for_client_to_leave():
            self.fake.record_hangup(key)
        self.close_connection = True

    def wait_for_client_to_leave(self) -> bool:
        """Block until the client closes the connection (True) or the server stops."""
        while not self.fake.closing.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if not readable:
                continue
            try:
                # Peek: readable with no data is the client's FIN.
                data = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:  # reset by the client: gone as well
                return True
            return not data
        return False


# -- a model's answer to one request --------------------------------------------------

# Says what every generic test of the battery looks for: a name from the system prompt,
# one from the conversation, and a count that a stop sequence "5" cuts short.
HEALTHY_TEXT = "Hello! I am Quill, and your name is Alice. 1, 2, 3, 4, 5, 6, 7, 8, 9, 10."
PERSON = {"name": "Ada", "age": 36}
WEATHER_ARGUMENTS = {"city": "Paris", "unit": "celsius"}


@dataclass(frozen=True)
class Reply:
    """What a fake model answers: text, or a call to a tool; and why it stopped."""

    text: str
    tool: tuple[str, Mapping[str, Any]] | None = None
    stop_sequence: str | None = None  # the one the text was cut at, if any


def reply_to(
    text: str,
    *,
    tools: list[str],
    wants_json: bool,
    stop: list[str],
    tool_input: Mapping[str, Any] = WEATHER_ARGUMENTS,
    json_answer: Any = PERSON,
) -> Reply:
    """How a well-behaved model answers: it calls the first tool offered, gives JSON when a
    schema is asked for, and ends its text before the first stop sequence it reaches."""
    if tools:
        return Reply("", (tools[0], tool_input))
    if wants_json:
        return Reply(json.dumps(json_answer))
    cuts = [(text.find(s), s) for s in stop if s and s in text]
    if cuts:
        position, sequence = min(cuts)
        return Reply(text[:position], stop_sequence=sequence)
    return Reply(text)
