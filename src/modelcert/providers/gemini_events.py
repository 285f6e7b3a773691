"""Pure mapping between modelcert's chat vocabulary and Google's generateContent API (the
Gemini API and Vertex AI speak the same one).

No I/O: request building, decoding of answers (one, or the chunks of a stream: the same
decoder), and error translation, so that `providers/gemini.py` deals only with clients,
credentials and locations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from google.genai import errors as genai_errors
from google.genai import types

from modelcert.providers.base import (
    ChatEvent,
    ChatRequest,
    ProviderError,
    Stop,
    TextDelta,
    ToolCall,
    Usage,
)
from modelcert.providers.sdk_support import bounded, retry_after_from_headers

PROVIDER = "gemini"
MALFORMED = "MalformedResponse"

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
# ErrorInfo reasons that say more than the canonical status: the Gemini API refuses a bad
# key with 400 INVALID_ARGUMENT, which alone would read as a malformed request.
_PRECISE_REASONS = frozenset({"API_KEY_INVALID"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def build_contents(request: ChatRequest) -> list[types.Content]:
    """The conversation: Google calls the assistant's turns `model`."""
    return [
        types.Content(
            role="user" if message.role == "user" else "model",
            parts=[types.Part(text=message.content)],
        )
        for message in request.messages
    ]


def build_config(request: ChatRequest) -> types.GenerateContentConfig:
    """The generation config of one request (unset options left out of the body)."""
    config = types.GenerateContentConfig(
        system_instruction=request.system or None,
        temperature=request.temperature,
        top_p=request.top_p,
        max_output_tokens=request.max_tokens,
        stop_sequences=list(request.stop) or None,
        # Tools are declared, never run: the SDK must not call them or loop on them.
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        # One request is one answer: no follow-up requests behind the caller's back.
        automatic_continuation=False,
    )
    if request.json_schema is not None:
        config.response_mime_type = "application/json"
        config.response_schema = dict(request.json_schema)
    if request.tools:
        config.tools = [
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name=tool.name,
                        description=tool.description,
                        parameters=dict(tool.parameters),  # type: ignore[arg-type]
                    )
                    for tool in request.tools
                ]
            )
        ]
    return config


def normalise_stop_reason(finish_reason: object, *, called_tools: bool) -> str:
    """Fold a finishReason into modelcert's Stop reasons. Gemini ends a turn that calls a
    function with STOP, and reports a matched stop sequence as STOP too (as OpenAI does):
    both read as end_turn, a turn with a function call as tool_use."""
    reason = getattr(finish_reason, "value", finish_reason)
    if reason == "STOP":
        return "tool_use" if called_tools else "end_turn"
    if reason == "MAX_TOKENS":
        return "max_tokens"
    if reason in _FILTERED:
        return "content_filtered"
    return "other"


class AnswerDecoder:
    """Turns GenerateContentResponse objects (one answer, or each chunk of a stream) into
    ChatEvents: text at once, each function call whole (Gemini sends it in one part), and
    at `finish()` the usage metadata and the Stop. An answer that never gave a
    finishReason was cut off; one whose prompt was blocked ends content_filtered."""

    def __init__(self) -> None:
        self._finish_reason: object = None
        self._tool_calls = 0
        self._usage: Usage | None = None
        self._blocked = False

    def feed(self, response: object) -> list[ChatEvent]:
        if not isinstance(response, types.GenerateContentResponse):
            raise ProviderError(
                f"unexpected answer {response!r}"[:2000], code=MALFORMED, provider=PROVIDER
            )
        usage = response.usage_metadata
        if usage is not None and usage.prompt_token_count is not None:
            self._usage = Usage(usage.prompt_token_count, usage.candidates_token_count or 0)
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            self._blocked = True
        events: list[ChatEvent] = []
        candidate = response.candidates[0] if response.candidates else None
        if candidate is None:
            return events
        for part in (candidate.content.parts if candidate.content else None) or []:
            if part.thought:
                continue  # a thinking model's reasoning is not its answer
            if part.text:
                events.append(TextDelta(part.text))
            if part.function_call is not None:
                events.append(self._tool_call(part.function_call))
        if candidate.finish_reason is not None:
            self._finish_reason = candidate.finish_reason
        return events

    def _tool_call(self, call: types.FunctionCall) -> ToolCall:
        if not call.name:
            raise ProviderError(
                f"function call without a name: {call!r}", code=MALFORMED, provider=PROVIDER
            )
        number = self._tool_calls
        self._tool_calls += 1
        return ToolCall(call.id or f"call_{number}", call.name, json.dumps(call.args or {}))

    def finish(self) -> list[ChatEvent]:
        if self._finish_reason is None and not self._blocked:
            raise ProviderError(
                "answer ended without a finishReason (cut off)",
                code="StreamInterrupted",
                provider=PROVIDER,
            )
        events: list[ChatEvent] = []
        if self._usage is not None:
            events.append(self._usage)
        if self._finish_reason is None:
            events.append(Stop("content_filtered"))
        else:
            reason = normalise_stop_reason(self._finish_reason, called_tools=self._tool_calls > 0)
            events.append(Stop(reason))
        return events


def _error_details(exc: genai_errors.APIError) -> list[Mapping[str, Any]]:
    body = exc.details
    error = body.get("error", body) if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    return [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else []


def _detail(details: list[Mapping[str, Any]], type_suffix: str) -> Mapping[str, Any] | None:
    for detail in details:
        if str(detail.get("@type", "")).endswith(type_suffix):
            return detail
    return None


def _retry_delay(details: list[Mapping[str, Any]]) -> float | None:
    """Seconds from a RetryInfo detail (`"retryDelay": "7s"`), Google's Retry-After."""
    info = _detail(details, "google.rpc.RetryInfo")
    match = _DURATION.match(str(info.get("retryDelay", ""))) if info else None
    return float(match.group(1)) if match else None


def provider_error(exc: genai_errors.APIError) -> ProviderError:
    """Translate an SDK error, keeping Google's canonical status (RESOURCE_EXHAUSTED…) as
    the code, the HTTP status, the wait asked for and the original message."""
    details = _error_details(exc)
    reason_detail = _detail(details, "google.rpc.ErrorInfo")
    reason = reason_detail.get("reason") if reason_detail else None
    code = reason if reason in _PRECISE_REASONS else exc.status
    message = exc.message if isinstance(exc.message, str) and exc.message else str(exc.details)
    headers = getattr(exc.response, "headers", None)
    retry_after = _retry_delay(details)
    if retry_after is None and headers is not None:
        retry_after = retry_after_from_headers(headers)
    status = exc.code if isinstance(exc.code, int) and 400 <= exc.code < 600 else None
    return ProviderError(
        bounded(message),
        status=status,
        code=str(code) if code else None,
        retry_after=retry_after,
        provider=PROVIDER,
    )
