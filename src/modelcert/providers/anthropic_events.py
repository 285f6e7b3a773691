"""Pure mapping between modelcert's chat vocabulary and Anthropic's Messages API.

No I/O: request building, decoding of a message or of its stream of events, and error
translation, so that `providers/anthropic.py` deals only with the client.

The SDK builds its response objects without validation, so fields are read with
`getattr` and checked: a non-conforming answer becomes `MalformedResponse`, not an
AttributeError later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from modelcert.providers.base import (
    ChatEvent,
    ChatRequest,
    ProviderError,
    Stop,
    TextDelta,
    ToolCall,
    ToolCallBuffer,
    Usage,
)

PROVIDER = "anthropic"
MALFORMED = "MalformedResponse"
# The Messages API requires max_tokens; this is sent when a request sets none.
DEFAULT_MAX_TOKENS = 1024

_KNOWN_STOP_REASONS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use"})
_FILTERED_STOP_REASONS = frozenset({"refusal"})


def malformed(message: str) -> ProviderError:
    return ProviderError(message, code=MALFORMED, provider=PROVIDER)


def build_create_args(
    model: str, request: ChatRequest, *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The keyword arguments of `messages.create` for one request (unset options left out)."""
    args: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or default_max_tokens,
        "messages": [
            {"role": message.role, "content": message.content} for message in request.messages
        ],
    }
    if request.system:
        args["system"] = request.system
    if request.stop:
        args["stop_sequences"] = list(request.stop)
    if request.tools:
        args["tools"] = [
            {
                "name": tool.name,
                "description": tool.description,
                "input_schema": dict(tool.parameters),
            }
            for tool in request.tools
        ]
    if request.json_schema is not None:
        # Structured outputs: the answer is constrained to the schema.
        args["output_config"] = {
            "format": {"type": "json_schema", "schema": dict(request.json_schema)}
        }
    # The SDK no longer has parameters for temperature and top_p (the newest models refuse
    # them), but the API still takes them for the models that do: sent as body fields, so
    # that a model refusing them answers with its own invalid_request_error.
    sampling: dict[str, float] = {}
    if request.temperature is not None:
        sampling["temperature"] = request.temperature
    if request.top_p is not None:
        sampling["top_p"] = request.top_p
    if sampling:
        args["extra_body"] = sampling
    return args


def normalise_stop_reason(reason: object) -> str:
    """Fold Anthropic's stop reasons into modelcert's small set."""
    if reason in _FILTERED_STOP_REASONS:
        return "content_filtered"
    if isinstance(reason, str) and reason in _KNOWN_STOP_REASONS:
        return reason
    return "other"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _tool_arguments(value: object) -> str:
    """A tool call's input as JSON text ("{}" for a tool called without input)."""
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise malformed(f"tool_use input is not an object: {value!r}")
    return json.dumps(dict(value))


def events_from_message(message: object) -> list[ChatEvent]:
    """The events of one non-streamed Message: text, tool calls, usage, stop."""
    if isinstance(message, str):
        raise malformed(f"answer is not JSON: {message[:2000]!r}")
    content = getattr(message, "content", None)
    if not isinstance(content, list):
        raise malformed(f"answer has no content list: {message!r}"[:2000])
    events: list[ChatEvent] = []
    for block in content:
        kind = getattr(block, "type", None)
        if kind == "text":
            text = getattr(block, "text", None)
            if isinstance(text, str) and text:
                events.append(TextDelta(text))
        elif kind == "tool_use":
            name = getattr(block, "name", None)
            if not isinstance(name, str) or not name:
                raise malformed(f"tool_use block without a name: {block!r}")
            call_id = getattr(block, "id", None)
            events.append(
                ToolCall(
                    id=call_id if isinstance(call_id, str) else "",
                    name=name,
                    arguments=_tool_arguments(getattr(block, "input", None)),
                )
            )
    usage = getattr(message, "usage", None)
    input_tokens = _int(getattr(usage, "input_tokens", None))
    output_tokens = _int(getattr(usage, "output_tokens", None))
    if input_tokens is not None and output_tokens is not None:
        events.append(Usage(input_tokens, output_tokens))
    events.append(Stop(normalise_stop_reason(getattr(message, "stop_reason", None))))
    return events


