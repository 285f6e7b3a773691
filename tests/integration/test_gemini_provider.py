"""GeminiProvider through the real google-genai SDK, for the Gemini API and for Vertex AI,
against a local server speaking their REST + SSE wire format (tests/support/
fake_gemini.py), pointed at by the SDK's own `http_options.base_url`."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from modelcert.certify.errors import categorise_error
from modelcert.domain import ErrorCategory
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
from modelcert.providers.gemini import GeminiProvider
from modelcert.providers.registry import build_provider
from tests.support.fake_gemini import (
    Behaviour,
    FakeGemini,
    HttpError,
    gemini_model,
    vertex_model,
)
from tests.support.fake_http import HEALTHY_TEXT, PERSON, WEATHER_ARGUMENTS

MODEL = "gemini-2.5-flash"
KEY = "planted-gemini-key-Wm41Qz8"
TOKEN = "planted-vertex-token-Rk29Ps7"
PROJECT = "cert-project"
HELLO = ChatRequest(messages=(Message("user", "Say hello."),))
WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
BACKENDS = ["gemini-api", "vertex"]


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


def make_provider(fake_url: str, backend: str, timeout: float = 30) -> GeminiProvider:
    if backend == "vertex":
        # A static token stands in for application default credentials (offline).
        return GeminiProvider(
            vertexai=True, project=PROJECT, access_token=TOKEN, base_url=fake_url, timeout=timeout
        )
    return GeminiProvider(api_key=KEY, base_url=fake_url, timeout=timeout)


@pytest.fixture(params=BACKENDS)
async def provider(
    request: pytest.FixtureRequest, fake: FakeGemini
) -> AsyncIterator[GeminiProvider]:
    client = make_provider(fake.url, request.param)
    yield client
    await client.aclose()


def region_of(provider: GeminiProvider) -> str:
    return "europe-west4" if provider.vertexai else "global"


async def collect(
    provider: GeminiProvider, request: ChatRequest = HELLO, model: str = MODEL
) -> list[ChatEvent]:
    return [event async for event in provider.chat(Target(model, region_of(provider)), request)]


def stream(flag: bool) -> ChatRequest:
    return ChatRequest(messages=HELLO.messages, stream=flag)


# -- configuration and addressing -------------------------------------------------------


def test_built_by_the_registry_from_named_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_GEMINI_KEY", KEY)
    api = build_provider("gemini", {"api_key_env": "MY_GEMINI_KEY"})
    assert isinstance(api, GeminiProvider) and isinstance(api, ProviderClient)
    assert (api.kind, api.simulated, api.vertexai) == ("gemini", False, False)
    vertex = build_provider("gemini", {"vertexai": True, "project": PROJECT})
    assert isinstance(vertex, GeminiProvider) and vertex.vertexai
    assert vertex.api_version == "v1"


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({}, "MissingCredentials"),  # the Gemini API without a key
        ({"api_key_env": "MODELCERT_TEST_UNSET_VARIABLE"}, "MissingCredentials"),
        ({"vertexai": True}, "InvalidConfiguration"),  # Vertex without a project
    ],
)
def test_configuration_errors(config: dict[str, object], code: str) -> None:
    with pytest.raises(ProviderError) as caught:
        GeminiProvider.from_config(config, environ={})
    assert caught.value.code == code


async def test_the_gemini_api_has_no_regions(fake: FakeGemini) -> None:
    provider = make_provider(fake.url, "gemini-api")
    try:
        with pytest.raises(ProviderError) as caught:
            await collect_in(provider, "us-central1")
    finally:
        await provider.aclose()
    assert caught.value.code == "InvalidRegion"
    assert categorise_error(code="InvalidRegion").category is ErrorCategory.CONFIGURATION_ERROR
    assert fake.requests == []


async def collect_in(provider: GeminiProvider, region: str) -> list[ChatEvent]:
    return [event async for event in provider.chat(Target(MODEL, region), HELLO)]


@pytest.mark.parametrize("streamed", [True, False])
async def test_each_location_is_its_own_endpoint(fake: FakeGemini, streamed: bool) -> None:
    provider = make_provider(fake.url, "vertex")
    try:
        for location in ("us-central1", "asia-northeast1", "global"):
            request = stream(streamed)
            events = [e async for e in provider.chat(Target(MODEL, location), request)]
            assert events[-1] == Stop("end_turn")
    finally:
        await provider.aclose()
    action = "streamGenerateContent?alt=sse" if streamed else "generateContent"
    assert [r.path for r in fake.requests] == [
        f"/v1/projects/{PROJECT}/locations/{location}/publishers/google/models/{MODEL}:{action}"
        for location in ("us-central1", "asia-northeast1", "global")
    ]
    assert {r.headers["authorization"] for r in fake.requests} == {f"Bearer {TOKEN}"}


async def test_the_gemini_api_sends_its_key(fake: FakeGemini) -> None:
    provider = make_provider(fake.url, "gemini-api")
    try:
        await collect(provider)
    finally:
        await provider.aclose()
    sent = fake.last_request(MODEL)
    assert sent.path == f"/v1/models/{MODEL}:streamGenerateContent?alt=sse"
    assert sent.headers["x-goog-api-key"] == KEY and "authorization" not in sent.headers


# -- answers ---------------------------------------------------------------------------


async def test_streamed_answer(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.behaviours[MODEL] = Behaviour(text="The quick brown fox.", chunks=4)
    events = await collect(provider)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 4 and "".join(d.text for d in deltas) == "The quick brown fox."
    assert events[-2:] == [Usage(8, 6), Stop("end_turn")]


async def test_non_streamed_answer(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.behaviours[MODEL] = Behaviour(text="Hello.", finish_reason="MAX_TOKENS")
    assert await collect(provider, stream(False)) == [
        TextDelta("Hello."),
        Usage(8, 6),
        Stop("max_tokens"),
    ]


async def test_request_mapping(fake: FakeGemini, provider: GeminiProvider) -> None:
    request = ChatRequest(
        messages=(Message("user", "2+2?"), Message("assistant", "4"), Message("user", "More?")),
        system="You are terse.",
        temperature=0.5,
        top_p=0.9,
        max_tokens=64,
        stop=("END",),
    )
    await collect(provider, request)
    body = fake.last_request(MODEL).body
    assert [(c["role"], c["parts"]) for c in body["contents"]] == [
        ("user", [{"text": "2+2?"}]),
        ("model", [{"text": "4"}]),
        ("user", [{"text": "More?"}]),
    ]
    assert body["systemInstruction"]["parts"] == [{"text": "You are terse."}]
    assert body["generationConfig"] == {
        "temperature": 0.5,
        "topP": 0.9,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
    }
    assert "tools" not in body


@pytest.mark.parametrize("streamed", [True, False])
async def test_function_calling(fake: FakeGemini, provider: GeminiProvider, streamed: bool) -> None:
    request = ChatRequest(messages=HELLO.messages, tools=(WEATHER,), stream=streamed)
    events = await collect(provider, request)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [c.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == WEATHER_ARGUMENTS
    assert events[-1] == Stop("tool_use")
    (tool,) = fake.last_request(MODEL).body["tools"]
    (declaration,) = tool["functionDeclarations"]
    assert (declaration["name"], declaration["description"]) == (
        "get_weather",
        "Weather for a city.",
    )
    assert declaration["parameters"]["required"] == ["city"]
    assert declaration["parameters"]["properties"]["city"]["type"].upper() == "STRING"


@pytest.mark.parametrize("streamed", [True, False])
async def test_json_schema_output(
    fake: FakeGemini, provider: GeminiProvider, streamed: bool
) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    request = ChatRequest(messages=HELLO.messages, json_schema=schema, stream=streamed)
    events = await collect(provider, request)
    assert json.loads("".join(e.text for e in events if isinstance(e, TextDelta))) == PERSON
    config = fake.last_request(MODEL).body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["required"] == ["name"]


@pytest.mark.parametrize("streamed", [True, False])
async def test_stop_sequence(fake: FakeGemini, provider: GeminiProvider, streamed: bool) -> None:
    request = ChatRequest(messages=HELLO.messages, stop=("5",), stream=streamed)
    events = await collect(provider, request)
    assert (
        "".join(e.text for e in events if isinstance(e, TextDelta))
        == HEALTHY_TEXT[: HEALTHY_TEXT.index("5")]
    )
    # Gemini reports a matched stop sequence as STOP, like a natural end of turn.
    assert events[-1] == Stop("end_turn")


async def test_a_blocked_prompt_ends_content_filtered(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.behaviours[MODEL] = Behaviour(finish_reason="SAFETY", text="")
    assert (await collect(provider))[-1] == Stop("content_filtered")


# -- errors ----------------------------------------------------------------------------

HTTP_ERRORS = [
    (HttpError("RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="7s"), "RATE_LIMIT", 7.0),
    (HttpError("RESOURCE_EXHAUSTED", "Quota exceeded", retry_after="3"), "RATE_LIMIT", 3.0),
    (HttpError("RESOURCE_EXHAUSTED", "Quota exceeded"), "RATE_LIMIT", None),
    (HttpError("PERMISSION_DENIED", "Permission denied on resource"), "PERMISSION_ERROR", None),
    (HttpError("NOT_FOUND", "Publisher model was not found"), "UNAVAILABLE", None),
    (HttpError("INVALID_ARGUMENT", "Invalid JSON payload"), "CONFIGURATION_ERROR", None),
    (HttpError("FAILED_PRECONDITION", "Billing is not enabled"), "CONFIGURATION_ERROR", None),
    (HttpError("UNAUTHENTICATED", "Request had invalid credentials"), "AUTHENTICATION_ERROR", None),
    (HttpError("UNAVAILABLE", "The model is overloaded"), "SERVER_ERROR", None),
    (HttpError("INTERNAL", "Internal error encountered"), "SERVER_ERROR", None),
    (HttpError("DEADLINE_EXCEEDED", "Deadline expired"), "TIMEOUT", None),
]


@pytest.mark.parametrize("streamed", [True, False])
@pytest.mark.parametrize(
    ("error", "category", "retry_after"),
    HTTP_ERRORS,
    ids=[
        e.status
        + ("-retry-info" if e.retry_delay else "")
        + ("-retry-after" if e.retry_after else "")
        for e, _, _ in HTTP_ERRORS
    ],
)
async def test_http_errors_are_mapped(
    fake: FakeGemini,
    provider: GeminiProvider,
    error: HttpError,
    category: str,
    retry_after: float | None,
    streamed: bool,
) -> None:
    fake.behaviours[MODEL] = Behaviour(error=error)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, stream(streamed))
    got = caught.value
    assert (got.status, got.code, got.message) == (error.http_status, error.status, error.message)
    assert got.retry_after == retry_after and got.provider == "gemini"
    assert categorise_error(code=got.code, status=got.status).category == category
    assert len(fake.requests) == 1  # the SDK did not retry behind our back


async def test_a_bad_gemini_api_key_is_an_authentication_error(fake: FakeGemini) -> None:
    """The Gemini API answers a bad key with 400 INVALID_ARGUMENT; its ErrorInfo reason
    API_KEY_INVALID says what it is."""
    fake.behaviours[MODEL] = Behaviour(
        error=HttpError(
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            reason="API_KEY_INVALID",
        )
    )
    provider = make_provider(fake.url, "gemini-api")
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    finally:
        await provider.aclose()
    assert (caught.value.status, caught.value.code) == (400, "API_KEY_INVALID")
    assert categorise_error(code=caught.value.code).category is ErrorCategory.AUTHENTICATION_ERROR


@pytest.mark.parametrize(
    ("status", "category"),
    [("UNAVAILABLE", "SERVER_ERROR"), ("RESOURCE_EXHAUSTED", "RATE_LIMIT")],
)
async def test_an_error_mid_stream(
    fake: FakeGemini, provider: GeminiProvider, status: str, category: str
) -> None:
    fake.behaviours[MODEL] = Behaviour(
        chunks=5, stream_error=HttpError(status, "stream failed"), error_after_chunks=2
    )
    received: list[ChatEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.chat(Target(MODEL, region_of(provider)), HELLO):
            received.append(event)
    assert len(received) == 2 and all(isinstance(e, TextDelta) for e in received)
    assert (caught.value.code, caught.value.message) == (status, "stream failed")
    assert categorise_error(code=caught.value.code).category == category
    # The connection was released: the next call is answered.
    fake.behaviours[MODEL] = Behaviour()
    assert (await collect(provider))[-1] == Stop("end_turn")


@pytest.mark.parametrize(
    "behaviour",
    [Behaviour(chunks=4, cut_after_chunks=2), Behaviour(chunks=4, end_after_chunks=2)],
    ids=["connection-cut", "no-finish-reason"],
)
async def test_a_cut_answer_is_a_network_error(
    fake: FakeGemini, provider: GeminiProvider, behaviour: Behaviour
) -> None:
    fake.behaviours[MODEL] = behaviour
    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    assert caught.value.code == "StreamInterrupted"
    assert categorise_error(code=caught.value.code).category is ErrorCategory.NETWORK_ERROR


@pytest.mark.parametrize("backend", BACKENDS)
async def test_connection_refused(backend: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make_provider(f"http://127.0.0.1:{port}", backend)
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    finally:
        await provider.aclose()
    assert caught.value.code == "ConnectionError"
    assert categorise_error(code=caught.value.code).category is ErrorCategory.NETWORK_ERROR


@pytest.mark.parametrize(
    "behaviour", [Behaviour(hold=True), Behaviour(stall_after_chunks=1)], ids=["hang", "stall"]
)
async def test_a_hang_is_cancelled_at_the_callers_timeout(
    fake: FakeGemini, provider: GeminiProvider, behaviour: Behaviour
) -> None:
    """The read timeout is 30 s: only the caller's cancellation can close the connection
    within the wait below."""
    fake.behaviours[MODEL] = behaviour
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await collect(provider)
    if behaviour.hold:
        location = region_of(provider) if provider.vertexai else ""
        assert await asyncio.to_thread(fake.wait_for_hangup, f"{location}/{MODEL}", 10)
    fake.behaviours[MODEL] = Behaviour()
    assert (await collect(provider))[-1] == Stop("end_turn")


# -- discovery -------------------------------------------------------------------------


async def test_list_models_of_the_gemini_api(
    fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelcert.providers.gemini._PAGE_SIZE", 2)
    fake.models = [
        gemini_model("gemini-2.5-flash", "Gemini 2.5 Flash"),
        gemini_model("text-embedding-004", actions=("embedContent",)),
        gemini_model("gemini-2.5-pro", "Gemini 2.5 Pro"),
    ]
    provider = make_provider(fake.url, "gemini-api")
    try:
        models = await provider.list_models("global")
    finally:
        await provider.aclose()
    assert [(m.model_id, m.name, m.vendor) for m in models] == [
        ("gemini-2.5-flash", "Gemini 2.5 Flash", "Google"),
        ("gemini-2.5-pro", "Gemini 2.5 Pro", "Google"),
    ]
    assert [r.path for r in fake.requests] == [
        "/v1/models?pageSize=2",
        "/v1/models?pageSize=2&pageToken=2",
    ]


async def test_list_models_of_vertex(fake: FakeGemini) -> None:
    fake.models = [vertex_model("gemini-2.5-pro"), vertex_model("imagen-4.0-generate")]
    provider = make_provider(fake.url, "vertex")
    try:
        models = await provider.list_models("us-central1")
    finally:
        await provider.aclose()
    assert [m.model_id for m in models] == ["gemini-2.5-pro"]
    assert fake.requests[0].path.startswith("/v1/publishers/google/models")


async def test_list_models_refused(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.list_error = HttpError("PERMISSION_DENIED", "aiplatform.models.list denied")
    with pytest.raises(ProviderError) as caught:
        await provider.list_models(region_of(provider))
    assert (caught.value.status, caught.value.code) == (403, "PERMISSION_DENIED")
