"""The test battery (DOMAIN §3 plus what users of comparable tools expect): what each
test asks, which capability or vendor it needs, its timeout. A test's `run` talks to
the provider only through the `CallContext` the runner hands it; verdicts live in
`verdicts.py`.

Generic tests cover two of the old vendor extras for every vendor: `system-prompt`
(Anthropic's system message, Cohere's preamble) and `multi-turn-recall` (Cohere's
three-turn "Alice" history).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelcert.certify.verdicts import (
    PERSON_SCHEMA,
    WEATHER_TOOL,
    ChatResponse,
    Verdict,
    has_text,
    verdict_contains,
    verdict_ends_at_max_tokens,
    verdict_json,
    verdict_min_length,
    verdict_stays_short,
    verdict_stop_sequence,
    verdict_streaming,
    verdict_tool_call,
    verdict_ttft,
    verdict_usage,
)
from modelcert.domain import Capabilities
from modelcert.providers.base import ChatRequest, Message, ProviderError

DEFAULT_TIMEOUT_S = 30.0
AMAZON_MAX_TOKENS = 50
GOOGLE_MAX_TOKENS = 50

# What a deployment of a provider kind is assumed to support when it declares nothing
# (`modelcert catalog add-deployment` without the capability, and discovery): the native
# APIs of Anthropic and Google take tools, JSON schema output, system prompts, stop
# sequences and images for every current chat model. The other kinds front models of
# every kind, so nothing optional is assumed for them.
KIND_CAPABILITIES: dict[str, Capabilities] = {
    "anthropic": Capabilities(tools=True, json_output=True, vision=True),
    "gemini": Capabilities(tools=True, json_output=True, vision=True),
}


def default_capabilities(kind: str) -> Capabilities:
    """The capabilities a deployment of `kind` is given unless it says otherwise."""
    return KIND_CAPABILITIES.get(kind, Capabilities())


class CallContext(Protocol):
    """What a running test may do: call the model (with timeout and retries) and wait."""

    streaming: bool
    availability_gap_s: float  # 2 s in production; the engine's timing sets it

    async def call(self, request: ChatRequest) -> ChatResponse: ...

    async def sleep(self, seconds: float) -> None: ...

    async def judge(self, ref: str, request: ChatRequest) -> ChatResponse:
        """Ask another catalog deployment (`provider/model-id`, as the plan resolved it):
        an `llm-judge` assertion's grader. Its calls are counted apart (tokens, cost)."""
        ...


RunFn = Callable[[CallContext], Awaitable[Verdict]]


def _always(caps: Capabilities) -> bool:
    return True


@dataclass(frozen=True)
class BatteryTest:
    __test__ = False

    id: str
    title: str
    run: RunFn
    timeout_s: float = DEFAULT_TIMEOUT_S
    requires: Callable[[Capabilities], bool] = field(default=_always)
    requirement: str = ""  # names the capability, for the SKIPPED message
    vendors: frozenset[str] = frozenset()  # lower-case; empty means every vendor
    # The optional request feature this test exercises beyond the basic request (tools,
    # JSON mode, stop sequences, sampling parameters): an endpoint that answers the basic
    # request but rejects this one lacks the feature (`certify.evidence`).
    feature: str | None = None


def _req(ctx: CallContext, text: str, **kwargs: Any) -> ChatRequest:
    kwargs.setdefault("stream", ctx.streaming)
    return ChatRequest(messages=(Message("user", text),), **kwargs)


async def _basic_prompt(ctx: CallContext) -> Verdict:
    return has_text(await ctx.call(_req(ctx, "Hi")))


async def _streaming(ctx: CallContext) -> Verdict:
    return verdict_streaming(await ctx.call(_req(ctx, "Count from 1 to 5", stream=True)))


async def _parameters(ctx: CallContext) -> Verdict:
    return has_text(await ctx.call(_req(ctx, "Hi", temperature=0.7, max_tokens=100)))


async def _error_handling(ctx: CallContext) -> Verdict:
    # A provider error raises out of ctx.call and is classified by the runner.
    return has_text(await ctx.call(_req(ctx, "Respond with OK")))


async def _availability(ctx: CallContext) -> Verdict:
    first = await ctx.call(_req(ctx, "Hi"))
    if not first.text.strip():
        return Verdict.fail("empty response on the first call")
    await ctx.sleep(ctx.availability_gap_s)
    try:
        second = await ctx.call(_req(ctx, "Hi"))
    except ProviderError as exc:
        raise ProviderError(
            f"inconsistent availability: first call answered, second failed: {exc.message}",
            status=exc.status,
            code=exc.code,
            retry_after=exc.retry_after,
            provider=exc.provider,
        ) from exc
    if not second.text.strip():
        return Verdict.fail("inconsistent availability: second answer empty")
    return Verdict.ok(f"two calls {ctx.availability_gap_s:g} s apart both answered")


async def _time_to_first_token(ctx: CallContext) -> Verdict:
    return verdict_ttft(await ctx.call(_req(ctx, "Write one sentence about the sea.")))


async def _token_usage(ctx: CallContext) -> Verdict:
    return verdict_usage(await ctx.call(_req(ctx, "Say hello.")))


async def _system_prompt(ctx: CallContext) -> Verdict:
    request = _req(
        ctx,
        "What is your name?",
        system="Your name is Quill. When asked your name, answer with just that name.",
    )
    return verdict_contains(await ctx.call(request), "Quill", "system prompt")


async def _multi_turn_recall(ctx: CallContext) -> Verdict:
    request = ChatRequest(
        messages=(
            Message("user", "My name is Alice. Please remember it."),
            Message("assistant", "Nice to meet you, Alice! I will remember your name."),
            Message("user", "What is my name?"),
        ),
        stream=ctx.streaming,
    )
    return verdict_contains(await ctx.call(request), "Alice", "multi-turn recall")


