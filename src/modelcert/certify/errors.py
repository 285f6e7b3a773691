"""Error taxonomy (DOMAIN §5): classify a failure from provider codes first, then HTTP
status, then message patterns; priority order, first match wins. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelcert.domain import ErrorCategory, Severity


@dataclass(frozen=True)
class CategoryRule:
    category: ErrorCategory
    priority: int
    severity: Severity
    temporary: bool
    codes: frozenset[str]  # provider error codes, compared case-insensitively
    statuses: frozenset[int]
    patterns: tuple[re.Pattern[str], ...]


def _rule(
    category: ErrorCategory,
    priority: int,
    severity: Severity,
    temporary: bool,
    codes: tuple[str, ...] = (),
    statuses: tuple[int, ...] = (),
    patterns: tuple[str, ...] = (),
) -> CategoryRule:
    return CategoryRule(
        category,
        priority,
        severity,
        temporary,
        frozenset(c.lower() for c in codes),
        frozenset(statuses),
        tuple(re.compile(p, re.IGNORECASE) for p in patterns),
    )


RULES: tuple[CategoryRule, ...] = (
    _rule(
        ErrorCategory.UNAVAILABLE,
        10,
        Severity.CRITICAL,
        False,
        codes=(
            "ResourceNotFoundException",
            "model_not_found",
            "ModelNotReadyException",
            "NotFound",
            "DeploymentNotFound",
            "not_found_error",  # Anthropic
            "NOT_FOUND",  # Google (Gemini API, Vertex AI)
        ),
        statuses=(404,),
        patterns=(
            r"model .*not found",
            r"not supported",
            r"invalid model id",
            r"model identifier is invalid",
            r"does not exist",
            r"unknown model",
        ),
    ),
    _rule(
        ErrorCategory.PERMISSION_ERROR,
        20,
        Severity.CRITICAL,
        False,
        # permission_denied also covers Google's PERMISSION_DENIED (codes ignore case).
        codes=(
            "AccessDeniedException",
            "permission_denied",
            "PermissionDenied",
            "permission_error",
        ),
        statuses=(403,),
        patterns=(r"not authori[sz]ed", r"forbidden", r"access denied"),
    ),
    _rule(
        ErrorCategory.AUTHENTICATION_ERROR,
        25,
        Severity.CRITICAL,
        False,
        codes=(
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "ExpiredTokenException",
            "ExpiredToken",
            "NoCredentialsError",
            "MissingCredentials",
            "invalid_api_key",
            "authentication_error",
            "UNAUTHENTICATED",  # Google
            # The Gemini API refuses a bad key with 400 INVALID_ARGUMENT; the reason in its
            # ErrorInfo detail says what it is (see providers/gemini_events.py).
            "API_KEY_INVALID",
            "RefreshError",  # google-auth could not refresh the credentials (ADC)
        ),
        statuses=(401,),
        patterns=(
            r"invalid api key",
            r"incorrect api key",
            r"security token .*invalid",
            r"unable to locate credentials",
            r"unauthori[sz]ed",
            r"invalid.*credentials",
        ),
    ),
    _rule(
        ErrorCategory.CONFIGURATION_ERROR,
        30,
        Severity.HIGH,
        False,
        codes=(
            "ValidationException",
            "invalid_request_error",
            "BadRequest",
            "UnknownEndpoint",
            "InvalidRegion",
            "INVALID_ARGUMENT",  # Google
            "FAILED_PRECONDITION",  # Google: e.g. billing not enabled, API not offered there
            "request_too_large",  # Anthropic (413)
        ),
        statuses=(400, 422),
        patterns=(
            r"on-demand throughput isn.t supported",
            r"inference profile",
            r"invalid region",
            r"unknown region",
        ),
    ),
    _rule(
        ErrorCategory.PROVISIONING_REQUIRED,
        35,
        Severity.CRITICAL,
        False,
        codes=("ProvisionedThroughputRequired",),
        patterns=(r"provisioned throughput", r"model access", r"access to the model .*enabled"),
    ),
    _rule(
        ErrorCategory.RATE_LIMIT,
        40,
        Severity.MEDIUM,
        True,
        codes=(
            "ThrottlingException",
            "TooManyRequestsException",
            "rate_limit_exceeded",
            "ServiceQuotaExceededException",
            "insufficient_quota",
            "LimitExceededException",
            "rate_limit_error",  # Anthropic
            "RESOURCE_EXHAUSTED",  # Google
        ),
        statuses=(429,),
        patterns=(r"too many requests", r"rate limit", r"throttl", r"quota exceeded"),
    ),
    _rule(
        ErrorCategory.TIMEOUT,
        45,
        Severity.MEDIUM,
        True,
        codes=(
            "ModelTimeoutException",
            "TimeoutError",
            "ReadTimeoutError",
            "RequestTimeout",
            "timeout_error",  # Anthropic (504)
            "DEADLINE_EXCEEDED",  # Google
        ),
        statuses=(408, 504),
        patterns=(r"timed? ?out", r"deadline exceeded"),
    ),
    _rule(
        # Given by the runner, not by a provider: a validation error on an optional
        # feature (tools, JSON mode, stop sequences, sampling) of a request whose basic
        # form the endpoint answers (see `certify.evidence`).
        ErrorCategory.UNSUPPORTED_FEATURE,
        48,
        Severity.LOW,
        False,
    ),
    _rule(
        ErrorCategory.QUALITY_ISSUE,
        50,
        Severity.LOW,
        False,
        codes=("QualityIssue", "MalformedResponse"),
        patterns=(r"empty response", r"no chunks", r"invalid json", r"not remembered"),
    ),
    _rule(
        # An answer did arrive, over a working connection: the server failed, the network
        # did not. Retried like the network, shown with the provider's code.
        ErrorCategory.SERVER_ERROR,
        55,
        Severity.MEDIUM,
        True,
        codes=(
            "ServiceUnavailableException",
            "InternalServerException",
            "InternalServerError",
            "ModelStreamErrorException",
            "ModelErrorException",
            "server_error",
            "ServiceUnavailable",
            "api_error",  # Anthropic (500)
            # Anthropic's 529: the service as a whole is overloaded, not this caller's quota
            # (that is rate_limit_error, 429), so it is retried as a server fault.
            "overloaded_error",
            "UNAVAILABLE",  # Google (503)
            "INTERNAL",  # Google (500)
        ),
        statuses=(500, 502, 503, 529),
        patterns=(r"internal server error", r"service unavailable", r"bad gateway"),
    ),
    _rule(
        # The connection itself failed: refused, reset, cut mid-answer, no name.
        ErrorCategory.NETWORK_ERROR,
        60,
        Severity.MEDIUM,
        True,
        codes=(
            "ConnectionError",
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "StreamInterrupted",
        ),
        patterns=(
            r"connection (refused|reset|aborted|closed)",
            r"name or service not known",
            r"temporary failure in name resolution",
            r"dns",
            r"broken pipe",
            r"stream (cut|ended|interrupted)",
        ),
    ),
)

_UNKNOWN = CategoryRule(
    ErrorCategory.UNKNOWN_ERROR,
    999,
    Severity.MEDIUM,
    False,
    frozenset(),
    frozenset(),
    (),
)
_BY_CATEGORY = {rule.category: rule for rule in (*RULES, _UNKNOWN)}


@dataclass(frozen=True)
class Classification:
    category: ErrorCategory
    severity: Severity
    temporary: bool
    priority: int


def _classified(rule: CategoryRule) -> Classification:
    return Classification(rule.category, rule.severity, rule.temporary, rule.priority)


def rule_for(category: ErrorCategory) -> Classification:
    """The severity, temporariness and priority of a category."""
    return _classified(_BY_CATEGORY[category])


def categorise_error(
    *, code: str | None = None, status: int | None = None, message: str = ""
) -> Classification:
    """Classify one failure: codes first, then HTTP status, then message patterns."""
    if code:
        lowered = code.lower()
        for rule in RULES:
            if lowered in rule.codes:
                return _classified(rule)
    if status is not None:
        for rule in RULES:
            if status in rule.statuses:
                return _classified(rule)
    if message:
        for rule in RULES:
            if any(p.search(message) for p in rule.patterns):
                return _classified(rule)
    return _classified(_UNKNOWN)


def is_temporary(category: ErrorCategory) -> bool:
    return _BY_CATEGORY[category].temporary
