"""A local HTTP server that speaks Google's generateContent wire format, as the Gemini API
and Vertex AI serve it.

google-genai pointed at it through ``http_options.base_url`` works unmodified: its own
request building and SSE/JSON parsing must accept every byte written here.

- Gemini API: ``POST /{version}/models/{model}:generateContent``,
  ``…:streamGenerateContent?alt=sse``, ``GET /{version}/models`` (key in
  ``x-goog-api-key``).
- Vertex AI: ``POST /{version}/projects/{project}/locations/{location}/publishers/google/
  models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``,
  ``GET /{version}/publishers/google/models`` (bearer token).
- Errors: ``{"error": {"code", "message", "status", "details": [ErrorInfo, RetryInfo]}}``,
  also as an SSE ``data:`` line mid-stream.

Behaviour is scripted per model id (``behaviours``) or per (location, model id)
(``location_behaviours``, which wins); unknown ones get ``Behaviour()``, a healthy model.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

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
)

# The HTTP status Google answers each canonical status with.
ERROR_STATUS: Mapping[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
_TYPE = "type.googleapis.com/google.rpc."


@dataclass(frozen=True)
class HttpError:
    """An error answer: a canonical status, its message, optional ErrorInfo reason and
    RetryInfo delay (e.g. "7s"), and a Retry-After header."""

    status: str
    message: str
    reason: str | None = None
    retry_delay: str | None = None
    retry_after: str | None = None
    # Request headers echoed after the message ("; name: value"), as some proxies do: the
    # secret-leak test plants a key and expects it masked.
    echo_headers: tuple[str, ...] = ()

    @property
    def http_status(self) -> int:
        return ERROR_STATUS.get(self.status, 400)

    def body(self, headers: Mapping[str, str]) -> dict[str, Any]:
        details: list[dict[str, Any]] = []
        if self.reason is not None:
            details.append(
                {"@type": _TYPE + "ErrorInfo", "reason": self.reason, "domain": "googleapis.com"}
            )
        if self.retry_delay is not None:
            details.append({"@type": _TYPE + "RetryInfo", "retryDelay": self.retry_delay})
        echoed = "".join(f"; {name}: {headers.get(name.lower(), '')}" for name in self.echo_headers)
        error: dict[str, Any] = {
            "code": self.http_status,
            "message": self.message + echoed,
            "status": self.status,
        }
        if details:
            error["details"] = details
        return {"error": error}


@dataclass(frozen=True)
class Behaviour:
    """How the fake answers one model id (in one location)."""

    text: str = HEALTHY_TEXT
    chunks: int = 3
    # Answer as a healthy model does (`fake_http.reply_to`); False: `text`, always.
    follow_request: bool = True
    tool_input: Mapping[str, Any] = field(default_factory=lambda: dict(WEATHER_ARGUMENTS))
    json_answer: Any = field(default_factory=lambda: dict(PERSON))
    prompt_tokens: int = 8
    candidates_tokens: int = 6
    finish_reason: str | None = None  # None: STOP, or MAX_TOKENS when the limit cuts it
    answer_tokens: int = 60  # what the whole answer takes: a lower maxOutputTokens cuts it
    error: HttpError | None = None
    error_times: int | None = None  # answer `error` to the first N calls only (None: all)
    stream_error: HttpError | None = None  # sent as a data: line after `error_after_chunks`
    error_after_chunks: int = 1
    cut_after_chunks: int | None = None
    # The stream ends properly (last chunk of the chunked encoding) after N text chunks,
    # but without the one that carries finishReason: an answer cut short upstream.
    end_after_chunks: int | None = None
    stall_after_chunks: int | None = None
    hold: bool = False  # read the request, then never answer


@dataclass(frozen=True)
class Call:
    """What one generateContent request addressed."""

    model_id: str
    location: str | None  # None: the Gemini API
    stream: bool


class FakeGemini(FakeHTTPServer):
    """The server: ``with FakeGemini() as fake: ... fake.url ...``."""

    thread_name = "fake-gemini"

    def __init__(self) -> None:
        super().__init__()
        self.behaviours: dict[str, Behaviour] = {}
        self.location_behaviours: dict[tuple[str, str], Behaviour] = {}
        self.models: list[dict[str, Any]] = []
        self.list_error: HttpError | None = None
        # (location or "", model id) -> requests so far
        self.request_counts: Counter[tuple[str, str]] = Counter()
        self.calls_seen: list[Call] = []
        self._count_lock = threading.Lock()

    def behaviour(self, model_id: str, location: str | None) -> Behaviour:
        if location is not None and (location, model_id) in self.location_behaviours:
            return self.location_behaviours[(location, model_id)]
        return self.behaviours.get(model_id, Behaviour())

    def handle_request(self, handler: FakeHandler, method: str, body: Any) -> None:
        split = urlsplit(handler.path)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        headers = handler.header_map()
        if method == "GET" and segments[1:] in (["models"], ["publishers", "google", "models"]):
            self.record(RecordedRequest(method, handler.path, "", headers, body))
            self._list_models(handler, parse_qs(split.query), vertex=len(segments) > 2)
            return
        call = _parse_call(segments, split.query)
        if method != "POST" or call is None or not isinstance(body, dict):
            _send_error(handler, HttpError("NOT_FOUND", f"Not found: {split.path}"))
            return
        self.record(RecordedRequest(method, handler.path, call.model_id, headers, body))
        with self._count_lock:
            self.calls_seen.append(call)
            self.request_counts[(call.location or "", call.model_id)] += 1
            number = self.request_counts[(call.location or "", call.model_id)]
        behaviour = self.behaviour(call.model_id, call.location)
        if behaviour.hold:
            handler.hold(f"{call.location or ''}/{call.model_id}")
            return
        error = behaviour.error
        if error is not None and (behaviour.error_times is None or number <= behaviour.error_times):
            _send_error(handler, error)
            return
        reply = _reply(behaviour, body)
        if call.stream:
            handler.send_stream(_stream(behaviour, reply, body, headers))
        else:
            handler.send_json(200, _answer(behaviour, reply, body, final=True))

    def _list_models(
        self, handler: FakeHandler, query: Mapping[str, list[str]], *, vertex: bool
    ) -> None:
        if self.list_error is not None:
            _send_error(handler, self.list_error)
            return
        size = int(query.get("pageSize", ["50"])[0])
        start = int(query.get("pageToken", ["0"])[0] or 0)
        page = self.models[start : start + size]
        key = "publisherModels" if vertex else "models"
        answer: dict[str, Any] = {key: page}
        if start + size < len(self.models):
            answer["nextPageToken"] = str(start + size)
        handler.send_json(200, answer)


def gemini_model(model_id: str, name: str = "", *, actions: tuple[str, ...] | None = None) -> dict:
    """One entry of the Gemini API's models list."""
    return {
        "name": f"models/{model_id}",
        "displayName": name or model_id,
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 8192,
        "supportedGenerationMethods": list(
            actions or ("generateContent", "streamGenerateContent", "countTokens")
        ),
    }


