"""Secrets the process knows, masked wherever text leaves a provider or reaches a log.

Providers register every secret value they use (`register`): the API keys read from the
environment variables their configuration names, the AWS credentials and session token
of the boto3 chain. `redact(text)` replaces each registered value with `***`, and also
masks token shapes that were echoed even if this process never knew them (`Bearer …`,
`sk-…`, `AKIA…`/`ASIA…`, Google's `AIza…` keys and `ya29.…` tokens, modelcert's own
`mc_…` API keys, `X-Amz-Security-Token=…`, a URL's password). It runs where a
`ProviderError` is built (so what is stored, shown and reported is already masked), where
results are written, and on every log record
(`install_log_redaction`: a log-record factory, so handlers added later by uvicorn or
DBOS are covered too, plus a filter on the root handlers and a structlog processor).

`find_config_secret` is the other half: configuration must never hold a secret.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

MASK = "***"
# Shorter values are not registered: masking "abc" everywhere would garble text and
# such a value is no secret worth the name.
MIN_SECRET_LENGTH = 8

_lock = threading.Lock()
_known: frozenset[str] = frozenset()
# Longest first, so that a secret containing another is masked whole.
_ordered: tuple[str, ...] = ()

# Token shapes masked even when unknown. Conservative: each needs a distinctive prefix
# or key name, and enough characters to be a credential rather than a word.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer <token> / Basic <base64>
    # (a digit required: "Basic authentication" or "Bearer realm" are words, not tokens)
    (
        re.compile(r"\b(Bearer|Basic)\s+(?=[A-Za-z._~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,}", re.I),
        r"\1 " + MASK,
    ),
    # OpenAI-style keys (sk-…, sk-proj-…, sk-ant-…)
    (re.compile(r"\bsk-[A-Za-z0-9_*-]{8,}"), MASK),
    # AWS access key ids (long-term AKIA, temporary ASIA)
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), MASK),
    # Google API keys (the Gemini API's) and Google OAuth access tokens (Vertex AI's)
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), MASK),
    (re.compile(r"\bya29\.[0-9A-Za-z_.-]{16,}"), MASK),
    # modelcert's own API keys: "mc_" + token_urlsafe(32)
    (re.compile(r"\bmc_[A-Za-z0-9_-]{20,}"), MASK),
    # SigV4 pieces in query strings and headers
    (
        re.compile(
            r"(X-Amz-(?:Security-Token|Credential|Signature)['\"]?\s*[=:]\s*b?['\"]?)[^&\s'\",;}]+",
            re.IGNORECASE,
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"\b(Signature=)[0-9a-f]{16,}", re.IGNORECASE), r"\1" + MASK),
    # name = value / "name": "value" for names that only ever hold secrets
    (
        re.compile(
            r"\b((?:api[-_]?key|x-api-key|access[-_]?token|session[-_]?token|refresh[-_]?token"
            r"|secret[-_]?access[-_]?key|client[-_]?secret|password|passwd)['\"]?\s*[=:]\s*"
            r"['\"]?)[^\s'\",&;}]{4,}",
            re.IGNORECASE,
        ),
        r"\1" + MASK,
    ),
    # A password in a URL's userinfo: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@", re.IGNORECASE), r"\1" + MASK + "@"),
)


def register(*values: str | None) -> None:
    """Remember secret values (and their URL-encoded forms) so that `redact` masks them."""
    global _known, _ordered
    fresh: set[str] = set()
    for value in values:
        if not value or len(value) < MIN_SECRET_LENGTH:
            continue
        fresh.add(value)
        quoted = urllib.parse.quote(value, safe="")
        if quoted != value:
            fresh.add(quoted)
    with _lock:
        if fresh <= _known:
            return
        _known = _known | fresh
        _ordered = tuple(sorted(_known, key=len, reverse=True))


def registered() -> frozenset[str]:
    return _known


def forget_all() -> None:
    """Tests only: start from no known secret."""
    global _known, _ordered
    with _lock:
        _known, _ordered = frozenset(), ()


def redact(text: str) -> str:
    """`text` with every known secret and every recognised token shape masked."""
    if not text:
        return text
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_optional(text: str | None) -> str | None:
    return None if text is None else redact(text)


def redact_value(value: Any) -> Any:
    """Strings inside (nested) dicts, lists and tuples redacted; anything else as is."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item) for item in value)
    return value


# -- logging -------------------------------------------------------------------------------


def redact_record(record: logging.LogRecord) -> None:
    """Mask secrets in a log record's message, exception text and stack, in place."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed format string: leave it to the handler to report
        return
    masked = redact(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """A handler filter: every record it passes has its secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_factory_installed = False


