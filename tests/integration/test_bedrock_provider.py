"""BedrockProvider through real boto3/botocore against a local Bedrock wire-format server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from modelcert.domain import InferenceType
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
from modelcert.providers.bedrock import BedrockProvider, transport_timeout
from modelcert.providers.bedrock_stream import THREAD_NAME_PREFIX
from tests.support.fake_bedrock import (
    Behaviour,
    FakeBedrock,
    HttpError,
    StreamException,
    ToolUse,
    default_availability,
    model_summary,
)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
OTHER_MODEL = "amazon.nova-lite-v1:0"  # default behaviour: answers at once
HELLO = ChatRequest(messages=(Message("user", "Say hello."),))
TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(autouse=True)
def aws_env(aws_test_env: None) -> None:
    """Dummy credentials only (see conftest.aws_test_env)."""


@pytest.fixture
def fake() -> Iterator[FakeBedrock]:
    with FakeBedrock() as server:
        yield server


@pytest.fixture
async def provider(fake: FakeBedrock) -> AsyncIterator[BedrockProvider]:
    bedrock = BedrockProvider(endpoint_url=fake.url, connect_timeout=2, read_timeout=5)
    yield bedrock
    await bedrock.aclose()


async def collect(
    provider: BedrockProvider, request: ChatRequest = HELLO, target: Target | None = None
) -> list[ChatEvent]:
    target = target or Target(MODEL, "us-east-1")
    return [event async for event in provider.chat(target, request)]


def stream_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX)}


async def assert_threads_end(before: set[threading.Thread], within: float = 2.0) -> None:
    """Every stream thread started since `before` ends within `within` seconds."""
    for thread in stream_threads() - before:
        await asyncio.to_thread(thread.join, within)
        assert not thread.is_alive(), f"{thread.name} still running"


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_is_a_provider() -> None:
    bedrock = BedrockProvider()
    assert isinstance(bedrock, ProviderClient)
    assert (bedrock.kind, bedrock.simulated) == ("bedrock", False)


def test_from_config() -> None:
    bedrock = BedrockProvider.from_config(
        {"endpoint_url": "http://127.0.0.1:1", "connect_timeout": "3", "read_timeout": 7}
    )
    assert bedrock._endpoint_url == "http://127.0.0.1:1"
    options = vars(bedrock._config)  # botocore sets Config options as plain attributes
    assert (options["connect_timeout"], options["read_timeout"]) == (3.0, 7.0)
    assert options["retries"] == {"total_max_attempts": 1, "mode": "standard"}


# -- answers -------------------------------------------------------------------------


async def test_streamed_answer(fake: FakeBedrock, provider: BedrockProvider) -> None:
    fake.behaviours[MODEL] = Behaviour(text=TEXT, chunks=4, input_tokens=21, output_tokens=9)
    events = await collect(provider)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 4
    assert "".join(d.text for d in deltas) == TEXT
    assert events[-2:] == [Usage(21, 9), Stop("end_turn")]
    recorded = fake.last_request(MODEL)
    assert recorded.path.endswith("/converse-stream")
    assert recorded.body["messages"] == [{"role": "user", "content": [{"text": "Say hello."}]}]


async def test_non_streamed_answer(fake: FakeBedrock, provider: BedrockProvider) -> None:
    fake.behaviours[MODEL] = Behaviour(text=TEXT, stop_reason="max_tokens")
    events = await collect(provider, ChatRequest(messages=HELLO.messages, stream=False))
    assert events == [TextDelta(TEXT), Usage(11, 7), Stop("max_tokens")]
    assert fake.last_request(MODEL).path.endswith("/converse")


@pytest.mark.parametrize("stream", [True, False])
async def test_tool_call(fake: FakeBedrock, provider: BedrockProvider, stream: bool) -> None:
    arguments = {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}
    fake.behaviours[MODEL] = Behaviour(
        text="", tool_use=ToolUse("get_weather", arguments, "tooluse_42", fragments=5)
    )
    tool = ToolSpec(
        "get_weather",
        "Weather forecast for a city.",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    request = ChatRequest(messages=HELLO.messages, tools=(tool,), stream=stream)
    events = await collect(provider, request)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1
    assert (calls[0].id, calls[0].name) == ("tooluse_42", "get_weather")
    assert json.loads(calls[0].arguments) == arguments
    assert events[-1] == Stop("tool_use")
    assert fake.last_request(MODEL).body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather forecast for a city.",
                    "inputSchema": {"json": dict(tool.parameters)},
                }
            }
        ]
    }


async def test_request_mapping(fake: FakeBedrock, provider: BedrockProvider) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    request = ChatRequest(
        messages=(Message("user", "2+2?"), Message("assistant", "4"), Message("user", "JSON?")),
        system="You are terse.",
        temperature=0.0,
        top_p=0.9,
        max_tokens=64,
        stop=("END",),
        json_schema=schema,
    )
    await collect(provider, request)
    body = fake.last_request(MODEL).body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["inferenceConfig"] == {
        "maxTokens": 64,
        "temperature": 0.0,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    system = body["system"][0]["text"]
    assert system.startswith("You are terse.")
    assert "JSON" in system and '"answer"' in system
    assert "toolConfig" not in body


async def test_minimal_request_sends_no_optional_fields(
    fake: FakeBedrock, provider: BedrockProvider
) -> None:
    await collect(provider)
    assert set(fake.last_request(MODEL).body) == {"messages"}


@pytest.mark.parametrize(
    ("model_id", "region", "inference_type", "sent"),
    [
        (MODEL, "us-east-1", InferenceType.INFERENCE_PROFILE, f"us.{MODEL}"),
        (MODEL, "eu-west-1", InferenceType.INFERENCE_PROFILE, f"eu.{MODEL}"),
        (MODEL, "ap-southeast-1", InferenceType.INFERENCE_PROFILE, f"apac.{MODEL}"),
        (MODEL, "eu-west-1", InferenceType.ON_DEMAND, MODEL),
        (
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc",
            "us-east-1",
            InferenceType.PROVISIONED,
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc",
        ),
    ],
)
async def test_model_id_in_request_path(
    fake: FakeBedrock,
    provider: BedrockProvider,
    model_id: str,
    region: str,
    inference_type: InferenceType,
    sent: str,
) -> None:
    await collect(provider, target=Target(model_id, region, inference_type))
    assert fake.request_counts[sent] == 1
    assert fake.last_request().model_id == sent


# -- errors --------------------------------------------------------------------------

HTTP_ERRORS = [
    HttpError("ThrottlingException", "Too many requests, please wait.", retry_after="7"),
    HttpError("AccessDeniedException", "You don't have access to the model."),
    HttpError("ValidationException", "Invocation with on-demand throughput isn't supported."),
    HttpError("ResourceNotFoundException", "Could not resolve the foundation model."),
    HttpError("UnrecognizedClientException", "The security token included is invalid."),
    HttpError("ServiceUnavailableException", "Service unavailable.", retry_after="2"),
]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("error", HTTP_ERRORS, ids=[e.code for e in HTTP_ERRORS])
async def test_http_errors(
    fake: FakeBedrock, provider: BedrockProvider, error: HttpError, stream: bool
) -> None:
    fake.behaviours[MODEL] = Behaviour(error=error)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, ChatRequest(messages=HELLO.messages, stream=stream))
    assert caught.value.status == error.http_status
    assert caught.value.code == error.code
    assert caught.value.message == error.message
    expected_retry = float(error.retry_after) if error.retry_after else None
    assert caught.value.retry_after == expected_retry
    assert caught.value.provider == "bedrock"
    assert fake.request_counts[MODEL] == 1  # botocore did not retry behind our back


@pytest.mark.parametrize("exception_type", ["throttlingException", "modelStreamErrorException"])
async def test_exception_frame_mid_stream(
    fake: FakeBedrock, provider: BedrockProvider, exception_type: str
) -> None:
    fake.behaviours[MODEL] = Behaviour(
        text=TEXT, chunks=5, stream_exception=StreamException(exception_type, "boom: busy", 2)
    )
    received: list[ChatEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.chat(Target(MODEL, "us-east-1"), HELLO):
            received.append(event)
    assert len(received) == 2 and all(isinstance(e, TextDelta) for e in received)
    assert caught.value.code == exception_type
    assert caught.value.message == "boom: busy"
    assert caught.value.status is None


@pytest.mark.parametrize("stream", [True, False])
async def test_connection_refused(stream: bool) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    bedrock = BedrockProvider(endpoint_url=url, connect_timeout=2)
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(bedrock, ChatRequest(messages=HELLO.messages, stream=stream))
        assert caught.value.code == "ConnectionError"
        assert url in caught.value.message
        assert caught.value.status is None
        with pytest.raises(ProviderError) as listing:
            await bedrock.list_models("us-east-1")
        assert listing.value.code == "ConnectionError"
    finally:
        await bedrock.aclose()


# A caller's timeout beyond the configured read timeout changes nothing: still 0.5 s.
@pytest.mark.parametrize("timeout_s", [None, 30.0])
@pytest.mark.parametrize("stream", [True, False])
async def test_read_timeout(fake: FakeBedrock, stream: bool, timeout_s: float | None) -> None:
    # Stalls after the first chunk when streaming; answers too late otherwise.
    fake.behaviours[MODEL] = Behaviour(text=TEXT, stall_after_chunks=1, delay=0 if stream else 3)
    bedrock = BedrockProvider(endpoint_url=fake.url, read_timeout=0.5)
    request = ChatRequest(messages=HELLO.messages, stream=stream, timeout_s=timeout_s)
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(bedrock, request)
        assert caught.value.code == "TimeoutError"
        # botocore says "Read timeout on endpoint URL", urllib3 (mid-stream) "Read timed out".
        assert "read time" in caught.value.message.lower()
    finally:
        await bedrock.aclose()


async def test_no_credentials(
    monkeypatch: pytest.MonkeyPatch, fake: FakeBedrock, provider: BedrockProvider
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    assert caught.value.code == "NoCredentialsError"
    assert caught.value.status is None
    assert "credentials" in caught.value.message.lower()
    assert fake.request_counts[MODEL] == 0


async def test_global_region_is_rejected(provider: BedrockProvider) -> None:
    with pytest.raises(ProviderError, match="invalid region"):
        await collect(provider, target=Target(MODEL))


# -- cancellation and the event loop ----------------------------------------------------


async def test_timeout_cancels_a_stalled_stream(
    fake: FakeBedrock, provider: BedrockProvider
) -> None:
    fake.behaviours[MODEL] = Behaviour(text=TEXT, chunks=4, stall_after_chunks=1)
    before = stream_threads()
    stream = provider.chat(Target(MODEL, "us-east-1"), HELLO)
    # The first chunk arrives before the stall; on a loaded machine the client's first
    # call alone can take longer than the timeout under test, so it is awaited apart.
    first = await asyncio.wait_for(anext(stream), 30)
    assert isinstance(first, TextDelta)
    received: list[ChatEvent] = []
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            async for event in stream:
                received.append(event)
    assert time.monotonic() - started < 1.5  # cut at the timeout, not at read_timeout
    assert received == []
    # The reader thread was blocked in a socket read: it must end now, not at read_timeout.
    await assert_threads_end(before)


@pytest.mark.parametrize("stream", [True, False])
async def test_timeout_closes_a_connection_that_never_got_headers(
    fake: FakeBedrock, stream: bool
) -> None:
    # The server takes the request and never answers, not even with a status line: the
    # call is blocked inside botocore, where StreamPump.cancel() cannot reach it.
    fake.behaviours[MODEL] = Behaviour(stall_before_headers=True)
    # Long enough that only the caller's timeout can explain a hang-up within seconds.
    bedrock = BedrockProvider(endpoint_url=fake.url, connect_timeout=2, read_timeout=30)
    request = ChatRequest(messages=HELLO.messages, stream=stream, timeout_s=0.5)
    try:
        # Builds the client for this timeout beforehand: on a loaded machine that alone
        # can take longer than the timeout under test.
        await collect(bedrock, request, Target(OTHER_MODEL, "us-east-1"))
        before = stream_threads()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await collect(bedrock, request)
        assert time.monotonic() - started < 1.5  # cancelled at the caller's timeout
        assert fake.request_counts[MODEL] == 1
        hung_up = await asyncio.to_thread(fake.wait_for_hangup, MODEL, 3)
        assert hung_up is not None, "connection still open 3 s after the call started"
        assert hung_up - started < 1.5
        await assert_threads_end(before)
    finally:
        await bedrock.aclose()


@pytest.mark.parametrize(
    ("timeout_s", "read_timeout", "expected"),
    [
        (None, 60, None),  # no caller timeout: the configured ones
        (0.5, 60, 0.75),
        (0.6, 60, 1.0),  # rounded up to the step above the margin
        (30, 60, 30.25),
        (0, 60, 0.25),
        (59.9, 60, None),  # would exceed the configured read timeout
        (120, 60, None),
    ],
)
def test_transport_timeout(
    timeout_s: float | None, read_timeout: float, expected: float | None
) -> None:
    assert transport_timeout(timeout_s, read_timeout) == expected


async def test_clients_are_shared_per_transport_timeout(fake: FakeBedrock) -> None:
    bedrock = BedrockProvider(endpoint_url=fake.url, connect_timeout=2, read_timeout=5)
    try:
        for timeout_s in (None, 10.0, 1.0, 0.9, 1.0):
            request = ChatRequest(messages=HELLO.messages, timeout_s=timeout_s)
            assert (await collect(bedrock, request))[-1] == Stop("end_turn")
        # None and 10 s share the configured client; 0.9 s and 1 s share one of 1.25 s.
        assert sorted(bedrock._runtime_clients, key=str) == [
            ("us-east-1", 1.25),
            ("us-east-1", None),
        ]
        options = vars(bedrock._runtime("us-east-1", 1.25).meta.config)
        assert (options["connect_timeout"], options["read_timeout"]) == (1.25, 1.25)
        assert options["retries"] == {"total_max_attempts": 1, "mode": "standard"}
    finally:
        await bedrock.aclose()


async def test_closing_the_generator_early_stops_the_reader(
    fake: FakeBedrock, provider: BedrockProvider
) -> None:
    fake.behaviours[MODEL] = Behaviour(text=TEXT, chunks=4, stall_after_chunks=1)
    before = stream_threads()
    events = provider.chat(Target(MODEL, "us-east-1"), HELLO)
    first = await anext(events)
    assert isinstance(first, TextDelta)
    started = time.monotonic()
    await events.aclose()
    assert time.monotonic() - started < 2  # not held until the stalled stream's read timeout
    await assert_threads_end(before)


@pytest.mark.parametrize("stream", [True, False])
async def test_slow_call_does_not_block_the_event_loop(
    fake: FakeBedrock, provider: BedrockProvider, stream: bool
) -> None:
    fake.behaviours[MODEL] = Behaviour(text=TEXT, delay=1.0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        started = time.monotonic()
        events = await collect(provider, ChatRequest(messages=HELLO.messages, stream=stream))
        elapsed = time.monotonic() - started
    finally:
        ticking.cancel()
    assert elapsed >= 1.0
    assert events[-1] == Stop("end_turn")
    assert ticks >= 12  # ~20 expected; a blocked loop would give 0 or 1


async def test_concurrent_streams(fake: FakeBedrock, provider: BedrockProvider) -> None:
    fake.behaviours[MODEL] = Behaviour(text=TEXT, delay=0.5)
    results = await asyncio.gather(*(collect(provider) for _ in range(6)))
    assert fake.most_delayed_at_once >= 3  # in parallel (6 when not starved), not in a row
    assert all(events[-1] == Stop("end_turn") for events in results)


# -- discovery -----------------------------------------------------------------------


async def test_list_models(fake: FakeBedrock, provider: BedrockProvider) -> None:
    fake.models = [
        model_summary(MODEL, name="Claude 3 Haiku", inference_types=("ON_DEMAND",)),
        model_summary(
            "anthropic.claude-3-7-sonnet-20250219-v1:0",
            name="Claude 3.7 Sonnet",
            inference_types=("INFERENCE_PROFILE",),
        ),
        model_summary("amazon.titan-embed", provider="Amazon", streaming=False),
        model_summary("meta.llama3-70b", provider="Meta", inference_types=("PROVISIONED",)),
        model_summary("cohere.command-r-v1:0", provider="Cohere"),
    ]
    fake.availability["amazon.titan-embed"] = default_availability("amazon.titan-embed") | {
        "entitlementAvailability": "NOT_AVAILABLE"
    }
    fake.availability["meta.llama3-70b"] = HttpError("AccessDeniedException", "Not authorized.")
    fake.availability["cohere.command-r-v1:0"] = HttpError("ValidationException", "Unsupported.")
    models = await provider.list_models("us-east-1")
    by_id = {m.model_id: m for m in models}
    assert [m.model_id for m in models] == [s["modelId"] for s in fake.models]
    haiku = by_id[MODEL]
    assert (haiku.name, haiku.vendor, haiku.streaming) == ("Claude 3 Haiku", "Anthropic", True)
    assert haiku.inference_types == (InferenceType.ON_DEMAND,)
    assert (haiku.input_modalities, haiku.output_modalities) == (("TEXT",), ("TEXT",))
    assert haiku.entitled is True
    sonnet = by_id["anthropic.claude-3-7-sonnet-20250219-v1:0"]
    assert sonnet.inference_types == (InferenceType.INFERENCE_PROFILE,)
    assert sonnet.entitled is True
    assert by_id["amazon.titan-embed"].streaming is False
    assert by_id["amazon.titan-embed"].entitled is False
    assert by_id["meta.llama3-70b"].entitled is False
    assert by_id["meta.llama3-70b"].inference_types == (InferenceType.PROVISIONED,)
    assert by_id["cohere.command-r-v1:0"].entitled is None
    # One availability call per model, with the id decoded back from the path.
    assert all(fake.request_counts[s["modelId"]] == 1 for s in fake.models)


async def test_list_models_error(fake: FakeBedrock, provider: BedrockProvider) -> None:
    fake.list_error = HttpError("AccessDeniedException", "User is not authorized to list.")
    with pytest.raises(ProviderError) as caught:
        await provider.list_models("eu-west-1")
    assert (caught.value.status, caught.value.code) == (403, "AccessDeniedException")
    assert caught.value.message == "User is not authorized to list."


async def test_aclose_ends_open_streams(fake: FakeBedrock) -> None:
    fake.behaviours[MODEL] = Behaviour(text=TEXT, chunks=4, stall_after_chunks=1)
    bedrock = BedrockProvider(endpoint_url=fake.url, read_timeout=30)
    before = stream_threads()
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in bedrock.chat(Target(MODEL, "us-east-1"), HELLO):
            first_delta.set()

    reader = asyncio.create_task(consume())
    await asyncio.wait_for(first_delta.wait(), 2)
    await bedrock.aclose()
    with pytest.raises(ProviderError) as caught:
        await asyncio.wait_for(reader, 1)
    assert caught.value.code == "StreamCancelled"
    await assert_threads_end(before)