def vertex_model(model_id: str) -> dict[str, Any]:
    """One entry of Vertex's publisher models list."""
    return {
        "name": f"publishers/google/models/{model_id}",
        "versionId": "001",
        "openSourceCategory": "PROPRIETARY",
        "launchStage": "GA",
    }


def _parse_call(segments: list[str], query: str) -> Call | None:
    """The model, location and kind of a generateContent URL, or None for another one."""
    if not segments or ":" not in segments[-1]:
        return None
    model_id, _, action = segments[-1].partition(":")
    if action not in ("generateContent", "streamGenerateContent"):
        return None
    stream = action == "streamGenerateContent"
    if stream and parse_qs(query).get("alt") != ["sse"]:
        return None  # without alt=sse Google streams a JSON array, which the SDK never asks for
    middle = segments[1:-1]
    if middle == ["models"]:
        return Call(model_id, None, stream)
    if (
        len(middle) == 7
        and middle[0] == "projects"
        and middle[2] == "locations"
        and middle[4:] == ["publishers", "google", "models"]
    ):
        return Call(model_id, middle[3], stream)
    return None


def _send_error(handler: FakeHandler, error: HttpError) -> None:
    headers = {"Retry-After": error.retry_after} if error.retry_after is not None else {}
    handler.send_json(error.http_status, error.body(handler.header_map()), headers)


def _reply(behaviour: Behaviour, body: Mapping[str, Any]) -> Reply:
    if not behaviour.follow_request:
        return Reply(behaviour.text)
    config = body.get("generationConfig") or {}
    tools = [
        declaration["name"]
        for tool in body.get("tools") or []
        for declaration in tool.get("functionDeclarations") or []
    ]
    return reply_to(
        behaviour.text,
        tools=tools,
        wants_json=config.get("responseMimeType") == "application/json",
        stop=list(config.get("stopSequences") or []),
        tool_input=behaviour.tool_input,
        json_answer=behaviour.json_answer,
    )


def _finish_reason(behaviour: Behaviour, body: Mapping[str, Any]) -> str:
    if behaviour.finish_reason is not None:
        return behaviour.finish_reason
    limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
    return "MAX_TOKENS" if limit is not None and limit < behaviour.answer_tokens else "STOP"


def _answer(
    behaviour: Behaviour,
    reply: Reply,
    body: Mapping[str, Any],
    *,
    text: str | None = None,
    final: bool,
) -> dict[str, Any]:
    """A GenerateContentResponse: the whole answer, or one chunk of a stream (`text`)."""
    parts: list[dict[str, Any]] = []
    piece = reply.text if text is None else text
    if piece:
        parts.append({"text": piece})
    if final and reply.tool is not None:
        name, arguments = reply.tool
        parts.append({"functionCall": {"name": name, "args": dict(arguments)}})
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    answer: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": "fake-001",
        "responseId": "fake-response",
    }
    if final:
        candidate["finishReason"] = _finish_reason(behaviour, body)
        answer["usageMetadata"] = {
            "promptTokenCount": behaviour.prompt_tokens,
            "candidatesTokenCount": behaviour.candidates_tokens,
            "totalTokenCount": behaviour.prompt_tokens + behaviour.candidates_tokens,
        }
    return answer


def _data(payload: Mapping[str, Any]) -> bytes:
    # Google separates events with CRLF pairs.
    return f"data: {json.dumps(payload)}\r\n\r\n".encode()


def _stream(
    behaviour: Behaviour, reply: Reply, body: Mapping[str, Any], headers: Mapping[str, str]
) -> Iterator[StreamItem]:
    """The SSE chunks of one streamed answer: text pieces, then a last chunk with the
    function call (if any), finishReason and usageMetadata."""
    pieces = split_text(reply.text, behaviour.chunks)
    for sent, piece in enumerate(pieces):
        if sent == behaviour.cut_after_chunks:
            yield Cut()
            return
        if sent == behaviour.end_after_chunks:
            return
        if sent == behaviour.stall_after_chunks:
            yield Stall()
            return
        if behaviour.stream_error is not None and sent == behaviour.error_after_chunks:
            yield _data(behaviour.stream_error.body(headers))
            return
        last = sent == len(pieces) - 1
        yield _data(_answer(behaviour, reply, body, text=piece, final=last))
    if not pieces:
        yield _data(_answer(behaviour, reply, body, text="", final=True))
