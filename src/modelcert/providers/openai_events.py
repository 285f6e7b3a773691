"""Turn OpenAI chat-completion answers (streamed chunks or one response) into ChatEvents.

The SDK builds its response objects without validation, so a non-conforming server gives
objects with missing or wrongly typed fields; every shape is checked here and a bad one
becomes `ProviderError(code="MalformedResponse")` rather than an AttributeError later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from modelcert.providers.base import ChatEvent, ProviderError, Stop, TextDelta, ToolCall, Usage

PROVIDER = "openai"
MALFORMED = "MalformedResponse"

# OpenAI reports a matched stop sequence as plain "stop", so it cannot be told apart
# from a natural end of turn: both become end_turn.
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filtered",
}


def normalise_stop_reason(finish_reason: object) -> str:
    """Map an OpenAI finish_reason onto the provider-neutral Stop reasons."""
    return _STOP_REASONS.get(finish_reason, "other") if isinstance(finish_reason, str) else "other"


def malformed(message: str) -> ProviderError:
    """The error for an answer that is not a well-formed chat completion."""
    return ProviderError(message, code=MALFORMED, provider=PROVIDER)


def error_from_object(error: object, default_code: str | None = MALFORMED) -> ProviderError:
    """A ProviderError from an OpenAI-style error object (`{"message", "type", "code"}`).

    Such objects come in HTTP error bodies, and also inside 200 answers or mid-stream.
    """
    if not isinstance(error, dict):
        return malformed(f"answer carries an error: {error!r}")
    message = error.get("message")
    code, error_type = error.get("code"), error.get("type")
    # llama.cpp puts the HTTP status in `code` as an int; keep it as the status then.
    status = code if isinstance(code, int) and 400 <= code < 600 else None
    if isinstance(code, str) and code:
        code_text: str | None = code
    elif isinstance(error_type, str) and error_type:
        code_text = error_type
    else:
        code_text = str(code) if code is not None else default_code
    text = message if isinstance(message, str) and message else repr(error)
    return ProviderError(text, status=status, code=code_text, provider=PROVIDER)


def _usage_event(usage: object) -> Usage | None:
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(input_tokens=prompt, output_tokens=completion)
    return None


def _first_choice(obj: Any) -> Any | None:
    """The first choice of a chunk or completion (we always ask for n=1)."""
    choices = getattr(obj, "choices", None)
    if choices is None:
        return None
    if not isinstance(choices, list):
        raise malformed(f"`choices` is not a list: {choices!r}")
    return choices[0] if choices else None


def events_from_completion(completion: object) -> list[ChatEvent]:
    """The events of one non-streamed answer: text, tool calls, usage, stop."""
    if isinstance(completion, str):
        # The SDK hands back the raw text when the body is not JSON.
        raise malformed(f"answer is not JSON: {completion[:2000]!r}")
    if not isinstance(completion, ChatCompletion):
        raise malformed(f"unexpected answer type {type(completion).__name__}")
    error = getattr(completion, "error", None)
    if error is not None:
        raise error_from_object(error)
    choice = _first_choice(completion)
    if choice is None:
        raise malformed("answer has no choices")
    message = getattr(choice, "message", None)
    events: list[ChatEvent] = []
    content = getattr(message, "content", None)
    if isinstance(content, str) and content:
        events.append(TextDelta(content))
    for index, call in enumerate(getattr(message, "tool_calls", None) or []):
        function = getattr(call, "function", None)
        name = getattr(function, "name", None)
        if not isinstance(name, str) or not name:
            raise malformed(f"tool call without a function name: {call!r}")
        arguments = getattr(function, "arguments", None)
        call_id = getattr(call, "id", None)
        events.append(
            ToolCall(
                id=call_id if isinstance(call_id, str) and call_id else f"call_{index}",
                name=name,
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    usage = _usage_event(completion.usage)
    if usage is not None:
        events.append(usage)
    events.append(Stop(normalise_stop_reason(getattr(choice, "finish_reason", None))))
    return events


@dataclass
class _PartialToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


class StreamAssembler:
    """Collects streamed chunks into events: text at once, tool calls when the turn ends.

    Tool calls arrive as fragments keyed by `index` (the id and name in the first one, the
    JSON arguments spread over many), so they are emitted only once complete. Usage comes
    in a final chunk without choices; Stop is always the last event.
    """

    def __init__(self) -> None:
        self._saw_choice = False
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self._tool_calls: dict[int, _PartialToolCall] = {}
        self._tool_calls_sent = False

    def feed(self, chunk: object) -> list[ChatEvent]:
        """Events available after one chunk."""
        if not isinstance(chunk, ChatCompletionChunk):
            raise malformed(f"unexpected stream chunk {chunk!r}")
        error = getattr(chunk, "error", None)
        if error is not None:
            raise error_from_object(error)
        usage = _usage_event(chunk.usage)
        if usage is not None:
            self._usage = usage
        choice = _first_choice(chunk)
        if choice is None:
            return []
        self._saw_choice = True
        events: list[ChatEvent] = []
        delta = getattr(choice, "delta", None)
        content = getattr(delta, "content", None)
        if isinstance(content, str) and content:
            events.append(TextDelta(content))
        for fragment in getattr(delta, "tool_calls", None) or []:
            self._add_fragment(fragment)
        finish_reason = getattr(choice, "finish_reason", None)
        if isinstance(finish_reason, str) and finish_reason:
            self._finish_reason = finish_reason
            events.extend(self._complete_tool_calls())
        return events

    def finish(self) -> list[ChatEvent]:
        """The closing events once the stream has ended; raises if it ended too early."""
        if not self._saw_choice:
            raise malformed("stream ended without any choice")
        if self._finish_reason is None:
            raise malformed("stream ended before a finish_reason (answer cut off)")
        events: list[ChatEvent] = []
        if self._usage is not None:
            events.append(self._usage)
        events.append(Stop(normalise_stop_reason(self._finish_reason)))
        return events

    def _add_fragment(self, fragment: object) -> None:
        index = getattr(fragment, "index", None)
        if not isinstance(index, int):
            raise malformed(f"tool-call fragment without an index: {fragment!r}")
        partial = self._tool_calls.setdefault(index, _PartialToolCall())
        call_id = getattr(fragment, "id", None)
        if isinstance(call_id, str) and call_id and not partial.id:
            partial.id = call_id
        function = getattr(fragment, "function", None)
        name = getattr(function, "name", None)
        # The name comes whole in the first fragment; later repeats are ignored.
        if isinstance(name, str) and name and not partial.name:
            partial.name = name
        arguments = getattr(function, "arguments", None)
        if isinstance(arguments, str):
            partial.arguments += arguments

    def _complete_tool_calls(self) -> list[ChatEvent]:
        if self._tool_calls_sent:
            return []
        self._tool_calls_sent = True
        calls: list[ChatEvent] = []
        for index in sorted(self._tool_calls):
            partial = self._tool_calls[index]
            if not partial.name:
                raise malformed(f"streamed tool call {index} never named its function")
            calls.append(
                ToolCall(
                    id=partial.id or f"call_{index}", name=partial.name, arguments=partial.arguments
                )
            )
        return calls
