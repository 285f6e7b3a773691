"""Pure mapping between modelcert's chat vocabulary and Bedrock's Converse API.

No I/O here: request building, response/event decoding and error translation, so the
provider module only deals with threads, clients and the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import urllib3.exceptions
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from modelcert.providers.base import (
    ChatEvent,
    ChatRequest,
    ProviderError,
    Stop,
    TextDelta,
    ToolCall,
    ToolCallBuffer,
    Usage,
    parse_retry_after,
)
from modelcert.providers.bedrock_stream import StreamCancelled

PROVIDER = "bedrock"

# Converse stop reasons we pass through unchanged; the rest are folded below.
_KNOWN_STOP_REASONS = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "tool_use", "content_filtered"}
)
_FILTERED_STOP_REASONS = frozenset({"guardrail_intervened", "content_filtered"})

_JSON_INSTRUCTION = (
    "Answer with a single JSON object only, with no text before or after it and no "
    "Markdown code fence. The object must validate against this JSON schema:\n"
)


def _plain(value: Any) -> Any:
    """A deep copy made of dicts/lists only: botocore's document serialiser rejects Mappings."""
    return json.loads(json.dumps(value))


def build_converse_kwargs(model_id: str, request: ChatRequest) -> dict[str, Any]:
    """The keyword arguments of ``converse`` / ``converse_stream`` for one request."""
    kwargs: dict[str, Any] = {
        "modelId": model_id,
        "messages": [
            {"role": message.role, "content": [{"text": message.content}]}
            for message in request.messages
        ],
    }
    system = request.system
    if request.json_schema is not None:
        # Converse has no response_format that every Bedrock model honours, so structured
        # output is requested in the system prompt; the battery validates the answer.
        instruction = _JSON_INSTRUCTION + json.dumps(_plain(request.json_schema), indent=2)
        system = f"{system}\n\n{instruction}" if system else instruction
    if system:
        kwargs["system"] = [{"text": system}]
    inference: dict[str, Any] = {}
    if request.max_tokens is not None:
        inference["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = list(request.stop)
    if inference:
        kwargs["inferenceConfig"] = inference
    if request.tools:
        kwargs["toolConfig"] = {
            "tools": [
                {
                    "toolSpec": {
                        "name": tool.name,
                        "description": tool.description,
                        "inputSchema": {"json": _plain(tool.parameters)},
                    }
                }
                for tool in request.tools
            ]
        }
    return kwargs


def normalise_stop_reason(reason: str | None) -> str:
    """Fold Bedrock's stop reasons into modelcert's small set."""
    if reason in _FILTERED_STOP_REASONS:
        return "content_filtered"
    if reason in _KNOWN_STOP_REASONS:
        return reason
    return "other"


def _usage(usage: Mapping[str, Any] | None) -> Usage | None:
    if not usage:
        return None
    return Usage(int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0)))


def response_events(response: Mapping[str, Any]) -> list[ChatEvent]:
    """The events of a non-streaming Converse response, in the same order as a stream's."""
    events: list[ChatEvent] = []
    message = response.get("output", {}).get("message", {})
    for block in message.get("content", []):
        if block.get("text"):
            events.append(TextDelta(block["text"]))
        elif "toolUse" in block:
            tool = block["toolUse"]
            arguments = json.dumps(tool.get("input", {}))
            events.append(ToolCall(tool.get("toolUseId", ""), tool.get("name", ""), arguments))
    usage = _usage(response.get("usage"))
    if usage is not None:
        events.append(usage)
    events.append(Stop(normalise_stop_reason(response.get("stopReason"))))
    return events


class StreamDecoder:
    """Turns ConverseStream events into ChatEvents.

    Tool input arrives as JSON text fragments, so a ToolCall is emitted whole at its
    block's ``contentBlockStop``. Bedrock sends ``messageStop`` before ``metadata``;
    the Stop is held back until ``finish()`` so that Stop is always the last event and
    a consumer that stops reading at Stop still sees Usage.
    """

    def __init__(self) -> None:
        self._tools: dict[int, ToolCallBuffer] = {}
        self._stop: Stop | None = None

    def feed(self, event: Mapping[str, Any]) -> list[ChatEvent]:
        """Decode one stream event; most yield zero or one ChatEvent."""
        if "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            delta = body.get("delta", {})
            if delta.get("text"):
                return [TextDelta(delta["text"])]
            buffer = self._tools.get(body.get("contentBlockIndex", 0))
            if "toolUse" in delta and buffer is not None:
                buffer.parts.append(delta["toolUse"].get("input", ""))
        elif "contentBlockStart" in event:
            body = event["contentBlockStart"]
            tool = body.get("start", {}).get("toolUse")
            if tool is not None:
                index = body.get("contentBlockIndex", 0)
                self._tools[index] = ToolCallBuffer(tool.get("toolUseId", ""), tool.get("name", ""))
        elif "contentBlockStop" in event:
            done = self._tools.pop(event["contentBlockStop"].get("contentBlockIndex", 0), None)
            if done is not None:
                return [done.call()]
        elif "messageStop" in event:
            self._stop = Stop(normalise_stop_reason(event["messageStop"].get("stopReason")))
        elif "metadata" in event:
            usage = _usage(event["metadata"].get("usage"))
            return [usage] if usage is not None else []
        return []

    def finish(self) -> list[ChatEvent]:
        """Events due when the stream has ended (the held-back Stop)."""
        return [self._stop] if self._stop is not None else []


_TIMEOUTS = (
    ReadTimeoutError,
    ConnectTimeoutError,
    urllib3.exceptions.TimeoutError,
    TimeoutError,
)
# urllib3 errors surface unwrapped while an event stream is being read.
_CONNECTION_ERRORS = (
    BotoConnectionError,
    ConnectionClosedError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.NewConnectionError,
    ConnectionError,
)


def to_provider_error(exc: BaseException) -> ProviderError | None:
    """The ProviderError for a boto3/botocore/transport failure; None for anything else."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, StreamCancelled):
        return ProviderError(str(exc), code="StreamCancelled", provider=PROVIDER)
    if isinstance(exc, ClientError):
        # Also covers EventStreamError (exception frames), which has no ResponseMetadata.
        error = exc.response.get("Error", {})
        metadata = exc.response.get("ResponseMetadata", {})
        headers = metadata.get("HTTPHeaders", {})
        return ProviderError(
            error.get("Message") or str(exc),
            status=metadata.get("HTTPStatusCode"),
            code=error.get("Code") or None,
            retry_after=parse_retry_after(headers.get("retry-after")),
            provider=PROVIDER,
        )
    if isinstance(exc, _TIMEOUTS):
        code = "TimeoutError"
    elif isinstance(exc, NoCredentialsError | PartialCredentialsError):
        code = "NoCredentialsError"
    elif isinstance(exc, _CONNECTION_ERRORS):
        code = "ConnectionError"
    elif isinstance(exc, BotoCoreError):
        code = type(exc).__name__
    else:
        return None
    return ProviderError(str(exc) or type(exc).__name__, code=code, provider=PROVIDER)
