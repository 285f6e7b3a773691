"""OpenAI-compatible chat endpoints (OpenAI, Azure OpenAI, llama.cpp, vLLM…) via the openai SDK.

The SDK's own retries are off (`max_retries=0`): the certification runner retries, and
must see every failure to classify it. Every failure leaves `chat` as a ProviderError
carrying the HTTP status, the provider's error code, Retry-After and its original message.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any, TypedDict

import openai
from openai import omit
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
    completion_create_params,
)

from modelcert import secrets
from modelcert.providers.base import ChatEvent, ChatRequest, ProviderError, Target
from modelcert.providers.openai_events import (
    PROVIDER,
    StreamAssembler,
    error_from_object,
    events_from_completion,
)
from modelcert.providers.sdk_support import (
    api_key_from_env,
    bounded,
    causes,
    malformed_answer,
    retry_after_from_headers,
)

OPENAI_BASE_URL = "https://api.openai.com/v1"
# Sent when no key is configured, for endpoints that need none (a local llama.cpp). It
# also stops the SDK from picking up OPENAI_API_KEY behind our back: keys come only from
# the variable the configuration names. A server that does want a key answers 401.
NO_API_KEY = "not-set"


class _CreateArgs(TypedDict):
    """The arguments both the streamed and the plain call share (typed, so mypy checks them)."""

    model: str
    messages: list[ChatCompletionMessageParam]
    temperature: float | openai.Omit
    top_p: float | openai.Omit
    max_tokens: int | openai.Omit
    stop: list[str] | openai.Omit
    tools: list[ChatCompletionFunctionToolParam] | openai.Omit
    response_format: completion_create_params.ResponseFormat | openai.Omit


class OpenAIProvider:
    """A ProviderClient for one OpenAI-compatible endpoint; one client, created lazily."""

    kind = "openai"
    simulated = False

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        azure_endpoint: str | None = None,
        api_version: str | None = None,
        organization: str | None = None,
        timeout: float = 60,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        if azure_endpoint and base_url:
            raise ProviderError(
                "configure either base_url or azure_endpoint, not both",
                code="InvalidConfiguration",
                provider=PROVIDER,
            )
        if azure_endpoint and not api_version:
            raise ProviderError(
                "Azure OpenAI needs api_version", code="InvalidConfiguration", provider=PROVIDER
            )
        self.base_url = base_url
        self.azure_endpoint = azure_endpoint
        self.api_version = api_version
        self.organization = organization
        self.timeout = timeout
        self._api_key = api_key
        secrets.register(api_key)  # masked in every error message and log line from now on
        self._extra_headers = dict(extra_headers or {})
        secrets.register(
            *(value for name, value in self._extra_headers.items() if secrets.is_secret_name(name))
        )
        self._client: openai.AsyncOpenAI | None = None

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], environ: Mapping[str, str] = os.environ
    ) -> OpenAIProvider:
        """Build from a provider's stored config; the key is read from the variable it names."""
        return cls(
            base_url=config.get("base_url"),
            api_key=api_key_from_env(config, environ, provider=PROVIDER),
            azure_endpoint=config.get("azure_endpoint"),
            api_version=config.get("api_version"),
            organization=config.get("organization"),
            timeout=float(config.get("timeout") or 60),
        )

    def _get_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            # A short connect timeout: an unreachable host should fail fast, while `read`
            # bounds the wait for each streamed chunk.
            timeout = openai.Timeout(self.timeout, connect=min(self.timeout, 10.0))
            common: dict[str, Any] = {
                "api_key": self._api_key or NO_API_KEY,
                "organization": self.organization,
                "timeout": timeout,
                "max_retries": 0,
                "default_headers": self._extra_headers or None,
            }
            if self.azure_endpoint:
                self._client = openai.AsyncAzureOpenAI(
                    azure_endpoint=self.azure_endpoint, api_version=self.api_version, **common
                )
            else:
                self._client = openai.AsyncOpenAI(
                    base_url=self.base_url or OPENAI_BASE_URL, **common
                )
        return self._client

    async def chat(self, target: Target, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """Send one chat request; yield events until the answer ends or raise ProviderError.

        An AsyncGenerator, as the protocol asks, so that callers
        can `aclose()` it: a caller that stops early should use `contextlib.aclosing`, and
        closing or cancelling then closes the HTTP stream at once.
        """
        client = self._get_client()
        create = client.chat.completions.create
        options = _create_args(target, request)
        try:
            if request.stream:
                stream = await create(
                    **options, stream=True, stream_options={"include_usage": True}
                )
                # `async with` closes the HTTP response however we leave: end, error,
                # or the caller's cancellation (asyncio.timeout).
                async with stream:
                    assembler = StreamAssembler()
                    async for chunk in stream:
                        for event in assembler.feed(chunk):
                            yield event
                    for event in assembler.finish():
                        yield event
            else:
                completion = await create(**options, stream=False)
                for event in events_from_completion(completion):
                    yield event
        except openai.OpenAIError as exc:
            raise provider_error(exc) from exc
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # Invalid JSON in a body or an SSE event, or an answer of an unexpected shape.
            raise malformed_answer(exc, PROVIDER) from exc

    async def aclose(self) -> None:
        """Close the HTTP client; a later call would open a new one."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _create_args(target: Target, request: ChatRequest) -> _CreateArgs:
    """The SDK arguments for a request; options left unset are omitted from the body."""
    # On Azure the deployment name stands in for the model; the SDK turns it into
    # /openai/deployments/{name}/chat/completions?api-version=...
    model = str(target.options.get("azure_deployment") or target.model_id)
    messages: list[ChatCompletionMessageParam] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        if message.role == "user":
            messages.append({"role": "user", "content": message.content})
        else:
            messages.append({"role": "assistant", "content": message.content})
    tools: list[ChatCompletionFunctionToolParam] = [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": dict(tool.parameters),
            },
        }
        for tool in request.tools
    ]
    return {
        "model": model,
        "messages": messages,
        "temperature": omit if request.temperature is None else request.temperature,
        "top_p": omit if request.top_p is None else request.top_p,
        "max_tokens": omit if request.max_tokens is None else request.max_tokens,
        "stop": list(request.stop) if request.stop else omit,
        "tools": tools or omit,
        "response_format": _response_format(request, target),
    }


def _response_format(
    request: ChatRequest, target: Target
) -> completion_create_params.ResponseFormat | openai.Omit:
    if request.json_schema is None:
        return omit
    # Some OpenAI-compatible servers only know the older JSON mode, not json_schema.
    if target.options.get("json_mode") == "json_object":
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": dict(request.json_schema)},
    }


def provider_error(exc: openai.OpenAIError) -> ProviderError:
    """Translate an SDK exception, keeping the provider's own status, code and message."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
            parsed = error_from_object(body, default_code=None)
            message, code = parsed.message, parsed.code
        else:
            # No OpenAI-style error object: the body text is the provider's message.
            message = exc.response.text.strip() or exc.message
            code = None
        return ProviderError(
            bounded(message),
            status=exc.status_code,
            code=code,
            retry_after=retry_after_from_headers(exc.response.headers),
            provider=PROVIDER,
        )
    # APITimeoutError subclasses APIConnectionError, so it must be tested first.
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(
            f"{exc.message} {causes(exc)}".strip(), code="TimeoutError", provider=PROVIDER
        )
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(
            f"{exc.message} {causes(exc)}".strip(), code="ConnectionError", provider=PROVIDER
        )
    if isinstance(exc, openai.APIError) and isinstance(exc.body, dict):
        # An error object inside an answer that started with 200 (e.g. mid-stream).
        return error_from_object(exc.body)
    return ProviderError(bounded(str(exc)), code=type(exc).__name__, provider=PROVIDER)
