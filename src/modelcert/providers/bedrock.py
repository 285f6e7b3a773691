"""AWS Bedrock provider: Converse / ConverseStream for chat, the control plane for discovery.

boto3 is synchronous, so every call runs in a worker thread and the event loop never
blocks; streams are read by `bedrock_stream.StreamPump`. botocore's own retries are
off (one attempt): the certification runner decides about retries from the classified
error. Credentials come from the standard AWS chain through a boto3 Session; the
provider configuration never holds secrets.

A call the caller has given up on (``asyncio.timeout`` around it) must not keep its
connection and thread until botocore's read timeout. Once a stream has started,
`StreamPump.cancel()` shuts its socket down; but while botocore still waits for the
response headers, the connection is private to urllib3 and nothing can interrupt the
blocked read from outside. So the bound is set up front: when `ChatRequest.timeout_s`
says how long the caller will wait, the call goes through a client whose connect and
read timeouts are just above that (see `transport_timeout`). botocore fixes timeouts
per client, hence one client per (region, timeout); rounding the timeout to a coarse
step and capping it at the configured read timeout keeps those few (the runner uses a
handful of per-test timeouts). Only public botocore configuration is used, and it
bounds every phase alike: connecting, waiting for the headers, each read of a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from modelcert import secrets
from modelcert.domain import GLOBAL_REGION, InferenceType
from modelcert.providers.base import (
    ChatEvent,
    ChatRequest,
    DiscoveredModel,
    ProviderError,
    Target,
)
from modelcert.providers.bedrock_events import (
    PROVIDER,
    StreamDecoder,
    build_converse_kwargs,
    response_events,
    to_provider_error,
)
from modelcert.providers.bedrock_families import GEO_PREFIXES
from modelcert.providers.bedrock_stream import EventStreamLike, StreamCancelled, StreamPump

if TYPE_CHECKING:
    from mypy_boto3_bedrock import BedrockClient
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

_T = TypeVar("_T")

# How concurrently discovery probes GetFoundationModelAvailability (one call per model).
_AVAILABILITY_CONCURRENCY = 8
# A transport timeout exceeds the caller's by at least this much, so that the caller's
# own timeout is what normally fires and the transport's only reclaims the socket after.
_TIMEOUT_MARGIN_S = 0.25
# ... and is rounded up to a multiple of this, so that callers whose timeouts differ by a
# few milliseconds share a client; it keeps the transport within 0.5 s of the caller.
_TIMEOUT_STEP_S = 0.25


def resolve_model_id(model_id: str, region: str, inference_type: InferenceType) -> str:
    """The id to send to Bedrock: inference profiles get the region's geo prefix.

    ARNs (provisioned throughput, application profiles) and already-prefixed ids pass
    through unchanged, as does an id for a region with no known geo prefix.
    """
    if inference_type is not InferenceType.INFERENCE_PROFILE or model_id.startswith("arn:"):
        return model_id
    if model_id.startswith(GEO_PREFIXES):
        return model_id
    if region.startswith("us-gov-"):
        return f"us-gov.{model_id}"
    if region.startswith(("us-", "ca-")):
        return f"us.{model_id}"
    if region.startswith("eu-"):
        return f"eu.{model_id}"
    if region.startswith("ap-"):
        return f"apac.{model_id}"
    return model_id


def transport_timeout(timeout_s: float | None, read_timeout: float) -> float | None:
    """The connect/read timeout for a call the caller waits `timeout_s` for.

    None means the provider's configured timeouts (no caller timeout, or one at least as
    long as the configured read timeout). A socket read counts toward the whole call, so
    one that waits longer than `timeout_s` belongs to a call the caller has already
    abandoned: the shorter timeout never cuts short a call that someone still awaits.
    """
    if timeout_s is None:
        return None
    steps = math.ceil((max(timeout_s, 0.0) + _TIMEOUT_MARGIN_S) / _TIMEOUT_STEP_S)
    bounded = steps * _TIMEOUT_STEP_S
    return None if bounded >= read_timeout else bounded


def _entitled(availability: Mapping[str, Any]) -> bool:
    return (
        availability.get("entitlementAvailability") == "AVAILABLE"
        and availability.get("authorizationStatus") == "AUTHORIZED"
        and availability.get("regionAvailability") == "AVAILABLE"
    )


def _inference_types(values: Sequence[str]) -> tuple[InferenceType, ...]:
    known = {member.value for member in InferenceType}
    return tuple(InferenceType(value) for value in values if value in known)


class _Abandoned(Exception):
    """The caller gave up before the request was sent; nobody receives this."""


class BedrockProvider:
    """Talks to Bedrock in the target's region; clients are cached per service and region
    (runtime clients also per transport timeout, see `transport_timeout`)."""

    kind = "bedrock"
    simulated = False

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        profile_name: str | None = None,
        connect_timeout: float = 10,
        read_timeout: float = 60,
    ) -> None:
        self._endpoint_url = endpoint_url
        self._profile_name = profile_name
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._config = Config(
            # One attempt in total: botocore's `max_attempts` counts *retries* (1 would
            # mean two calls), `total_max_attempts` counts calls. The runner retries.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        # Guards the session and client cache: boto3 Sessions are not thread-safe,
        # clients are, so clients are created once under the lock and then shared.
        self._lock = threading.Lock()
        self._session: boto3.Session | None = None
        # Keyed by (region, transport timeout); None is the configured timeouts.
        self._runtime_clients: dict[tuple[str, float | None], BedrockRuntimeClient] = {}
        self._control_clients: dict[str, BedrockClient] = {}
        self._pumps: set[StreamPump] = set()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BedrockProvider:
        """Build from a provider's config mapping (no secrets: those come from the AWS chain)."""
        endpoint_url = config.get("endpoint_url")
        profile_name = config.get("profile_name")
        connect_timeout = config.get("connect_timeout")
        read_timeout = config.get("read_timeout")
        return cls(
            endpoint_url=str(endpoint_url) if endpoint_url else None,
            profile_name=str(profile_name) if profile_name else None,
            connect_timeout=10 if connect_timeout is None else float(connect_timeout),
            read_timeout=60 if read_timeout is None else float(read_timeout),
        )

    # -- clients (called from worker threads: creating one loads JSON models) -----------

    def _boto_session(self) -> boto3.Session:
        if self._session is None:
            self._session = boto3.Session(profile_name=self._profile_name)
        return self._session

    def _register_credentials(self) -> None:
        """Tell `modelcert.secrets` the chain's current credentials (called in threads:
        resolving or refreshing them may do I/O), so that an endpoint or proxy echoing
        the secret key or session token has it masked. Failing to resolve them is the
        call's own error to report, not this one's."""
        try:
            with self._lock:
                session = self._boto_session()
            credentials = session.get_credentials()
            if credentials is None:
                return
            frozen = credentials.get_frozen_credentials()
        except Exception:
            return
        secrets.register(frozen.access_key, frozen.secret_key, frozen.token)

    def _cached(self, cache: dict[Any, _T], key: object, make: Callable[[], _T]) -> _T:
        """`cache[key]`, made once; a new client's credentials are registered as secrets
        (outside the lock: reading them may refresh them over the network)."""
        with self._lock:
            client = cache.get(key)
            if client is not None:
                return client
            client = cache[key] = make()
        self._register_credentials()
        return client

    def _runtime(self, region: str, transport_s: float | None = None) -> BedrockRuntimeClient:
        """The client for `region` whose timeouts are `transport_s` (None: configured)."""

        def make() -> BedrockRuntimeClient:
            config = self._config
            if transport_s is not None:
                config = config.merge(
                    Config(
                        connect_timeout=min(self._connect_timeout, transport_s),
                        read_timeout=transport_s,
                    )
                )
            return self._boto_session().client(
                "bedrock-runtime",
                region_name=region,
                endpoint_url=self._endpoint_url,
                config=config,
            )

        return self._cached(self._runtime_clients, (region, transport_s), make)

    def _control(self, region: str) -> BedrockClient:
        def make() -> BedrockClient:
            return self._boto_session().client(
                "bedrock", region_name=region, endpoint_url=self._endpoint_url, config=self._config
            )

        return self._cached(self._control_clients, region, make)

    async def _in_thread(self, call: Callable[[], _T]) -> _T:
        """Run a blocking boto3 call in a worker thread, translating its errors."""

        def guarded() -> _T:
            try:
                return call()
            except Exception:
                self._register_credentials()  # refreshed ones, before the error is built
                raise

        try:
            return await asyncio.to_thread(guarded)
        except Exception as exc:
            error = to_provider_error(exc)
            if error is None:
                raise
            raise error from exc

    # -- chat --------------------------------------------------------------------------

    async def chat(self, target: Target, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """Send one Converse / ConverseStream request; yield events or raise ProviderError."""
        region = target.region
        if region == GLOBAL_REGION:
            raise ProviderError(
                f"invalid region {region!r}: a Bedrock target needs an AWS region",
                code="InvalidRegion",
                provider=PROVIDER,
            )
        model_id = resolve_model_id(target.model_id, region, target.inference_type)
        kwargs = build_converse_kwargs(model_id, request)
        transport_s = transport_timeout(request.timeout_s, self._read_timeout)
        if not request.stream:
            response = await self._converse(region, transport_s, kwargs)
            for event in response_events(response):
                yield event
            return
        # aclosing: when this generator is closed at a yield, the inner one (which owns
        # the reader thread) is closed now rather than whenever it is garbage-collected.
        async with contextlib.aclosing(self._stream(region, transport_s, kwargs)) as events:
            async for event in events:
                yield event

    async def _converse(
        self, region: str, transport_s: float | None, kwargs: dict[str, Any]
    ) -> Mapping[str, Any]:
        # Cancelling the await leaves the thread to finish on its own; the client's read
        # timeout (derived from the caller's, when given) bounds how long that can take.
        abandoned = threading.Event()

        def call() -> Mapping[str, Any]:
            client = self._runtime(region, transport_s)  # may take a while: loads JSON models
            if abandoned.is_set():
                # Sending now would hold a connection for an answer nobody waits for.
                raise _Abandoned
            return client.converse(**kwargs)

        try:
            return await self._in_thread(call)
        except asyncio.CancelledError:
            abandoned.set()
            raise

    async def _stream(
        self, region: str, transport_s: float | None, kwargs: dict[str, Any]
    ) -> AsyncGenerator[ChatEvent, None]:
        def open_stream() -> EventStreamLike:
            client = self._runtime(region, transport_s)
            if pump.cancelled:
                # As in _converse: do not send a request that nobody waits for any more.
                raise StreamCancelled("the Bedrock stream was cancelled before it was sent")
            try:
                return client.converse_stream(**kwargs)["stream"]
            except Exception:
                self._register_credentials()
                raise

        pump = StreamPump(asyncio.get_running_loop(), open_stream)
        self._pumps.add(pump)
        decoder = StreamDecoder()
        pump.start()
        try:
            while True:
                try:
                    raw = await pump.next()
                except Exception as exc:
                    error = to_provider_error(exc)
                    if error is None:
                        raise
                    raise error from exc
                if raw is None:
                    break
                for event in decoder.feed(raw):
                    yield event
            for event in decoder.finish():
                yield event
        finally:
            # Runs on normal end, on error, and when the consumer is cancelled (e.g. by
            # asyncio.timeout) or closes the generator early: the reader thread must stop.
            pump.cancel()
            self._pumps.discard(pump)

    # -- discovery -----------------------------------------------------------------------

    async def list_models(self, region: str) -> list[DiscoveredModel]:
        """Foundation models offered in `region`, with the account's entitlement to each."""
        response = await self._in_thread(lambda: self._control(region).list_foundation_models())
        summaries = response.get("modelSummaries", [])
        semaphore = asyncio.Semaphore(_AVAILABILITY_CONCURRENCY)

        async def probe(model_id: str) -> bool | None:
            async with semaphore:
                return await asyncio.to_thread(self._availability, region, model_id)

        flags = await asyncio.gather(*(probe(summary["modelId"]) for summary in summaries))
        return [
            DiscoveredModel(
                model_id=summary["modelId"],
                name=summary.get("modelName", summary["modelId"]),
                vendor=summary.get("providerName", ""),
                streaming=bool(summary.get("responseStreamingSupported", False)),
                inference_types=_inference_types(summary.get("inferenceTypesSupported", [])),
                entitled=entitled,
                input_modalities=tuple(summary.get("inputModalities", [])),
                output_modalities=tuple(summary.get("outputModalities", [])),
            )
            for summary, entitled in zip(summaries, flags, strict=True)
        ]

    def _availability(self, region: str, model_id: str) -> bool | None:
        """Entitlement of one model (runs in a thread); None when Bedrock cannot tell us."""
        try:
            answer = self._control(region).get_foundation_model_availability(modelId=model_id)
        except ClientError as exc:
            # Access denied means "not for this account"; anything else (throttled, not
            # supported for this model or region, ...) says nothing about entitlement.
            code = exc.response.get("Error", {}).get("Code", "")
            return False if code == "AccessDeniedException" else None
        except BotoCoreError:
            return None
        return _entitled(answer)

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop open streams and release the clients' connection pools."""
        for pump in list(self._pumps):
            pump.cancel()
        with self._lock:
            clients: list[BedrockRuntimeClient | BedrockClient] = [
                *self._runtime_clients.values(),
                *self._control_clients.values(),
            ]
            self._runtime_clients.clear()
            self._control_clients.clear()
        for client in clients:
            await asyncio.to_thread(client.close)
