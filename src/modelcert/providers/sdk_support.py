"""What the providers built on a vendor's HTTP SDK (openai, anthropic, google-genai) share:
the API key read from the environment variable their configuration names, Retry-After
from an answer's headers, and error text kept whole but bounded."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx2

from modelcert import secrets
from modelcert.providers.base import ProviderError, parse_retry_after

# Keep error text whole but bounded (an HTML error page can be huge).
MAX_MESSAGE = 4000


def api_key_from_env(
    config: Mapping[str, Any], environ: Mapping[str, str], *, provider: str, variable: str = ""
) -> str | None:
    """The key in the variable `config["api_key_env"]` names (None when it names none),
    registered as a secret so that it is masked wherever it could be echoed back.

    Keys come only from that variable: never from the SDK's own default variables
    (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY…), which would certify with
    credentials the configuration does not show."""
    key_variable = config.get(variable or "api_key_env")
    if not key_variable:
        return None
    value = environ.get(str(key_variable))
    if not value:
        raise ProviderError(
            f"environment variable {key_variable} (the API key) is not set",
            code="MissingCredentials",
            provider=provider,
        )
    secrets.register(value)
    return value


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` (preferred: finer) or `retry-after`."""
    retry_after_ms = parse_retry_after(headers.get("retry-after-ms"))
    if retry_after_ms is not None:
        return retry_after_ms / 1000
    return parse_retry_after(headers.get("retry-after"))


def bounded(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "…"


def causes(exc: BaseException) -> str:
    """The text of the underlying errors (e.g. 'Connection refused'), outermost first."""
    texts: list[str] = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(texts) < 5:
        text = str(cause) or type(cause).__name__
        if text not in texts:
            texts.append(text)
        cause = cause.__cause__ or cause.__context__
    return ": ".join(texts)


def malformed_text(exc: BaseException) -> str:
    """What was wrong with an answer that could not be read (bad JSON, a missing field)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} in {exc.doc[:1000]!r}"
    return f"{type(exc).__name__}: {exc}"


def transport_error(exc: httpx2.TransportError, provider: str) -> ProviderError:
    """A failure of the connection itself: refused, timed out, or cut (reset, closed)
    once an answer had started streaming, where the SDKs do not wrap httpx's errors."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderError(f"timed out: {text}", code="TimeoutError", provider=provider)
    if isinstance(exc, httpx2.ConnectError):
        return ProviderError(
            f"connection failed: {text}", code="ConnectionError", provider=provider
        )
    return ProviderError(f"stream interrupted: {text}", code="StreamInterrupted", provider=provider)


def malformed_answer(exc: BaseException, provider: str) -> ProviderError:
    """The error for an answer that could not be read: invalid JSON in a body or an SSE
    event, or an answer of an unexpected shape."""
    return ProviderError(
        bounded(f"malformed answer: {malformed_text(exc)}"),
        code="MalformedResponse",
        provider=provider,
    )
