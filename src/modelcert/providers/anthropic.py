"""Anthropic's own API (Messages, streaming, tools, models list) through the anthropic SDK.

The SDK's own retries are off (`max_retries=0`): the certification runner retries, and
must see every failure to classify it (`overloaded_error` 529, `rate_limit_error` 429
with its retry-after, …). The key comes only from the environment variable the
configuration names (`api_key_env`); `base_url` points the client at another endpoint
(a gateway, or the tests' local server speaking Anthropic's wire format).

A region is a label here, as for OpenAI-compatible endpoints: the API is one URL.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import anthropic
import httpx2

from modelcert.domain import InferenceType
from modelcert.providers.anthropic_events import (
    DEFAULT_MAX_TOKENS,
    MALFORMED,
    PROVIDER,
    StreamDecoder,
    build_create_args,
    events_from_message,
)
from modelcert.providers.base import (
    ChatEvent,
    ChatRequest,
    DiscoveredModel,
    ProviderError,
    Target,
)
from modelcert.providers.sdk_support import (
    api_key_from_env,
    bounded,
    causes,
    malformed_answer,
    retry_after_from_headers,
    transport_error,
)

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
# Sent when no key variable is configured, so that the SDK never falls back on
# ANTHROPIC_API_KEY, a profile on disk or workload identity behind our back: keys come
# only from the variable the configuration names. The API answers 401 to it.
NO_API_KEY = "not-set"
_PAGE_SIZE = 100


class AnthropicProvider:
    """A ProviderClient for Anthropic's API; one client, created lazily."""

    kind = "anthropic"
    simulated = False

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        timeout: float = 60,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.base_url = base_url or ANTHROPIC_BASE_URL
        self.timeout = timeout
        self.max_tokens = max_tokens
        self._api_key = api_key
        self._client: anthropic.AsyncAnthropic | None = None

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], environ: Mapping[str, str] = os.environ
    ) -> AnthropicProvider:
        """Build from a provider's stored config; the key is read from the variable it names."""
        return cls(
            api_key=api_key_from_env(config, environ, provider=PROVIDER),
            base_url=config.get("base_url"),
            timeout=float(config.get("timeout") or 60),
            max_tokens=int(config.get("max_tokens") or DEFAULT_MAX_TOKENS),
        )

    def _get_client(self) -> anthropic.AsyncAnthropic:
        if self._client is None:
            self._client = anthropic.AsyncAnthropic(
                api_key=self._api_key or NO_API_KEY,
                # Given even when it is the default: the SDK would otherwise read
                # ANTHROPIC_BASE_URL from the environment.
                base_url=self.base_url,
                # A short connect timeout: an unreachable host fails fast, while `read`
                # bounds the wait for each streamed event.
                timeout=anthropic.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                # The runner retries, after classifying each failure: no retry in the SDK.
                max_retries=0,
            )
        return self._client

    async def chat(self, target: Target, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """Send one Messages request; yield events until the answer ends or raise
        ProviderError. Closing or cancelling the generator closes the HTTP stream."""
        messages = self._get_client().messages
        args = build_create_args(target.model_id, request, default_max_tokens=self.max_tokens)
        try:
            if request.stream:
                stream = await messages.create(**args, stream=True)
                async with stream:
                    decoder = StreamDecoder()
                    async for event in stream:
                        for chat_event in decoder.feed(event):
                            yield chat_event
                    decoder.finish()
            else:
                message = await messages.create(**args)
                for chat_event in events_from_message(message):
                    yield chat_event
        except anthropic.AnthropicError as exc:
            raise provider_error(exc) from exc
        except httpx2.TransportError as exc:
            # Raised while the body streams in (the SDK wraps only the request itself).
            raise transport_error(exc, PROVIDER) from exc
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # Invalid JSON in a body or an SSE event, or an answer of an unexpected shape.
            raise malformed_answer(exc, PROVIDER) from exc

    async def list_models(self, region: str) -> list[DiscoveredModel]:
        """The models this key may use (GET /v1/models, every page); `region` is a label."""
        models: list[DiscoveredModel] = []
        try:
            async for info in self._get_client().models.list(limit=_PAGE_SIZE):
                models.append(discovered_model(info))
        except anthropic.AnthropicError as exc:
            raise provider_error(exc) from exc
        except httpx2.TransportError as exc:
            raise transport_error(exc, PROVIDER) from exc
        return models

    async def aclose(self) -> None:
        """Close the HTTP client; a later call would open a new one."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def discovered_model(info: object) -> DiscoveredModel:
    """One entry of the models list: every listed model is usable with this key."""
    model_id = getattr(info, "id", None)
    if not isinstance(model_id, str) or not model_id:
        raise ProviderError(f"model entry without an id: {info!r}", code=MALFORMED)
    name = getattr(info, "display_name", None)
    image = getattr(
        getattr(getattr(info, "capabilities", None), "image_input", None), "supported", None
    )
    return DiscoveredModel(
        model_id=model_id,
        name=name if isinstance(name, str) and name else model_id,
        vendor="Anthropic",
        streaming=True,
        inference_types=(InferenceType.ON_DEMAND,),
        entitled=True,
        input_modalities=("TEXT", "IMAGE") if image is not False else ("TEXT",),
        output_modalities=("TEXT",),
    )


def provider_error(exc: anthropic.AnthropicError) -> ProviderError:
    """Translate an SDK exception, keeping Anthropic's error type, status and message."""
    if isinstance(exc, anthropic.APIStatusError):
        message = exc.api_message
        if not isinstance(message, str) or not message:
            # No Anthropic error object: the body is the provider's message.
            message = _body_text(exc)
        # An `error` event inside a stream arrives on a 200 answer: no HTTP status then.
        status = exc.status_code if exc.status_code >= 400 else None
        return ProviderError(
            bounded(message),
            status=status,
            code=exc.type or None,
            retry_after=retry_after_from_headers(exc.response.headers) if status else None,
            provider=PROVIDER,
        )
    # APITimeoutError subclasses APIConnectionError, so it must be tested first.
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(
            f"request timed out: {causes(exc)}".strip(), code="TimeoutError", provider=PROVIDER
        )
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(
            f"{exc.message} {causes(exc)}".strip(), code="ConnectionError", provider=PROVIDER
        )
    return ProviderError(bounded(str(exc)), code=type(exc).__name__, provider=PROVIDER)


def _body_text(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, str) and body:
        return body
    if body is not None:
        return json.dumps(body) if isinstance(body, dict | list) else str(body)
    return exc.message
