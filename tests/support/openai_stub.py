"""A scripted stand-in for an OpenAI-compatible endpoint, on 127.0.0.1, stdlib only.

Each request gets the next queued `Canned` answer, whatever its path, and is recorded, so
a test can both shape the answer (status, headers, body, SSE chunks, a stall) and check
what the client sent. HTTP/1.0 is used on purpose: every response ends by closing the
connection, so a streamed body needs no chunked encoding.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Canned:
    """One scripted answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # When set, sent piece by piece (each flushed) instead of `body`: an SSE stream.
    chunks: list[bytes] | None = None
    # After the chunks, keep the connection open until the client goes away.
    stall: bool = False
    # Wait this long before sending anything (to trip the client's read timeout).
    delay: float = 0.0


@dataclass
class Seen:
    """One request as the stub received it."""

    method: str
    path: str  # including the query string
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def json_answer(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Canned:
    """A JSON body with the given status."""
    return Canned(
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
        body=json.dumps(obj).encode(),
    )


def sse_answer(*events: Any, done: bool = True, stall: bool = False) -> Canned:
    """An SSE stream, one `data:` event per item (dicts as JSON, strings verbatim)."""
    chunks = [
        f"data: {item if isinstance(item, str) else json.dumps(item)}\n\n".encode()
        for item in events
    ]
    if done:
        chunks.append(b"data: [DONE]\n\n")
    return Canned(headers={"Content-Type": "text/event-stream"}, chunks=chunks, stall=stall)


def chunk(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """One chat.completion.chunk with a single choice."""
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """The closing chunk `stream_options.include_usage` asks for: usage, no choices."""
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class OpenAIStub:
    """The server; use as a context manager."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.client_left = threading.Event()  # set when a stalled stream's client hung up
        self._answers: queue.Queue[Canned] = queue.Queue()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def enqueue(self, *answers: Canned) -> None:
        for answer in answers:
            self._answers.put(answer)

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                stub.requests.append(
                    Seen("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                try:
                    answer = stub._answers.get_nowait()
                except queue.Empty:
                    answer = Canned(status=599, body=b"stub: no answer queued")
                self._send(answer)

            do_GET = do_POST

            def _send(self, answer: Canned) -> None:
                time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    if answer.chunks is None:
                        self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    for piece in answer.chunks if answer.chunks is not None else [answer.body]:
                        self.wfile.write(piece)
                        self.wfile.flush()
                except OSError:
                    return  # the client left early; nothing to do
                if answer.stall:
                    self._wait_for_client_to_leave()

            def _wait_for_client_to_leave(self) -> None:
                # The request is fully read, so the next readable event is EOF: the
                # client closed its side.
                self.connection.settimeout(0.05)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        if self.connection.recv(1, socket.MSG_PEEK) == b"":
                            break
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                stub.client_left.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler
