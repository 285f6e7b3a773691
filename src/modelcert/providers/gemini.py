"""Google's Gemini models through the google-genai SDK: the Gemini API (an API key from
the environment variable `api_key_env` names; one endpoint, region `global`) or Vertex
AI (`"vertexai": true`, a `project`; each region of the provider is a Vertex location,
`global` included, with its own endpoint, quotas and model availability).

Vertex credentials are the application default credentials (ADC: the environment's
service account, `gcloud auth application-default login`, workload identity…), or an
OAuth access token from the variable `access_token_env` names (short-lived: for CI jobs
that mint one). Every token in use is registered as a secret, so an echo is masked.
`base_url` points the clients at another endpoint (a proxy, or the tests' local server
speaking the same REST + SSE wire format); `api_version` picks the API version
(Vertex: `v1` by default).

The SDK's own retries are off (one attempt, `HttpRetryOptions(attempts=1)`): the
certification runner retries, and must see every failure to classify it. The HTTP
client is ours (httpx, with our timeouts), so that the SDK never switches to aiohttp
behind our back, with other errors and other timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.oauth2.credentials
import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from modelcert import secrets
from modelcert.domain import GLOBAL_REGION, InferenceType
from modelcert.providers.base import (
    ChatEvent,
    ChatRequest,
    DiscoveredModel,
    ProviderError,
    Target,
)
from modelcert.providers.gemini_events import (
    PROVIDER,
    AnswerDecoder,
    build_config,
    build_contents,
    provider_error,
)
from modelcert.providers.sdk_support import (
    api_key_from_env,
    malformed_answer,
    transport_error,
)

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
VERTEX_API_VERSION = "v1"
_PAGE_SIZE = 100


class GeminiProvider:
    """A ProviderClient for the Gemini API or for Vertex AI; one SDK client per location."""

    kind = "gemini"
    simulated = False

    def __init__(
        self,
        *,
        api_key: str | None = None,
        vertexai: bool = False,
        project: str | None = None,
        access_token: str | None = None,
        base_url: str | None = None,
        api_version: str | None = None,
        timeout: float = 60,
    ) -> None:
        if vertexai and not project:
            raise ProviderError(
                "Vertex AI needs a project (config: project)",
                code="InvalidConfiguration",
                provider=PROVIDER,
            )
        if not vertexai and not api_key:
            raise ProviderError(
                "the Gemini API needs a key: name its environment variable (api_key_env)",
                code="MissingCredentials",
                provider=PROVIDER,
            )
        self.vertexai = vertexai
        self.project = project
        self.base_url = base_url
        self.api_version = api_version or (VERTEX_API_VERSION if vertexai else None)
        self.timeout = timeout
        self._api_key = api_key
        self._credentials: google.auth.credentials.Credentials | None = None
        if access_token:
            secrets.register(access_token)
            self._credentials = google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
                token=access_token
            )
        self._lock = threading.Lock()
        # Per region: the SDK client and the HTTP client it was given (ours to close).
        self._clients: dict[str, tuple[genai.Client, httpx2.AsyncClient]] = {}

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], environ: Mapping[str, str] = os.environ
    ) -> GeminiProvider:
        """Build from a provider's stored config; secrets come from the variables it names."""
        return cls(
            api_key=api_key_from_env(config, environ, provider=PROVIDER),
            vertexai=bool(config.get("vertexai")),
            project=config.get("project"),
            access_token=api_key_from_env(
                config, environ, provider=PROVIDER, variable="access_token_env"
            ),
            base_url=config.get("base_url"),
            api_version=config.get("api_version"),
            timeout=float(config.get("timeout") or 60),
        )

    # -- clients -------------------------------------------------------------------------

    async def _vertex_credentials(self) -> google.auth.credentials.Credentials:
        """The configured token, or ADC, found once (in a thread: it may read files or ask
        the metadata server)."""
        if self._credentials is None:
            try:
                credentials, _ = await asyncio.to_thread(
                    google.auth.default,  # type: ignore[no-untyped-call]
                    scopes=[CLOUD_PLATFORM_SCOPE],
                )
            except google.auth.exceptions.DefaultCredentialsError as exc:
                raise ProviderError(
                    f"no Google credentials: {exc}", code="MissingCredentials", provider=PROVIDER
                ) from exc
            self._credentials = credentials
        return self._credentials

    def _register_token(self) -> None:
        """Tell `modelcert.secrets` the current access token (a refresh changes it)."""
        token = getattr(self._credentials, "token", None)
        if isinstance(token, str):
            secrets.register(token)

    async def _client(self, region: str) -> genai.Client:
        if not self.vertexai and region != GLOBAL_REGION:
            raise ProviderError(
                f"invalid region {region!r}: the Gemini API has one endpoint (region global); "
                "certify per location through Vertex AI (config: vertexai, project)",
                code="InvalidRegion",
                provider=PROVIDER,
            )
        credentials = await self._vertex_credentials() if self.vertexai else None
        with self._lock:
            if region not in self._clients:
                self._clients[region] = self._make_client(region, credentials)
            return self._clients[region][0]

    def _make_client(
        self, region: str, credentials: google.auth.credentials.Credentials | None
    ) -> tuple[genai.Client, httpx2.AsyncClient]:
        # A short connect timeout: an unreachable host fails fast; `read` bounds the wait
        # for each streamed chunk.
        http_client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        )
        options = types.HttpOptions(
            base_url=self.base_url,
            api_version=self.api_version,
            # The SDK passes this to each request (in milliseconds): without it httpx
            # would wait forever.
            timeout=int(self.timeout * 1000),
            # The runner retries, after classifying each failure: one attempt here.
            retry_options=types.HttpRetryOptions(attempts=1),
            httpx_async_client=http_client,
        )
        if self.vertexai:
            client = genai.Client(
                vertexai=True,
                project=self.project,
                location=region,
                credentials=credentials,
                http_options=options,
            )
        else:
            client = genai.Client(vertexai=False, api_key=self._api_key, http_options=options)
        return client, http_client

    # -- chat ----------------------------------------------------------------------------

    async def chat(self, target: Target, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """Send one generateContent / streamGenerateContent request; yield events until the
        answer ends or raise ProviderError. Closing or cancelling it closes the stream."""
        client = await self._client(target.region)
        models = client.aio.models
        contents = build_contents(request)
        config = build_config(request)
        decoder = AnswerDecoder()
        try:
            if request.stream:
                stream = await models.generate_content_stream(
                    model=target.model_id,
                    contents=contents,  # type: ignore[arg-type]
                    config=config,
                )
                try:
                    async for chunk in stream:
                        for event in decoder.feed(chunk):
                            yield event
                finally:
                    await stream.aclose()  # type: ignore[attr-defined]
            else:
                answer = await models.generate_content(
                    model=target.model_id,
                    contents=contents,  # type: ignore[arg-type]
                    config=config,
                )
                for event in decoder.feed(answer):
                    yield event
            for event in decoder.finish():
                yield event
        except genai_errors.APIError as exc:
            await _close_answer(exc)
            raise provider_error(exc) from exc
        except httpx2.TransportError as exc:
            raise transport_error(exc, PROVIDER) from exc
        except google.auth.exceptions.RefreshError as exc:
            raise ProviderError(
                f"Google credentials could not be refreshed: {exc}",
                code="RefreshError",
                provider=PROVIDER,
            ) from exc
        except google.auth.exceptions.TransportError as exc:
            raise ProviderError(
                f"Google credentials could not be refreshed: {exc}",
                code="ConnectionError",
                provider=PROVIDER,
            ) from exc
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # genai's UnknownApiResponseError (a body that is not JSON) is a ValueError too.
            raise malformed_answer(exc, PROVIDER) from exc
        finally:
            self._register_token()

    # -- discovery -----------------------------------------------------------------------

    async def list_models(self, region: str) -> list[DiscoveredModel]:
        """The base models that generate content (the Gemini API's models, Vertex's Google
        publisher models as the location's endpoint lists them)."""
        client = await self._client(region)
        found: list[DiscoveredModel] = []
        try:
            pager = await client.aio.models.list(
                config=types.ListModelsConfig(page_size=_PAGE_SIZE, query_base=True)
            )
            async for model in pager:
                discovered = discovered_model(model)
                if discovered is not None:
                    found.append(discovered)
        except genai_errors.APIError as exc:
            raise provider_error(exc) from exc
        except httpx2.TransportError as exc:
            raise transport_error(exc, PROVIDER) from exc
        finally:
            self._register_token()
        return found

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every location's client (and its HTTP connections)."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client, http_client in clients:
            client.close()  # the SDK's own synchronous client, unused but open
            await client.aio.aclose()
            await http_client.aclose()


async def _close_answer(exc: genai_errors.APIError) -> None:
    """Close the HTTP answer an error came in mid-stream: the SDK raises it from inside its
    iteration over the answer's lines and leaves that iterator suspended, for the garbage
    collector to close later from wherever it runs (and fail doing so)."""
    lines = getattr(exc.response, "segment_iterator", None)
    aclose = getattr(lines, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def discovered_model(model: types.Model) -> DiscoveredModel | None:
    """A model discovery reports, or None for one that does not generate text (embeddings,
    image models) by what the listing says of it."""
    name = model.name or ""
    model_id = name.rsplit("/", 1)[-1]
    actions = model.supported_actions
    if not model_id or (actions is not None and "generateContent" not in actions):
        return None
    if actions is None and not model_id.startswith("gemini"):
        return None  # Vertex lists no actions: its Gemini models are the chat models
    return DiscoveredModel(
        model_id=model_id,
        name=model.display_name or model_id,
        vendor="Google",
        streaming=actions is None or "streamGenerateContent" in actions,
        inference_types=(InferenceType.ON_DEMAND,),
        entitled=None,  # listed for everyone: says nothing about this project's quota
        input_modalities=("TEXT", "IMAGE"),
        output_modalities=("TEXT",),
    )