def install_log_redaction(handlers: Iterable[logging.Handler] = ()) -> None:
    """Mask secrets in every log record this process creates (idempotent), and put a
    `RedactingFilter` on `handlers` (those configured now; the record factory covers the
    ones third-party libraries add later)."""
    global _factory_installed
    with _lock:
        if not _factory_installed:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                redact_record(record)
                return record

            logging.setLogRecordFactory(factory)
            _factory_installed = True
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def structlog_redactor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> Mapping[str, Any]:
    """A structlog processor: every string value of the event masked."""
    return {key: redact_value(value) for key, value in event_dict.items()}


# -- configuration ---------------------------------------------------------------------------

# Normalised (lower case, no - or _) names that hold a secret; *_env names the variable.
_SECRET_NAMES = frozenset(
    {
        "apikey",
        "xapikey",
        "key",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "authorization",
        "auth",
        "bearer",
        "cookie",
        "credential",
        "credentials",
        "privatekey",
        "signature",
    }
)
_SECRET_PARTS = (
    "apikey",
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "credential",
    "privatekey",
    "accesskey",
    "sessionkey",
    "bearer",
    "cookie",
)
# Names that look like a secret's but hold none (a count of tokens, a file path…).
_NOT_SECRET_SUFFIXES = ("env", "tokens", "tokenizer", "file", "path", "id", "type", "url")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def normalise_name(name: str) -> str:
    return re.sub(r"[-_\s.]", "", name).lower()


def is_secret_name(name: str) -> bool:
    """`api_key`, `api-key`, `apiKey`, `X-API-Key`, `aws_secret_access_key`, `Authorization`…"""
    normal = normalise_name(name)
    if not normal or normal.endswith(_NOT_SECRET_SUFFIXES):
        return False
    return normal in _SECRET_NAMES or any(part in normal for part in _SECRET_PARTS)


def _looks_like_key(value: str) -> bool:
    # The key shapes at the head of _PATTERNS (Bearer, sk-, AKIA, AIza, ya29., mc_).
    return any(pattern.search(value) for pattern, _ in _PATTERNS[:6])


def find_config_secret(value: Any, path: str) -> tuple[str, str] | None:
    """(field, why) when `value` (a configuration, at `path`) holds a secret, else None.
    Looks into nested objects and lists, at key names, `*_env` values and URLs with a
    password."""
    if isinstance(value, Mapping):
        for raw_key, item in value.items():
            key = str(raw_key)
            where = f"{path}.{key}"
            normal = normalise_name(key)
            if isinstance(item, Mapping | list | tuple):
                problem = find_config_secret(item, where)
            elif normal.endswith("env") and normal != "env":
                problem = _check_env_name(item, where)
            elif is_secret_name(key) and item is not None and item != "":
                problem = (
                    where,
                    f"{where}: secrets are not stored; put the value in an environment "
                    f"variable and give its name as {key.replace('-', '_')}_env",
                )
            else:
                problem = find_config_secret(item, where)
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = find_config_secret(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(value, str):
        return _check_string(value, path)
    return None


def check_env_name(value: Any, where: str) -> tuple[str, str] | None:
    """(field, why) unless `value` is an environment variable's name (and not a key)."""
    return _check_env_name(value, where)


def _check_env_name(value: Any, where: str) -> tuple[str, str] | None:
    if not isinstance(value, str) or not ENV_NAME.fullmatch(value):
        return where, (
            f"{where}: expected the NAME of an environment variable "
            f"(letters, digits and _, not starting with a digit)"
        )
    if _looks_like_key(value) or _KEY_PREFIXES.match(value) or _random_looking(value):
        return where, f"{where}: looks like a key itself; give the NAME of the variable holding it"
    return None


# Well-known key prefixes that would still pass as a variable's name (sk_live_…, hf_…).
_KEY_PREFIXES = re.compile(
    r"(?:sk|rk|pk)_(?:live|test|proj)_|ghp_|gho_|github_pat_|hf_[A-Za-z]|AIza"
)


def _random_looking(value: str) -> bool:
    """A key rather than a name: a long run of letters and digits with no word separator
    (variable names are words joined by _), or a long hexadecimal string."""
    if re.fullmatch(r"[0-9a-fA-F]{24,}", value):
        return True
    return (
        len(value) >= 32
        and "_" not in value.strip("_")
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


def _check_string(value: str, where: str) -> tuple[str, str] | None:
    if "@" in value and "://" in value:
        try:
            parsed = urllib.parse.urlsplit(value.strip())
            password = parsed.password
        except ValueError:
            password = None
        if password:
            return where, f"{where}: a URL with a password is not stored; remove the user:password@"
    if _looks_like_key(value) or any(secret in value for secret in _ordered):
        return where, f"{where}: looks like a key or token; secrets are not stored"
    return None
