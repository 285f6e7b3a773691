"""A local HTTP server that speaks Bedrock's REST-JSON and event-stream wire formats.

boto3 pointed at it with ``endpoint_url`` works unmodified: botocore serialises real
requests, and its own parsers must accept every response and every event-stream frame
written here. SigV4 signatures are not checked. Behaviour is scripted per model id
through ``FakeBedrock.behaviours``; unknown model ids get ``Behaviour()``.

A behaviour can also hold a request unanswered (``stall_before_headers``); the server
then notes when the client hangs up (``FakeBedrock.wait_for_hangup``), so tests can tell
how long an abandoned call kept its connection open.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

EVENT_STREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
_ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"

# HTTP status Bedrock uses for each modelled error.
ERROR_STATUS: Mapping[str, int] = {
    "ThrottlingException": 429,
    "AccessDeniedException": 403,
    "ValidationException": 400,
    "ResourceNotFoundException": 404,
    "UnrecognizedClientException": 403,
    "ServiceUnavailableException": 503,
    "InternalServerException": 500,
    "ModelTimeoutException": 408,
}


@dataclass(frozen=True)
class HttpError:
    """An error answer: status, ``x-amzn-ErrorType`` code, JSON message, Retry-After."""

    code: str
    message: str
    status: int | None = None  # None: the usual status for `code`
    retry_after: str | None = None
    # Request headers echoed after the message ("; Name: value"), as some proxies and
    # gateways do: a secret-leak test plants credentials and expects them masked.
    echo_headers: tuple[str, ...] = ()

    @property
    def http_status(self) -> int:
        """The status to answer with."""
        return self.status if self.status is not None else ERROR_STATUS.get(self.code, 400)


@dataclass(frozen=True)
class StreamException:
    """An exception frame sent after ``after_chunks`` text deltas (e.g. throttlingException)."""

    exception_type: str
    message: str
    after_chunks: int = 1


@dataclass(frozen=True)
class ToolUse:
    """A tool call; its JSON input is streamed in ``fragments`` pieces."""

    name: str
    input: Mapping[str, Any]
    tool_use_id: str = "tooluse_fake_1"
    fragments: int = 3


@dataclass(frozen=True)
class Behaviour:
    """How the fake answers one model id."""

    text: str = "Hello from the fake Bedrock."
    chunks: int = 3  # the text is streamed in this many deltas
    tool_use: ToolUse | None = None
    input_tokens: int = 11
    output_tokens: int = 7
    stop_reason: str | None = None  # None: end_turn, or tool_use when tool_use is set
    delay: float = 0.0  # seconds before the response starts
    error: HttpError | None = None
    stream_exception: StreamException | None = None
    stall_after_chunks: int | None = None  # stop sending (until server stop) after N deltas
    # Read the request, then send nothing at all (not even the status line) until the
    # client closes the connection or the server stops.
    stall_before_headers: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # the raw request path, percent-encoding kept
    model_id: str  # the decoded {modelId} path label, "" for other operations
    body: Any


def _split_text(text: str, parts: int) -> list[str]:
    """Split into at most `parts` non-empty consecutive pieces."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


