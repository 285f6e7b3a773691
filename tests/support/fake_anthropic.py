"""A local HTTP server that speaks Anthropic's Messages API wire format.

The anthropic SDK pointed at it with ``base_url`` works unmodified: it serialises real
requests, and its own SSE decoder and models must accept every byte written here —
``POST /v1/messages`` (a JSON message, or with ``"stream": true`` the event stream:
``message_start``, ``content_block_start`` / ``_delta`` / ``_stop``, ``ping``,
``message_delta``, ``message_stop``, and ``error`` events mid-stream), error bodies
(``{"type": "error", "error": {"type", "message"}}`` with ``request-id`` and
``retry-after`` headers) and ``GET /v1/models`` with its cursor pagination. Keys are not
checked (a behaviour can refuse one). Behaviour is scripted per model id through
``FakeAnthropic.behaviours``; unknown model ids get ``Behaviour()``, a healthy model.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.fake_http import (
    HEALTHY_TEXT,
    PERSON,
    WEATHER_ARGUMENTS,
    Cut,
    FakeHandler,
    FakeHTTPServer,
    RecordedRequest,
    Reply,
    Stall,
    StreamItem,
    reply_to,
    split_text,
    sse_event,
)

# The HTTP status Anthropic answers each error type with.
ERROR_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


@dataclass(frozen=True)
class HttpError:
    """An error answer: Anthropic's error type, its message, retry-after headers."""

    type: str
    message: str
    status: int | None = None  # None: the usual status for `type`
    retry_after: str | None = None
    retry_after_ms: str | None = None
    # Request headers echoed after the message ("; name: value"), as some gateways do: the
    # secret-leak test plants a key and expects it masked.
    echo_headers: tuple[str, ...] = ()

    @property
    def http_status(self) -> int:
        return self.status if self.status is not None else ERROR_STATUS.get(self.type, 400)


@dataclass(frozen=True)
class StreamError:
    """An ``error`` event sent after `after_chunks` text deltas, on the 200 stream."""

    type: str
    message: str
    after_chunks: int = 1


@dataclass(frozen=True)
class Behaviour:
    """How the fake answers one model id."""

    text: str = HEALTHY_TEXT
    chunks: int = 3  # the text is streamed in this many deltas
    # Answer as a healthy model does: call the tool offered, give JSON when a schema is
    # asked for, stop at a stop sequence (`fake_http.reply_to`); False: `text`, always.
    follow_request: bool = True
    tool_input: Mapping[str, Any] = field(default_factory=lambda: dict(WEATHER_ARGUMENTS))
    json_answer: Any = field(default_factory=lambda: dict(PERSON))
    tool_fragments: int = 3
    input_tokens: int = 12
    output_tokens: int = 9
    stop_reason: str | None = None  # None: what the answer says (end_turn, tool_use…)
    error: HttpError | None = None
    error_times: int | None = None  # answer `error` to the first N calls only (None: all)
    stream_error: StreamError | None = None
    cut_after_chunks: int | None = None  # the connection drops after N text deltas
    stall_after_chunks: int | None = None  # then nothing more, connection kept open
    hold: bool = False  # read the request, then never answer (not even a status line)


class FakeAnthropic(FakeHTTPServer):
    """The server: ``with FakeAnthropic() as fake: ... fake.url ...``."""

    thread_name = "fake-anthropic"

    def __init__(self) -> None:
        super().__init__()
        self.behaviours: dict[str, Behaviour] = {}
        self.models: list[dict[str, Any]] = []
        self.list_error: HttpError | None = None
        self.request_counts: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._count_lock = threading.Lock()

    def behaviour(self, model_id: str) -> Behaviour:
        return self.behaviours.get(model_id, Behaviour())

    def handle_request(self, handler: FakeHandler, method: str, body: Any) -> None:
        split = urlsplit(handler.path)
        headers = handler.header_map()
        if method == "GET" and split.path == "/v1/models":
            self.record(RecordedRequest(method, handler.path, "", headers, body))
            self._list_models(handler, parse_qs(split.query))
        elif method == "POST" and split.path == "/v1/messages" and isinstance(body, dict):
            model_id = str(body.get("model", ""))
            self.record(RecordedRequest(method, handler.path, model_id, headers, body))
            with self._count_lock:
                self.request_counts[model_id] += 1
                call = self.request_counts[model_id]
            self._message(handler, model_id, body, call)
        else:
            _send_error(handler, HttpError("not_found_error", f"Not found: {split.path}"))

    def _list_models(self, handler: FakeHandler, query: Mapping[str, list[str]]) -> None:
        if self.list_error is not None:
            _send_error(handler, self.list_error)
            return
        limit = int(query.get("limit", ["20"])[0])
        after = query.get("after_id", [None])[0]
        ids = [m["id"] for m in self.models]
        start = ids.index(after) + 1 if after in ids else 0
        page = self.models[start : start + limit]
        handler.send_json(
            200,
            {
                "data": page,
                "has_more": start + limit < len(self.models),
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            },
        )

    def _message(
        self, handler: FakeHandler, model_id: str, body: dict[str, Any], call: int
    ) -> None:
        behaviour = self.behaviour(model_id)
        if behaviour.hold:
            handler.hold(model_id)
            return
        error = behaviour.error
        if error is not None and (behaviour.error_times is None or call <= behaviour.error_times):
            _send_error(handler, error)
            return
        reply = _reply(behaviour, body)
        message_id = f"msg_fake_{next(self._ids)}"
        if body.get("stream"):
            handler.send_stream(
                _stream(behaviour, reply, model_id, message_id), {"request-id": "req_fake"}
            )
        else:
            handler.send_json(
                200,
                _message_body(behaviour, reply, model_id, message_id),
                {"request-id": "req_fake"},
            )


