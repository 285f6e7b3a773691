"""OpenAIProvider against a scripted local stub and against a real llama.cpp server.

The stub tests pin down the wire contract (what is sent, how each kind of failure comes
back). The llama tests check what the transport guarantees with a real server, never that
a 135M-parameter model follows instructions.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import pytest

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
from modelcert.providers.openai import OpenAIProvider
from tests.support.llama_server import LlamaServer
from tests.support.openai_stub import (
    Canned,
    OpenAIStub,
    chunk,
    json_answer,
    sse_answer,
    usage_chunk,
)

TARGET = Target(model_id="stub-model")
HELLO = ChatRequest(messages=(Message("user", "Say hello."),))
WEATHER_TOOL = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


async def collect(
    provider: OpenAIProvider, request: ChatRequest, target: Target = TARGET
) -> list[ChatEvent]:
    async with aclosing(provider.chat(target, request)) as events:
        return [event async for event in events]


def text_of(events: list[ChatEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def _completion(content: str | None, **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": "stub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": "tool_calls" if message else "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture
async def provider(stub: OpenAIStub) -> AsyncIterator[OpenAIProvider]:
    instance = OpenAIProvider(base_url=stub.base_url, api_key="sk-stub", timeout=10)
    yield instance
    await instance.aclose()


# --- the request on the wire -------------------------------------------------------------


def test_is_a_provider() -> None:
    instance = OpenAIProvider(base_url="http://127.0.0.1:1/v1", api_key=None)
    assert isinstance(instance, ProviderClient)
    assert (instance.kind, instance.simulated) == ("openai", False)


async def test_request_maps_every_field(stub: OpenAIStub, provider: OpenAIProvider) -> None:
    stub.enqueue(sse_answer(chunk("hi", finish_reason="stop"), usage_chunk(3, 1)))
    request = ChatRequest(
        messages=(Message("user", "Q1"), Message("assistant", "A1"), Message("user", "Q2")),
        system="Be brief.",
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        stop=("END",),
        tools=(WEATHER_TOOL,),
        json_schema={"type": "object"},
    )
    await collect(provider, request)
    seen = stub.requests[0]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-stub"
    body = seen.json()
    assert body["model"] == "stub-model"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.9, 50)
    assert body["stop"] == ["END"]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}},
    }
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_unset_options_are_not_sent(stub: OpenAIStub, provider: OpenAIProvider) -> None:
    stub.enqueue(json_answer(_completion("hi")))
    await collect(provider, ChatRequest(messages=HELLO.messages, stream=False))
    body = stub.requests[0].json()
    assert set(body) == {"model", "messages", "stream"}
    assert body["stream"] is False


async def test_json_object_mode_fallback(stub: OpenAIStub, provider: OpenAIProvider) -> None:
    stub.enqueue(json_answer(_completion("{}")))
    target = Target(model_id="m", options={"json_mode": "json_object"})
    request = ChatRequest(messages=HELLO.messages, json_schema={"type": "object"}, stream=False)
    await collect(provider, request, target)
    assert stub.requests[0].json()["response_format"] == {"type": "json_object"}


async def test_azure_targets_the_deployment_path(stub: OpenAIStub) -> None:
    config = {
        "azure_endpoint": stub.url,
        "api_version": "2024-10-21",
        "api_key_env": "AZURE_KEY",
    }
    azure = OpenAIProvider.from_config(config, environ={"AZURE_KEY": "az-secret"})
    stub.enqueue(sse_answer(chunk("hi", finish_reason="stop")))
    try:
        await collect(azure, HELLO, Target(model_id="gpt-4o", options={"azure_deployment": "prod"}))
    finally:
        await azure.aclose()
    seen = stub.requests[0]
    assert seen.path == "/openai/deployments/prod/chat/completions?api-version=2024-10-21"
    assert seen.headers["api-key"] == "az-secret"


async def test_without_a_key_the_environment_is_not_consulted(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys come only from the variable the config names, never OPENAI_API_KEY."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    keyless = OpenAIProvider(
        base_url=stub.base_url, api_key=None, extra_headers={"X-Team": "certification"}
    )
    stub.enqueue(json_answer(_completion("hi")))
    try:
        await collect(keyless, ChatRequest(messages=HELLO.messages, stream=False))
    finally:
        await keyless.aclose()
    assert stub.requests[0].headers["authorization"] == "Bearer not-set"
    assert stub.requests[0].headers["x-team"] == "certification"


def test_named_but_unset_key_variable_is_missing_credentials() -> None:
    with pytest.raises(ProviderError) as caught:
        OpenAIProvider.from_config({"base_url": "http://x/v1", "api_key_env": "NOPE"}, environ={})
    assert caught.value.code == "MissingCredentials"
    assert caught.value.status is None
    assert "NOPE" in caught.value.message


# --- answers -----------------------------------------------------------------------------


async def test_non_streamed_answer(stub: OpenAIStub, provider: OpenAIProvider) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    stub.enqueue(json_answer(_completion("thinking", tool_calls=[call])))
    events = await collect(provider, ChatRequest(messages=HELLO.messages, stream=False))
    assert events == [
        TextDelta("thinking"),
        ToolCall(id="c1", name="f", arguments='{"a":1}'),
        Usage(input_tokens=7, output_tokens=2),
        Stop("tool_use"),
    ]


async def test_streamed_tool_call_fragments_become_one_call(
    stub: OpenAIStub, provider: OpenAIProvider
) -> None:
    first: dict[str, Any] = {
        "index": 0,
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather"},
    }
    stub.enqueue(
        sse_answer(
            chunk(tool_calls=[{**first, "function": {**first["function"], "arguments": ""}}]),
            chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"ci'}}]),
            chunk(tool_calls=[{"index": 0, "function": {"arguments": 'ty": "Pa'}}]),
            chunk(tool_calls=[{"index": 0, "function": {"arguments": 'ris"}'}}]),
            chunk(finish_reason="tool_calls"),
            usage_chunk(12, 9),
        )
    )
    events = await collect(provider, ChatRequest(messages=HELLO.messages, tools=(WEATHER_TOOL,)))
    assert events == [
        ToolCall(id="call_9", name="get_weather", arguments='{"city": "Paris"}'),
        Usage(input_tokens=12, output_tokens=9),
        Stop("tool_use"),
    ]


@pytest.mark.parametrize(
    ("finish_reason", "expected"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "content_filtered")],
)
async def test_finish_reasons_are_normalised(
    stub: OpenAIStub, provider: OpenAIProvider, finish_reason: str, expected: str
) -> None:
    stub.enqueue(sse_answer(chunk("a"), chunk("", finish_reason=finish_reason)))
    events = await collect(provider, HELLO)
    assert events == [TextDelta("a"), Stop(expected)]  # empty deltas are dropped


# --- failures ----------------------------------------------------------------------------


async def test_rate_limit_keeps_status_retry_after_and_message(
    stub: OpenAIStub, provider: OpenAIProvider
) -> None:
    error = {
        "message": "Rate limit reached for gpt-4o in organization org-x on tokens per min.",
        "type": "tokens",
        "code": "rate_limit_exceeded",
    }
    stub.enqueue(json_answer({"error": error}, status=429, headers={"Retry-After": "3"}))
    with pytest.raises(ProviderError) as caught:
        await collect(provider, HELLO)
    assert (caught.value.status, caught.value.retry_after) == (429, 3.0)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.message == error["message"]
    assert caught.value.provider == "openai"


async def test_retry_after_ms_wins(stub: OpenAIStub, provider: OpenAIProvider) -> None:
    headers = {"Retry-After": "1", "retry-after-ms": "1500"}
    stub.enqueue(json_answer({"error": {"message": "slow down"}}, status=429, headers=headers))
    with pytest.raises(ProviderError) as caught:
        await collect(provider, HELLO)
    assert caught.value.retry_after == 1.5


async def test_server_error_with_plain_text_body(
    stub: OpenAIStub, provider: OpenAIProvider
) -> None:
    stub.enqueue(Canned(status=500, headers={"Content-Type": "text/plain"}, body=b"upstream died"))
    with pytest.raises(ProviderError) as caught:
        await collect(provider, HELLO)
    assert (caught.value.status, caught.value.message) == (500, "upstream died")


@pytest.mark.parametrize(
    ("answer", "stream"),
    [
        (Canned(headers={"Content-Type": "text/html"}, body=b"<html>oops</html>"), False),
        (Canned(headers={"Content-Type": "application/json"}, body=b"{not json"), False),
        (sse_answer("{not json"), True),
        (sse_answer(usage_chunk(1, 1)), True),  # a stream without any choice
        (sse_answer(chunk("cut"), done=False), True),  # ends before a finish_reason
        (Canned(headers={"Content-Type": "application/json"}, body=b"{}"), True),
    ],
    ids=["html", "bad-json", "bad-sse-json", "no-choice", "truncated", "json-for-stream"],
)
async def test_malformed_answers(
    stub: OpenAIStub, provider: OpenAIProvider, answer: Canned, stream: bool
) -> None:
    stub.enqueue(answer)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, ChatRequest(messages=HELLO.messages, stream=stream))
    assert caught.value.code == "MalformedResponse"
    assert caught.value.status is None


async def test_error_object_mid_stream(stub: OpenAIStub, provider: OpenAIProvider) -> None:
    error = {"message": "The server had an error", "type": "server_error", "code": None}
    stub.enqueue(sse_answer(chunk("Hel"), {"error": error}))
    received: list[ChatEvent] = []
    with pytest.raises(ProviderError) as caught:
        async with aclosing(provider.chat(TARGET, HELLO)) as events:
            async for event in events:
                received.append(event)
    assert received == [TextDelta("Hel")]
    assert (caught.value.code, caught.value.message) == ("server_error", error["message"])


@pytest.mark.parametrize("caller_busy", [False, True], ids=["awaiting-chunk", "holding-delta"])
async def test_cancellation_closes_a_stalled_stream(
    stub: OpenAIStub, provider: OpenAIProvider, caller_busy: bool
) -> None:
    """The caller's timeout ends the call promptly and hangs up, wherever it strikes."""
    stub.enqueue(sse_answer(chunk("Hel"), done=False, stall=True))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5), aclosing(provider.chat(TARGET, HELLO)) as events:
            async for _event in events:
                if caller_busy:
                    await asyncio.sleep(5)  # cancelled here, outside the provider
    assert time.monotonic() - started < 2
    # The server notices the hang-up only if the client really closed the connection.
    assert await asyncio.to_thread(stub.client_left.wait, 5)


