"""What the API does before a route runs, and around what it answers:

- a body-size limit (413 before the body is read, by its Content-Length, or as soon as a
  streamed body passes the limit);
- authentication before the body: on protected API routes the bearer key is checked
  (a 401 without reading the body), and the key found is handed to the route's
  dependency (`deps.get_current_key`), which does not look it up again;
- a per-client limit on failed authentications (429 with Retry-After), and their count
  (`modelcert_api_auth_failures_total`, by surface and reason);
- security headers: on every answer `X-Content-Type-Options: nosniff`; on the dashboard
  a Content-Security-Policy (same-origin scripts and styles only, no framing, forms post
  only here), X-Frame-Options, Referrer-Policy, and `Cache-Control: no-store` on every
  page but the static files;
- a per-key cap on open progress streams (429 with Retry-After), and their lifetime.

The limits are module constants (the limiter and the stream slots live on `app.state`,
where a test may replace them).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelcert.store.api_keys import authenticate
from modelcert.store.auth_models import ApiKey

log = logging.getLogger(__name__)

# Bodies: the largest request (certify-multiple: 1,000 refs of 300 characters) is ~0.4 MB.
MAX_BODY_BYTES = 1024 * 1024
# Failed authentications (an unknown, revoked or malformed key; a missing one is not a
# guess and is not counted towards the limit) per client address in a sliding window.
FAILED_AUTH_LIMIT = 20
FAILED_AUTH_WINDOW_S = 60.0
# Progress streams: at most this many open at once per key, each for at most this long
# (the client reconnects: EventSource does it by itself).
MAX_STREAMS_PER_KEY = 5
STREAM_MAX_S = 30 * 60.0
STREAM_RETRY_AFTER_S = 5

AUTH_FAILURES_METRIC = "modelcert_api_auth_failures_total"
AUTH_SURFACES = ("api", "dashboard")
AUTH_REASONS = ("missing", "invalid", "rate_limited")

# Paths under /api that need no key.
OPEN_API_PATHS = frozenset({"/api/health"})
DASHBOARD_PREFIX = "/dashboard"
DASHBOARD_STATIC = "/dashboard/static/"

DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
DASHBOARD_HEADERS = {
    "content-security-policy": DASHBOARD_CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


class AuthMetrics(Collector):
    """The failed-authentication counter of one app (its /metrics exports it), every
    surface × reason from 0."""

    def __init__(self) -> None:
        self._counts = {(s, r): 0 for s in AUTH_SURFACES for r in AUTH_REASONS}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def record(self, surface: str, reason: str) -> None:
        if (surface, reason) not in self._counts:
            raise ValueError(f"unknown auth failure {surface!r}/{reason!r}")
        with self._lock:
            self._counts[(surface, reason)] += 1

    def count(self, surface: str, reason: str) -> int:
        return self._counts[(surface, reason)]

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            AUTH_FAILURES_METRIC.removesuffix("_total"),
            "Requests refused for their credentials, by surface (api, dashboard) and reason "
            "(missing, invalid, rate_limited: refused by the per-client failure limit).",
            labels=["surface", "reason"],
        )
        with self._lock:
            counts = sorted(self._counts.items())
        for (surface, reason), value in counts:
            family.add_metric([surface, reason], value)
        yield family


class FailedAuthLimiter:
    """Failed authentications per client address in a sliding window; past the limit the
    client is refused (429) until its oldest failure leaves the window. In memory, per
    API process: behind several replicas each counts its own."""

    def __init__(
        self, limit: int = FAILED_AUTH_LIMIT, window_s: float = FAILED_AUTH_WINDOW_S
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _trim(self, client: str, now: float) -> deque[float]:
        failures = self._failures[client]
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return deque()
        return failures

    def retry_after(self, client: str) -> int | None:
        """Seconds the client must wait before trying again, or None if it may try."""
        now = time.monotonic()
        with self._lock:
            failures = self._trim(client, now)
            if len(failures) < self.limit:
                return None
            return max(1, int(failures[0] + self.window_s - now + 0.999))

    def record_failure(self, client: str) -> None:
        with self._lock:
            self._failures[client].append(time.monotonic())
            # Bound memory: a client past the limit keeps only what the window needs.
            while len(self._failures[client]) > self.limit:
                self._failures[client].popleft()


class StreamSlots:
    """Open progress streams per key, at most `limit` at once."""

    def __init__(self, limit: int = MAX_STREAMS_PER_KEY) -> None:
        self.limit = limit
        self._open: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def acquire(self, key_name: str) -> bool:
        with self._lock:
            if self._open[key_name] >= self.limit:
                return False
            self._open[key_name] += 1
            return True

    def release(self, key_name: str) -> None:
        with self._lock:
            self._open[key_name] -= 1
            if self._open[key_name] <= 0:
                del self._open[key_name]

    def open_count(self, key_name: str) -> int:
        with self._lock:
            return self._open.get(key_name, 0)

    @contextmanager
    def held(self, key_name: str) -> Iterator[None]:
        """Release the slot when the stream ends (acquired beforehand)."""
        try:
            yield
        finally:
            self.release(key_name)


def client_address(scope: Scope) -> str:
    """Who is asking: the peer address (a proxy in front is one client to this limit)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _json_answer(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode("utf-8")
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode("ascii")),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """413 for a body above MAX_BODY_BYTES: by Content-Length before reading anything, or
    while a body without one streams in."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            try:
                too_large = int(length) > self.limit
            except ValueError:
                too_large = False  # the server refuses a malformed length itself
            if too_large:
                await _json_answer(send, 413, _too_large(self.limit))
                return
        received = 0
        started = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Answer now, and tell the app the client went away: whatever it
                    # answers to that (FastAPI: a 400) is dropped.
                    refused = True
                    if not started:
                        await _json_answer(send, 413, _too_large(self.limit))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


def _too_large(limit: int) -> dict[str, Any]:
    return {"detail": f"request body too large: at most {limit} bytes", "field": "body"}


def _bearer(scope: Scope) -> str | None:
    """The bearer token of the request, or None when there is no usable header."""
    header = Headers(scope=scope).get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_protected_api_path(path: str) -> bool:
    return path.startswith("/api/") and path not in OPEN_API_PATHS


MISSING_KEY = "missing API key: send the header 'Authorization: Bearer <key>'"
INVALID_KEY = "invalid or revoked API key"
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def too_many_failures(retry_after: int) -> dict[str, Any]:
    return {
        "detail": (f"too many failed authentications from this client: retry in {retry_after} s"),
        "field": "Authorization",
    }


def load_key(factory: sessionmaker[Session], presented: str) -> ApiKey | None:
    """The live key matching `presented`, detached from its session (its use recorded)."""
    with factory() as session:
        key = authenticate(session, presented)
        if key is None:
            return None
        session.commit()
        session.refresh(key)
        session.expunge(key)
        return key


class ApiAuthMiddleware:
    """Checks the bearer key of a protected API request before anything reads its body:
    401 (with the challenge) when missing or wrong, 429 when this client failed too often.
    The key found is put in the request's state for `deps.get_current_key`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected_api_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        limiter: FailedAuthLimiter = state.auth_limiter
        metrics: AuthMetrics = state.auth_metrics
        client = client_address(scope)
        presented = _bearer(scope)
        if presented is None:
            metrics.record("api", "missing")
            await _json_answer(send, 401, {"detail": MISSING_KEY}, CHALLENGE)
            return
        wait = limiter.retry_after(client)
        if wait is not None:
            metrics.record("api", "rate_limited")
            await _json_answer(send, 429, too_many_failures(wait), {"Retry-After": str(wait)})
            return
        key = await run_in_threadpool(load_key, state.session_factory, presented)
        if key is None:
            limiter.record_failure(client)
            metrics.record("api", "invalid")
            # Never log what was presented: it may be a real key pasted in the wrong place.
            log.warning("API request with an invalid or revoked key rejected (client %s)", client)
            await _json_answer(send, 401, {"detail": INVALID_KEY}, CHALLENGE)
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """nosniff everywhere; on the dashboard CSP, no framing, a strict referrer policy and,
    except for its static files, `Cache-Control: no-store`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        dashboard = path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/")
        static = path.startswith(DASHBOARD_STATIC)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if not (dashboard and not static and name.lower() == b"cache-control")
                ]
                present = {name.lower() for name, _ in headers}
                extra = {"x-content-type-options": "nosniff"}
                if dashboard:
                    extra.update(DASHBOARD_HEADERS)
                    if not static:
                        extra["cache-control"] = "no-store"
                for name, value in extra.items():
                    if name.encode("latin-1") not in present:
                        headers.append((name.encode("latin-1"), value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def refuse_unknown_query(request: Request) -> None:
    """A query parameter the route does not take is refused (422 naming it), as an unknown
    body field is: `?regoin=eu-west-1` silently ignored would answer for every region."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.routing import APIRoute

    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    taken: set[str] = set()
    pending = [route.dependant]  # the route's own parameters and its dependencies'
    while pending:
        dependant = pending.pop()
        taken.update(param.alias for param in dependant.query_params)
        pending.extend(dependant.dependencies)
    unknown = [name for name in request.query_params if name not in taken]
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", unknown[0][:100]),
                    "msg": "unknown query parameter"
                    + (f" (this route takes: {', '.join(sorted(taken))})" if taken else ""),
                    "input": request.query_params[unknown[0]][:100],
                }
            ]
        )
