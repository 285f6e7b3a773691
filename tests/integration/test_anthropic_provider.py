"""AnthropicProvider through the real anthropic SDK against a local server speaking the
Messages API wire format (tests/support/fake_anthropic.py): the SDK's own HTTP client,
SSE decoder and models parse every byte."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from modelcert.certify.errors import categorise_error
from modelcert.domain import ErrorCategory
from modelcert.providers.anthropic import AnthropicProvider
from modelcert.providers.base import (
    ChatEvent,
    ChatRequest,
    Message,
    ProviderClient,
    ProviderError,
    Stop,
    Target,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)
from modelcert.providers.registry import build_provider
from tests.support.fake_anthropic import (
    Behaviour,
    FakeAnthropic,
    HttpError,
    StreamError,
    model_info,
)
from tests.support.fake_http import HEALTHY_TEXT, PERSON, WEATHER_ARGUMENTS

MODEL = "claude-sonnet-4-5"
KEY = "planted-anthropic-key-Hq73Lx9"
HELLO = ChatRequest(messages=(Message("user", "Say hello."),))
WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def provider(fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    client = AnthropicProvider(api_key=KEY, base_url=fake.url, timeout=30)
    yield client
    await client.aclose()


async def collect(
    provider: AnthropicProvider, request: ChatRequest = HELLO, model: str = MODEL
) -> list[ChatEvent]:
    return [event async for event in provider.chat(Target(model), request)]


def stream(flag: bool) -> ChatRequest:
    return ChatRequest(messages=HELLO.messages, stream=flag)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- configuration --------------------------------------------------------------------


def test_is_a_provider_built_by_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_ANTHROPIC_KEY", KEY)
    provider = build_provider("anthropic", {"api_key_env": "MY_ANTHROPIC_KEY"})
    assert isinstance(provider, AnthropicProvider) and isinstance(provider, ProviderClient)
    assert (provider.kind, provider.simulated) == ("anthropic", False)
    assert provider._api_key == KEY


def test_a_named_variable_that_is_not_set_is_missing_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MY_ANTHROPIC_KEY", raising=False)
    with pytest.raises(ProviderError) as caught:
        AnthropicProvider.from_config({"api_key_env": "MY_ANTHROPIC_KEY"})
    assert caught.value.code == "MissingCredentials"
    assert categorise_error(code=caught.value.code).category is ErrorCategory.AUTHENTICATION_ERROR


async def test_the_sdk_default_variables_are_never_used(
    monkeypatch: pytest.MonkeyPatch, fake: FakeAnthropic
) -> None:
    # A key in ANTHROPIC_API_KEY and a base URL in ANTHROPIC_BASE_URL: neither may be used
    # by a provider whose configuration names none.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-should-not-be-sent-0000")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")
    provider = AnthropicProvider.from_config({"base_url": fake.url})
    try:
        await collect(provider)
    finally:
        await provider.aclose()
    assert fake.last_request(MODEL).headers["authorization"] == "Bearer not-set"


# -- answers ---------------------------------------------------------------------------


async def test_streamed_answer(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.behaviours[MODEL] = Behaviour(text="The quick brown fox.", chunks=4, output_tokens=5)
    events = await collect(provider)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 4 and "".join(d.text for d in deltas) == "The quick brown fox."
    assert events[-2:] == [Usage(12, 5), Stop("end_turn")]
    sent = fake.last_request(MODEL)
    assert sent.path == "/v1/messages" and sent.body["stream"] is True
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["anthropic-version"]


async def test_non_streamed_answer(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.behaviours[MODEL] = Behaviour(text="Hello.", stop_reason="max_tokens")
    assert await collect(provider, stream(False)) == [
        TextDelta("Hello."),
        Usage(12, 9),
        Stop("max_tokens"),
    ]
    assert "stream" not in fake.last_request(MODEL).body


async def test_request_mapping(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    request = ChatRequest(
        messages=(Message("user", "2+2?"), Message("assistant", "4"), Message("user", "JSON?")),
        system="You are terse.",
        temperature=0.5,
        top_p=0.9,
        max_tokens=64,
        stop=("END",),
    )
    await collect(provider, request)
    body = fake.last_request(MODEL).body
    assert body["messages"] == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "JSON?"},
    ]
    assert (body["system"], body["max_tokens"], body["stop_sequences"]) == (
        "You are terse.",
        64,
        ["END"],
    )
    assert (body["temperature"], body["top_p"]) == (0.5, 0.9)
    assert "tools" not in body and "output_config" not in body


async def test_a_minimal_request_sends_the_required_max_tokens_only(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    await collect(provider)
    assert set(fake.last_request(MODEL).body) == {"model", "max_tokens", "messages", "stream"}
    assert fake.last_request(MODEL).body["max_tokens"] == 1024


@pytest.mark.parametrize("streamed", [True, False])
async def test_tool_call(fake: FakeAnthropic, provider: AnthropicProvider, streamed: bool) -> None:
    fake.behaviours[MODEL] = Behaviour(tool_fragments=5)
    request = ChatRequest(messages=HELLO.messages, tools=(WEATHER,), stream=streamed)
    events = await collect(provider, request)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.id, c.name) for c in calls] == [("toolu_fake_1", "get_weather")]
    assert json.loads(calls[0].arguments) == WEATHER_ARGUMENTS
    assert events[-1] == Stop("tool_use")
    assert fake.last_request(MODEL).body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city.",
            "input_schema": dict(WEATHER.parameters),
        }
    ]


@pytest.mark.parametrize("streamed", [True, False])
async def test_json_output(
    fake: FakeAnthropic, provider: AnthropicProvider, streamed: bool
) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    request = ChatRequest(messages=HELLO.messages, json_schema=schema, stream=streamed)
    events = await collect(provider, request)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert json.loads(text) == PERSON
    assert fake.last_request(MODEL).body["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}
    }


@pytest.mark.parametrize("streamed", [True, False])
async def test_stop_sequence(
    fake: FakeAnthropic, provider: AnthropicProvider, streamed: bool
) -> None:
    request = ChatRequest(messages=HELLO.messages, stop=("5",), stream=streamed)
    events = await collect(provider, request)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == HEALTHY_TEXT[: HEALTHY_TEXT.index("5")]
    assert events[-1] == Stop("stop_sequence")


# -- errors ----------------------------------------------------------------------------

# Every error type of the Messages API, the category a user would expect, and whether
# the runner retries it (temporary).
HTTP_ERRORS = [
    (HttpError("invalid_request_error", "max_tokens: must be positive"), "CONFIGURATION_ERROR"),
    (HttpError("authentication_error", "invalid x-api-key"), "AUTHENTICATION_ERROR"),
    (HttpError("permission_error", "Your key may not use this model."), "PERMISSION_ERROR"),
    (HttpError("not_found_error", "model: claude-nope"), "UNAVAILABLE"),
    (HttpError("request_too_large", "Request exceeds the maximum size"), "CONFIGURATION_ERROR"),
    (HttpError("rate_limit_error", "Number of requests exceeded", retry_after="7"), "RATE_LIMIT"),
    (HttpError("rate_limit_error", "Number of requests exceeded"), "RATE_LIMIT"),
    (HttpError("api_error", "Internal server error"), "SERVER_ERROR"),
    (HttpError("timeout_error", "Request timed out upstream"), "TIMEOUT"),
    (HttpError("overloaded_error", "Overloaded", retry_after="2"), "SERVER_ERROR"),
]


@pytest.mark.parametrize("streamed", [True, False])
@pytest.mark.parametrize(
    ("error", "category"),
    HTTP_ERRORS,
    ids=[f"{e.type}{'-retry-after' if e.retry_after else ''}" for e, _ in HTTP_ERRORS],
)
async def test_http_errors_are_mapped(
    fake: FakeAnthropic,
    provider: AnthropicProvider,
    error: HttpError,
    category: str,
    streamed: bool,
) -> None:
    fake.behaviours[MODEL] = Behaviour(error=error)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, stream(streamed))
    got = caught.value
    assert (got.status, got.code, got.message) == (error.http_status, error.type, error.message)
    assert got.retry_after == (float(error.retry_after) if error.retry_after else None)
    assert got.provider == "anthropic"
    assert categorise_error(code=got.code, status=got.status).category == category
    assert fake.request_counts[MODEL] == 1  # the SDK did not retry behind our back


async def test_retry_after_ms_is_preferred(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.behaviours[MODEL] = Behaviour(
        error=HttpError("rate_limit_error", "slow down", retry_after="2", retry_after_ms="250")
    )
    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    assert caught.value.retry_after == 0.25


@pytest.mark.parametrize(
    ("error_type", "category"),
    [("overloaded_error", "SERVER_ERROR"), ("api_error", "SERVER_ERROR")],
)
async def test_an_error_event_mid_stream(
    fake: FakeAnthropic, provider: AnthropicProvider, error_type: str, category: str
) -> None:
    fake.behaviours[MODEL] = Behaviour(chunks=5, stream_error=StreamError(error_type, "busy", 2))
    received: list[ChatEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.chat(Target(MODEL), HELLO):
            received.append(event)
    assert len(received) == 2 and all(isinstance(e, TextDelta) for e in received)
    assert (caught.value.code, caught.value.message, caught.value.status) == (
        error_type,
        "busy",
        None,
    )
    assert categorise_error(code=caught.value.code).category == category


async def test_a_cut_connection_is_a_network_error(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.behaviours[MODEL] = Behaviour(chunks=4, cut_after_chunks=2)
    received: list[ChatEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.chat(Target(MODEL), HELLO):
            received.append(event)
    assert len(received) == 2
    assert caught.value.code == "StreamInterrupted"
    assert categorise_error(code=caught.value.code).category is ErrorCategory.NETWORK_ERROR


@pytest.mark.parametrize("streamed", [True, False])
async def test_connection_refused(streamed: bool) -> None:
    provider = AnthropicProvider(api_key=KEY, base_url=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(provider, stream(streamed))
        assert caught.value.code == "ConnectionError" and caught.value.status is None
        assert categorise_error(code=caught.value.code).category is ErrorCategory.NETWORK_ERROR
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    "behaviour", [Behaviour(hold=True), Behaviour(stall_after_chunks=1)], ids=["hang", "stall"]
)
async def test_a_hang_is_cancelled_at_the_callers_timeout(
    fake: FakeAnthropic, provider: AnthropicProvider, behaviour: Behaviour
) -> None:
    """The read timeout is 30 s: only the caller's cancellation can close the connection
    within the wait below."""
    fake.behaviours[MODEL] = behaviour
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await collect(provider)
    if behaviour.hold:
        assert await asyncio.to_thread(fake.wait_for_hangup, MODEL, 10) is not None
    # The client is still usable for the next call.
    fake.behaviours[MODEL] = Behaviour()
    assert (await collect(provider))[-1] == Stop("end_turn")
    assert fake.request_counts[MODEL] == 2


# -- discovery -------------------------------------------------------------------------


async def test_list_models_reads_every_page(
    fake: FakeAnthropic, provider: AnthropicProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelcert.providers.anthropic._PAGE_SIZE", 2)
    fake.models = [model_info(f"claude-{n}", f"Claude {n}") for n in range(5)]
    fake.models[4] = model_info("claude-text", images=False)
    models = await provider.list_models("global")
    assert [m.model_id for m in models] == [m["id"] for m in fake.models]
    assert [r.path for r in fake.requests].count("/v1/models?limit=2") == 1
    first = models[0]
    assert (first.name, first.vendor, first.streaming, first.entitled) == (
        "Claude 0",
        "Anthropic",
        True,
        True,
    )
    assert first.input_modalities == ("TEXT", "IMAGE")
    assert models[4].input_modalities == ("TEXT",)


async def test_list_models_refused(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.list_error = HttpError("authentication_error", "invalid x-api-key")
    with pytest.raises(ProviderError) as caught:
        await provider.list_models("global")
    assert (caught.value.status, caught.value.code) == (401, "authentication_error")