def model_info(model_id: str, name: str = "", *, images: bool = True) -> dict[str, Any]:
    """One entry of ``GET /v1/models``."""
    return {
        "type": "model",
        "id": model_id,
        "display_name": name or model_id,
        "created_at": "2025-02-19T00:00:00Z",
        "lifecycle": "active",
        "capabilities": {"image_input": {"supported": images}},
    }


def _send_error(handler: FakeHandler, error: HttpError) -> None:
    headers = {"request-id": "req_fake_error"}
    if error.retry_after is not None:
        headers["retry-after"] = error.retry_after
    if error.retry_after_ms is not None:
        headers["retry-after-ms"] = error.retry_after_ms
    message = error.message + "".join(
        f"; {name}: {handler.headers.get(name, '')}" for name in error.echo_headers
    )
    handler.send_json(
        error.http_status,
        {
            "type": "error",
            "error": {"type": error.type, "message": message},
            "request_id": "req_fake_error",
        },
        headers,
    )


def _reply(behaviour: Behaviour, body: Mapping[str, Any]) -> Reply:
    if not behaviour.follow_request:
        return Reply(behaviour.text)
    output_format = (body.get("output_config") or {}).get("format")
    return reply_to(
        behaviour.text,
        tools=[tool["name"] for tool in body.get("tools") or []],
        wants_json=output_format is not None,
        stop=list(body.get("stop_sequences") or []),
        tool_input=behaviour.tool_input,
        json_answer=behaviour.json_answer,
    )


def _stop_reason(behaviour: Behaviour, reply: Reply) -> str:
    if behaviour.stop_reason is not None:
        return behaviour.stop_reason
    if reply.tool is not None:
        return "tool_use"
    return "stop_sequence" if reply.stop_sequence is not None else "end_turn"


def _message_body(
    behaviour: Behaviour, reply: Reply, model_id: str, message_id: str
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    if reply.tool is not None:
        name, arguments = reply.tool
        content.append(
            {"type": "tool_use", "id": "toolu_fake_1", "name": name, "input": dict(arguments)}
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model_id,
        "content": content,
        "stop_reason": _stop_reason(behaviour, reply),
        "stop_sequence": reply.stop_sequence,
        "usage": {"input_tokens": behaviour.input_tokens, "output_tokens": behaviour.output_tokens},
    }


def _stream(
    behaviour: Behaviour, reply: Reply, model_id: str, message_id: str
) -> Iterator[StreamItem]:
    """The events of one streamed answer, honouring cuts, stalls and error events."""
    start = _message_body(behaviour, Reply(""), model_id, message_id)
    start.update(content=[], stop_reason=None, stop_sequence=None)
    start["usage"] = {"input_tokens": behaviour.input_tokens, "output_tokens": 1}
    yield sse_event({"type": "message_start", "message": start}, "message_start")
    index = 0
    if reply.text:
        block = {"type": "text", "text": ""}
        yield sse_event(
            {"type": "content_block_start", "index": index, "content_block": block},
            "content_block_start",
        )
        yield sse_event({"type": "ping"}, "ping")
        for sent, piece in enumerate(split_text(reply.text, behaviour.chunks)):
            if sent == behaviour.cut_after_chunks:
                yield Cut()
                return
            if sent == behaviour.stall_after_chunks:
                yield Stall()
                return
            failure = behaviour.stream_error
            if failure is not None and sent == failure.after_chunks:
                error = {"type": failure.type, "message": failure.message}
                yield sse_event({"type": "error", "error": error}, "error")
                return
            delta = {"type": "text_delta", "text": piece}
            yield sse_event(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
        yield sse_event({"type": "content_block_stop", "index": index}, "content_block_stop")
        index += 1
    if reply.tool is not None:
        name, arguments = reply.tool
        block = {"type": "tool_use", "id": "toolu_fake_1", "name": name, "input": {}}
        yield sse_event(
            {"type": "content_block_start", "index": index, "content_block": block},
            "content_block_start",
        )
        for fragment in split_text(json.dumps(dict(arguments)), behaviour.tool_fragments):
            delta = {"type": "input_json_delta", "partial_json": fragment}
            yield sse_event(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
        yield sse_event({"type": "content_block_stop", "index": index}, "content_block_stop")
    yield sse_event(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": _stop_reason(behaviour, reply),
                "stop_sequence": reply.stop_sequence,
            },
            "usage": {"output_tokens": behaviour.output_tokens},
        },
        "message_delta",
    )
    yield sse_event({"type": "message_stop"}, "message_stop")