def encode_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """Encode one AWS event-stream message (string headers only, CRC32 checksums)."""
    encoded_headers = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded_headers += struct.pack(">B", len(raw_name)) + raw_name
        encoded_headers += struct.pack(">BH", 7, len(raw_value)) + raw_value
    total_length = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack(">II", total_length, len(encoded_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_frame(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """An ``event`` frame carrying one ConverseStream member structure as JSON."""
    return encode_frame(
        {
            ":message-type": "event",
            ":event-type": event_type,
            ":content-type": "application/json",
        },
        json.dumps(payload).encode(),
    )


def exception_frame(exception_type: str, message: str) -> bytes:
    """An ``exception`` frame, as Bedrock sends for errors after the stream has started."""
    return encode_frame(
        {
            ":message-type": "exception",
            ":exception-type": exception_type,
            ":content-type": "application/json",
        },
        json.dumps({"message": message}).encode(),
    )


def default_availability(model_id: str) -> dict[str, Any]:
    """An entitled, authorised, region-available answer."""
    return {
        "modelId": model_id,
        "agreementAvailability": {"status": "AVAILABLE"},
        "authorizationStatus": "AUTHORIZED",
        "entitlementAvailability": "AVAILABLE",
        "regionAvailability": "AVAILABLE",
    }


def model_summary(
    model_id: str,
    *,
    name: str = "",
    provider: str = "Anthropic",
    streaming: bool = True,
    inference_types: tuple[str, ...] = ("ON_DEMAND",),
) -> dict[str, Any]:
    """One ``modelSummaries`` entry of ListFoundationModels."""
    return {
        "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}",
        "modelId": model_id,
        "modelName": name or model_id,
        "providerName": provider,
        "inputModalities": ["TEXT"],
        "outputModalities": ["TEXT"],
        "responseStreamingSupported": streaming,
        "customizationsSupported": [],
        "inferenceTypesSupported": list(inference_types),
        "modelLifecycle": {"status": "ACTIVE"},
    }


class FakeBedrock:
    """The server: ``with FakeBedrock() as fake: ... fake.url ...``."""

    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.models: list[dict[str, Any]] = []
        self.availability: dict[str, dict[str, Any] | HttpError] = {}
        self.list_error: HttpError | None = None  # makes ListFoundationModels fail
        self.request_counts: Counter[str] = Counter()
        self.requests: list[RecordedRequest] = []
        # Requests inside their Behaviour.delay now, and the most there were at once: how
        # a test sees that calls overlap without timing them.
        self.delayed_now = 0
        self.most_delayed_at_once = 0
        self._lock = threading.Lock()
        # model id -> time.monotonic() at which the client hung up on a stalled request.
        self._hangups: dict[str, float] = {}
        self._hangup = threading.Condition(self._lock)
        # Set on stop(): stalled and delayed handlers wake up and finish.
        self.closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def delay(self, seconds: float) -> None:
        with self._lock:
            self.delayed_now += 1
            self.most_delayed_at_once = max(self.most_delayed_at_once, self.delayed_now)
        try:
            self.closing.wait(seconds)
        finally:
            with self._lock:
                self.delayed_now -= 1

    @property
    def url(self) -> str:
        """The base URL to give boto3 as ``endpoint_url``."""
        if self._server is None:
            raise RuntimeError("FakeBedrock is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeBedrock:
        """Listen on a free loopback port and serve in a background thread."""
        handler = type("BoundHandler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval keeps stop() (which waits for one poll) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-bedrock",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release stalled handlers, stop serving and close the socket."""
        self.closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeBedrock:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def last_request(self, model_id: str | None = None) -> RecordedRequest:
        """The latest request (for `model_id`, when given)."""
        with self._lock:
            for recorded in reversed(self.requests):
                if model_id is None or recorded.model_id == model_id:
                    return recorded
        raise LookupError(f"no request for {model_id!r}")

    def record(self, recorded: RecordedRequest) -> None:
        """Remember a request (called from handler threads)."""
        with self._lock:
            self.requests.append(recorded)
            self.request_counts[recorded.model_id] += 1

    def record_hangup(self, model_id: str) -> None:
        """Note that the client closed a stalled connection (called from handler threads)."""
        with self._hangup:
            self._hangups.setdefault(model_id, time.monotonic())
            self._hangup.notify_all()

    def wait_for_hangup(self, model_id: str, timeout: float) -> float | None:
        """When (``time.monotonic()``) the client hung up on a stalled request for
        `model_id`; None if it has not within `timeout` seconds."""
        with self._hangup:
            self._hangup.wait_for(lambda: model_id in self._hangups, timeout)
            return self._hangups.get(model_id)

    def behaviour(self, model_id: str) -> Behaviour:
        """The scripted behaviour for `model_id` (the default one when none is set)."""
        return self.behaviours.get(model_id, Behaviour())


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBedrock
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def handle(self) -> None:
        """Serve the connection; a client that went away (timeout, cancel) is not an error."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    # -- routing ---------------------------------------------------------------------

    def do_GET(self) -> None:
        self._drain_body()
        segments = urlsplit(self.path).path.split("/")[1:]
        if segments == ["foundation-models"]:
            self.fake.record(RecordedRequest("GET", self.path, "", None))
            if self.fake.list_error is not None:
                self._send_error(self.fake.list_error)
            else:
                self._send_json(200, {"modelSummaries": self.fake.models})
        elif len(segments) == 2 and segments[0] == "foundation-model-availability":
            model_id = unquote(segments[1])
            self.fake.record(RecordedRequest("GET", self.path, model_id, None))
            answer = self.fake.availability.get(model_id, default_availability(model_id))
            if isinstance(answer, HttpError):
                self._send_error(answer)
            else:
                self._send_json(200, answer)
        else:
            self._send_error(HttpError("UnknownOperationException", self.path, status=404))

    def do_POST(self) -> None:
        raw = self._drain_body()
        # Split before decoding: an ARN model id arrives with its "/" as %2F.
        segments = urlsplit(self.path).path.split("/")[1:]
        if len(segments) != 3 or segments[0] != "model":
            self._send_error(HttpError("UnknownOperationException", self.path, status=404))
            return
        model_id, operation = unquote(segments[1]), segments[2]
        self.fake.record(RecordedRequest("POST", self.path, model_id, json.loads(raw or b"{}")))
        behaviour = self.fake.behaviour(model_id)
        if behaviour.stall_before_headers:
            if self._wait_for_client_to_leave():
                self.fake.record_hangup(model_id)
            self.close_connection = True
            return
        if behaviour.delay:
            self.fake.delay(behaviour.delay)
        if behaviour.error is not None:
            self._send_error(behaviour.error)
        elif operation == "converse":
            self._send_json(200, _converse_body(behaviour))
        elif operation == "converse-stream":
            self._send_stream(behaviour)
        else:
            self._send_error(HttpError("UnknownOperationException", self.path, status=404))

    def _wait_for_client_to_leave(self) -> bool:
        """Block until the client closes the connection (True) or the server stops."""
        while not self.fake.closing.is_set():
            # A short poll, so that stop() is not kept waiting.
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if not readable:
                continue
            try:
                # Peek: readable with no data is the client's FIN.
                data = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:  # reset by the client: gone as well
                return True
            # Bytes instead: the client sent another request on a connection that was
            # never answered; no client does that, so give up on this one.
            return not data
        return False

    # -- writers ---------------------------------------------------------------------

    def _drain_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, body: Any, headers: Mapping[str, str] = {}) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("x-amzn-RequestId", "fake-request-id")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _send_error(self, error: HttpError) -> None:
        headers = {"x-amzn-ErrorType": error.code + _ERROR_TYPE_SUFFIX}
        if error.retry_after is not None:
            headers["Retry-After"] = error.retry_after
        message = error.message + "".join(
            f"; {name}: {self.headers.get(name, '')}" for name in error.echo_headers
        )
        self._send_json(error.http_status, {"message": message}, headers)

    def _send_stream(self, behaviour: Behaviour) -> None:
        self.send_response(200)
        self.send_header("Content-Type", EVENT_STREAM_CONTENT_TYPE)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-amzn-RequestId", "fake-request-id")
        self.end_headers()
        for frame in _stream_frames(behaviour, self.fake.closing):
            self._write_chunk(frame)
        self._write_chunk(b"")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _stop_reason(behaviour: Behaviour) -> str:
    if behaviour.stop_reason is not None:
        return behaviour.stop_reason
    return "tool_use" if behaviour.tool_use is not None else "end_turn"


def _usage(behaviour: Behaviour) -> dict[str, int]:
    return {
        "inputTokens": behaviour.input_tokens,
        "outputTokens": behaviour.output_tokens,
        "totalTokens": behaviour.input_tokens + behaviour.output_tokens,
    }


def _converse_body(behaviour: Behaviour) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if behaviour.text:
        content.append({"text": behaviour.text})
    if behaviour.tool_use is not None:
        tool = behaviour.tool_use
        content.append(
            {"toolUse": {"toolUseId": tool.tool_use_id, "name": tool.name, "input": tool.input}}
        )
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": _stop_reason(behaviour),
        "usage": _usage(behaviour),
        "metrics": {"latencyMs": 42},
    }


def _stream_frames(behaviour: Behaviour, closing: threading.Event) -> Iterator[bytes]:
    """The ConverseStream frames for one answer, honouring stalls and exception frames."""
    yield event_frame("messageStart", {"role": "assistant"})
    index = 0
    if behaviour.text:
        # Like the real service, a text block has no contentBlockStart (its `start` union
        # has no text member; botocore rejects an empty one).
        for sent, piece in enumerate(_split_text(behaviour.text, behaviour.chunks)):
            if behaviour.stall_after_chunks is not None and sent == behaviour.stall_after_chunks:
                closing.wait(60)  # hold the connection open, sending nothing
                return
            exc = behaviour.stream_exception
            if exc is not None and sent == exc.after_chunks:
                yield exception_frame(exc.exception_type, exc.message)
                return
            delta = {"contentBlockIndex": index, "delta": {"text": piece}}
            yield event_frame("contentBlockDelta", delta)
            time.sleep(0.01)  # several TCP writes, so the client sees separate deltas
        yield event_frame("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    if behaviour.tool_use is not None:
        tool = behaviour.tool_use
        start = {"toolUse": {"toolUseId": tool.tool_use_id, "name": tool.name}}
        yield event_frame("contentBlockStart", {"contentBlockIndex": index, "start": start})
        for fragment in _split_text(json.dumps(tool.input), tool.fragments):
            delta = {"contentBlockIndex": index, "delta": {"toolUse": {"input": fragment}}}
            yield event_frame("contentBlockDelta", delta)
        yield event_frame("contentBlockStop", {"contentBlockIndex": index})
    yield event_frame("messageStop", {"stopReason": _stop_reason(behaviour)})
    yield event_frame("metadata", {"usage": _usage(behaviour), "metrics": {"latencyMs": 42}})