async def _tool_calling(ctx: CallContext) -> Verdict:
    request = _req(
        ctx,
        "What is the weather in Paris right now? Use the get_weather tool.",
        tools=(WEATHER_TOOL,),
    )
    return verdict_tool_call(await ctx.call(request))


async def _json_output(ctx: CallContext) -> Verdict:
    request = _req(
        ctx,
        "Return a JSON object describing a person named Ada who is 36 years old, "
        "with the keys name and age. Answer with the JSON only.",
        json_schema=PERSON_SCHEMA,
    )
    return verdict_json(await ctx.call(request))


async def _stop_sequence(ctx: CallContext) -> Verdict:
    request = _req(ctx, "Count from 1 to 10, separated by commas.", stop=("5",))
    return verdict_stop_sequence(await ctx.call(request))


async def _anthropic_sampling(ctx: CallContext) -> Verdict:
    try:
        response = await ctx.call(_req(ctx, "Hi", temperature=0.5, top_p=0.9))
    except ProviderError as exc:
        # Newer Claude models refuse temperature and top_p together: documented, not a fault.
        if exc.status == 400 or (exc.code or "").lower() == "validationexception":
            return Verdict.ok(f"temperature + top_p rejected as documented: {exc.message}")
        raise
    return has_text(response)


async def _amazon_haiku(ctx: CallContext) -> Verdict:
    return verdict_min_length(await ctx.call(_req(ctx, "Write a haiku about the sea.")), 20)


async def _amazon_max_tokens(ctx: CallContext) -> Verdict:
    request = _req(ctx, "Count from 1 to 100, separated by commas.", max_tokens=AMAZON_MAX_TOKENS)
    return verdict_stays_short(await ctx.call(request), AMAZON_MAX_TOKENS)


async def _google_max_tokens(ctx: CallContext) -> Verdict:
    request = _req(ctx, "Count from 1 to 100, separated by commas.", max_tokens=GOOGLE_MAX_TOKENS)
    return verdict_ends_at_max_tokens(await ctx.call(request), GOOGLE_MAX_TOKENS)


def _streams(caps: Capabilities) -> bool:
    return caps.streaming


BATTERY: tuple[BatteryTest, ...] = (
    BatteryTest("basic-prompt", "Basic prompt", _basic_prompt),
    BatteryTest("streaming", "Streaming", _streaming, requires=_streams, requirement="streaming"),
    BatteryTest("parameters", "Temperature and max tokens", _parameters, feature="sampling"),
    BatteryTest("error-handling", "Clean answer, no error event", _error_handling),
    BatteryTest("availability", "Two calls 2 s apart", _availability, timeout_s=60.0),
    BatteryTest(
        "time-to-first-token",
        "Time to first token",
        _time_to_first_token,
        requires=_streams,
        requirement="streaming",
    ),
    BatteryTest("token-usage", "Token usage reported", _token_usage),
    BatteryTest(
        "system-prompt",
        "System prompt honoured",
        _system_prompt,
        requires=lambda caps: caps.system_prompt,
        requirement="system_prompt",
    ),
    BatteryTest("multi-turn-recall", "Multi-turn recall", _multi_turn_recall),
    BatteryTest(
        "tool-calling",
        "Tool call with valid arguments",
        _tool_calling,
        requires=lambda caps: caps.tools,
        requirement="tools",
        feature="tools",
    ),
    BatteryTest(
        "json-output",
        "JSON output matching a schema",
        _json_output,
        requires=lambda caps: caps.json_output,
        requirement="json_output",
        feature="json_output",
    ),
    BatteryTest(
        "stop-sequence",
        "Stop sequence honoured",
        _stop_sequence,
        requires=lambda caps: caps.stop_sequences,
        requirement="stop_sequences",
        feature="stop_sequences",
    ),
    BatteryTest(
        "anthropic-sampling",
        "Temperature with top-p",
        _anthropic_sampling,
        vendors=frozenset({"anthropic"}),
        feature="sampling",
    ),
    BatteryTest(
        "amazon-haiku",
        "Haiku longer than 20 characters",
        _amazon_haiku,
        vendors=frozenset({"amazon"}),
    ),
    BatteryTest(
        "amazon-max-tokens",
        "Max tokens keeps a count short",
        _amazon_max_tokens,
        vendors=frozenset({"amazon"}),
    ),
    BatteryTest(
        # Gemini reports why an answer ended (finishReason): one cut by maxOutputTokens
        # must say MAX_TOKENS, or a caller takes a truncated answer for a whole one.
        "google-max-tokens",
        "Max output tokens ends the answer as MAX_TOKENS",
        _google_max_tokens,
        vendors=frozenset({"google"}),
    ),
)

BATTERY_BY_ID = {test.id: test for test in BATTERY}


@dataclass(frozen=True)
class PlannedTest:
    """A test chosen for a deployment; `skip_reason` set means it will be SKIPPED."""

    test: BatteryTest
    skip_reason: str | None = None


def plan_battery(
    vendor: str, caps: Capabilities, battery: Sequence[BatteryTest] = BATTERY
) -> list[PlannedTest]:
    """Tests for this vendor, in order; undeclared capabilities give SKIPPED, not FAILED."""
    planned: list[PlannedTest] = []
    for test in battery:
        if test.vendors and vendor.lower() not in test.vendors:
            continue
        reason = None if test.requires(caps) else f"capability not declared: {test.requirement}"
        planned.append(PlannedTest(test, reason))
    return planned
