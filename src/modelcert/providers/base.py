"""The provider interface: a chat request in, a stream of events out.

Every vendor detail lives behind `Provider.chat`; failures raise `ProviderError`,
which keeps what the certification needs to classify them (HTTP status, the
provider's error code, Retry-After) and the provider's original message.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from modelcert.domain import GLOBAL_REGION, InferenceType
from modelcert.secrets import redact


@dataclass(frozen=True)
class Message:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call; `parameters` is a JSON schema object."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    # Ask for a JSON answer matching this schema (response_format / structured output).
    json_schema: Mapping[str, Any] | None = None
    stream: bool = True
    # How long the caller will wait for this call; a provider may use it to bound its own I/O.
    timeout_s: float | None = None


@dataclass(frozen=True)
class Target:
    """One deployment in one region, as a provider needs to address it."""

    model_id: str
    region: str = GLOBAL_REGION
    inference_type: InferenceType = InferenceType.ON_DEMAND
    # The deployment's free-form options (e.g. the sim profile, Azure deployment name).
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text, as the model produced it


@dataclass
class ToolCallBuffer:
    """A streamed tool call whose input arrives as JSON text fragments (Bedrock's
    ConverseStream, Anthropic's input_json_delta): emitted whole when its block ends."""

    id: str
    name: str
    parts: list[str] = field(default_factory=list)

    def call(self) -> ToolCall:
        # A tool without parameters may stream no input at all; "{}" is what the
        # non-streaming APIs report for it.
        return ToolCall(self.id, self.name, "".join(self.parts) or "{}")


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Stop:
    reason: (
        str  # normalised: end_turn, max_tokens, stop_sequence, tool_use, content_filtered, other
    )


ChatEvent = TextDelta | ToolCall | Usage | Stop


class ProviderError(Exception):
    """A provider call failed; carries what classification needs and the original text."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        provider: str = "",
    ) -> None:
        # Masked here, where every provider failure is built: what is stored, shown,
        # reported and logged from it never holds a secret the provider echoed.
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.provider = provider

    def __repr__(self) -> str:
        return (
            f"ProviderError(status={self.status!r}, code={self.code!r}, "
            f"retry_after={self.retry_after!r}, message={self.message!r})"
        )


@dataclass(frozen=True)
class DiscoveredModel:
    """A model a provider offers in a region, as discovery reports it."""

    model_id: str
    name: str
    vendor: str
    streaming: bool
    inference_types: tuple[InferenceType, ...]
    entitled: bool | None = None  # None: the provider could not tell
    input_modalities: tuple[str, ...] = ()
    output_modalities: tuple[str, ...] = ()


@runtime_checkable
class ProviderClient(Protocol):
    """One provider connection. `simulated` is True for anything that is not a real endpoint."""

    kind: str
    simulated: bool

    def chat(self, target: Target, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """Send one chat request; yield events until the answer ends or raise ProviderError.

        An async generator, so that closing it (`aclose`, e.g. on a timeout) releases the
        underlying HTTP stream at a known moment. Stop is the last event, Usage before it.
        OpenAI-compatible endpoints report a matched stop sequence as `end_turn`."""
        ...

    async def aclose(self) -> None: ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds only; HTTP dates are rare here)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)