async def test_read_timeout_is_a_timeout_error(stub: OpenAIStub) -> None:
    slow = OpenAIProvider(base_url=stub.base_url, api_key="k", timeout=0.3)
    stub.enqueue(Canned(delay=2, body=b"{}"))
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(slow, HELLO)
    finally:
        await slow.aclose()
    assert caught.value.code == "TimeoutError"
    assert caught.value.status is None


async def test_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on once this socket closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = OpenAIProvider(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", timeout=5)
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(refused, HELLO)
    finally:
        await refused.aclose()
    assert caught.value.code == "ConnectionError"
    assert "refused" in caught.value.message.lower() or "connect" in caught.value.message.lower()


# --- a real llama.cpp server (SmolLM2-135M) ----------------------------------------------


@pytest.fixture
async def llama_provider(llama: LlamaServer) -> AsyncIterator[OpenAIProvider]:
    instance = OpenAIProvider(base_url=llama.base_url, api_key=llama.api_key, timeout=60)
    yield instance
    await instance.aclose()


LLAMA = Target(model_id="smollm2")
STORY = (Message("user", "Tell me a long story about a dragon."),)


@pytest.mark.llama
async def test_llama_stream_yields_text_then_usage_then_stop(
    llama_provider: OpenAIProvider,
) -> None:
    first_delta_at: float | None = None
    events: list[ChatEvent] = []
    async with aclosing(llama_provider.chat(LLAMA, ChatRequest(STORY, max_tokens=16))) as stream:
        async for event in stream:
            if isinstance(event, TextDelta) and first_delta_at is None:
                first_delta_at = time.monotonic()
            events.append(event)
    ended_at = time.monotonic()
    assert first_delta_at is not None and first_delta_at < ended_at  # TTFT is measurable
    kinds = [type(event).__name__ for event in events]
    assert kinds[-2:] == ["Usage", "Stop"]
    assert set(kinds[:-2]) == {"TextDelta"}
    usage = events[-2]
    assert isinstance(usage, Usage) and usage.input_tokens > 0 and usage.output_tokens > 0


@pytest.mark.llama
async def test_llama_non_streamed_answer(llama_provider: OpenAIProvider) -> None:
    events = await collect(llama_provider, ChatRequest(STORY, max_tokens=8, stream=False))
    assert text_of(events)
    assert isinstance(events[-1], Stop)
    assert any(isinstance(event, Usage) and event.output_tokens > 0 for event in events)


@pytest.mark.llama
async def test_llama_max_tokens_stops_at_the_cap(llama_provider: OpenAIProvider) -> None:
    events = await collect(llama_provider, ChatRequest(STORY, max_tokens=5))
    assert events[-1] == Stop("max_tokens")
    usage = next(event for event in events if isinstance(event, Usage))
    assert usage.output_tokens <= 5


@pytest.mark.llama
async def test_llama_wrong_key_is_401_with_the_server_message(llama: LlamaServer) -> None:
    wrong = OpenAIProvider(base_url=llama.base_url, api_key="sk-wrong")
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(wrong, ChatRequest(STORY, max_tokens=5))
    finally:
        await wrong.aclose()
    assert caught.value.status == 401
    assert caught.value.message == "Invalid API Key"  # llama.cpp's own words


@pytest.mark.llama
async def test_llama_accepts_a_stop_sequence(llama_provider: OpenAIProvider) -> None:
    events = await collect(llama_provider, ChatRequest(STORY, max_tokens=24, stop=("\n",)))
    assert isinstance(events[-1], Stop)
    assert "\n" not in text_of(events)  # the server cuts at the stop sequence


@pytest.mark.llama
async def test_llama_accepts_tools(llama_provider: OpenAIProvider) -> None:
    request = ChatRequest(
        (Message("user", "What is the weather in Paris?"),), tools=(WEATHER_TOOL,), max_tokens=24
    )
    events = await collect(llama_provider, request)
    assert isinstance(events[-1], Stop)  # no transport error; whether it calls the tool is its call


@pytest.mark.llama
async def test_llama_accepts_a_json_schema(llama_provider: OpenAIProvider) -> None:
    request = ChatRequest(
        (Message("user", "Name a colour."),),
        json_schema={"type": "object", "properties": {"colour": {"type": "string"}}},
        max_tokens=48,
        stream=False,
    )
    events = await collect(llama_provider, request)
    if events[-1] == Stop("end_turn"):
        # llama.cpp enforces the schema as a grammar, so a finished answer is valid JSON.
        assert isinstance(json.loads(text_of(events)), dict)
    else:
        assert events[-1] == Stop("max_tokens")