class StreamDecoder:
    """Turns Messages stream events into ChatEvents.

    Text deltas pass at once. A tool call's input arrives as JSON fragments
    (`input_json_delta`), so its ToolCall is emitted whole at the block's
    `content_block_stop`. Input tokens come in `message_start`, output tokens (cumulative)
    and the stop reason in `message_delta`; Usage and Stop are emitted at `message_stop`,
    which every complete answer ends with: a stream without it was cut (`finish`).
    `ping` events are dropped by the SDK, `error` events raised by it.
    """

    def __init__(self) -> None:
        self._tools: dict[int, ToolCallBuffer] = {}
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._stop_reason: object = None
        self._started = False
        self._stopped = False

    def feed(self, event: object) -> list[ChatEvent]:
        """Decode one stream event; most yield zero or one ChatEvent."""
        kind = getattr(event, "type", None)
        if kind == "message_start":
            self._started = True
            usage = getattr(getattr(event, "message", None), "usage", None)
            self._input_tokens = _int(getattr(usage, "input_tokens", None))
            self._output_tokens = _int(getattr(usage, "output_tokens", None))
        elif kind == "content_block_start":
            block = getattr(event, "content_block", None)
            if getattr(block, "type", None) == "tool_use":
                name = getattr(block, "name", None)
                if not isinstance(name, str) or not name:
                    raise malformed(f"tool_use block without a name: {block!r}")
                call_id = getattr(block, "id", None)
                self._tools[self._index(event)] = ToolCallBuffer(
                    call_id if isinstance(call_id, str) else "", name
                )
            elif getattr(block, "type", None) == "text":
                text = getattr(block, "text", None)
                if isinstance(text, str) and text:
                    return [TextDelta(text)]
        elif kind == "content_block_delta":
            delta = getattr(event, "delta", None)
            delta_type = getattr(delta, "type", None)
            if delta_type == "text_delta":
                text = getattr(delta, "text", None)
                if isinstance(text, str) and text:
                    return [TextDelta(text)]
            elif delta_type == "input_json_delta":
                buffer = self._tools.get(self._index(event))
                partial = getattr(delta, "partial_json", None)
                if buffer is not None and isinstance(partial, str):
                    buffer.parts.append(partial)
        elif kind == "content_block_stop":
            done = self._tools.pop(self._index(event), None)
            if done is not None:
                return [done.call()]
        elif kind == "message_delta":
            self._stop_reason = getattr(getattr(event, "delta", None), "stop_reason", None)
            usage = getattr(event, "usage", None)
            output_tokens = _int(getattr(usage, "output_tokens", None))
            if output_tokens is not None:
                self._output_tokens = output_tokens
            input_tokens = _int(getattr(usage, "input_tokens", None))
            if input_tokens is not None:
                self._input_tokens = input_tokens
        elif kind == "message_stop":
            self._stopped = True
            events: list[ChatEvent] = []
            if self._input_tokens is not None and self._output_tokens is not None:
                events.append(Usage(self._input_tokens, self._output_tokens))
            events.append(Stop(normalise_stop_reason(self._stop_reason)))
            return events
        return []

    def finish(self) -> None:
        """Raise if the stream ended before `message_stop`: the answer was cut off."""
        if not self._stopped:
            where = "after message_start" if self._started else "before message_start"
            raise ProviderError(
                f"stream ended {where} without message_stop (answer cut off)",
                code="StreamInterrupted",
                provider=PROVIDER,
            )

    @staticmethod
    def _index(event: object) -> int:
        index = getattr(event, "index", None)
        if not isinstance(index, int):
            raise malformed(f"stream event without a block index: {event!r}")
        return index
