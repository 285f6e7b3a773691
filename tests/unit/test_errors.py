from __future__ import annotations

import pytest

from modelcert.certify.errors import categorise_error, is_temporary
from modelcert.domain import ErrorCategory as C
from modelcert.domain import Severity


@pytest.mark.parametrize(
    ("code", "status", "message", "category"),
    [
        ("ResourceNotFoundException", 404, "Model not found", C.UNAVAILABLE),
        ("AccessDeniedException", 403, "You don't have access", C.PERMISSION_ERROR),
        # Bedrock answers bad credentials with 403: the code decides before the status.
        ("UnrecognizedClientException", 403, "token invalid", C.AUTHENTICATION_ERROR),
        (
            "ValidationException",
            400,
            "Invocation of model ID x with on-demand throughput isn't supported.",
            C.CONFIGURATION_ERROR,
        ),
        ("ThrottlingException", 429, "Rate exceeded", C.RATE_LIMIT),
        ("throttlingException", None, "Too many tokens", C.RATE_LIMIT),  # stream frame casing
        ("ModelTimeoutException", 408, "timed out", C.TIMEOUT),
        ("ConnectionError", None, "Connection refused", C.NETWORK_ERROR),
        ("StreamInterrupted", None, "stream cut", C.NETWORK_ERROR),
        ("MalformedResponse", 200, "not JSON", C.QUALITY_ISSUE),
        (None, 401, "Incorrect API key provided", C.AUTHENTICATION_ERROR),
        (None, 429, "", C.RATE_LIMIT),
        # A 5xx came over a working connection: the server failed, not the network.
        (None, 503, "", C.SERVER_ERROR),
        (None, 500, "", C.SERVER_ERROR),
        ("ServiceUnavailableException", 503, "Service unavailable.", C.SERVER_ERROR),
        ("InternalServerException", 500, "Internal failure", C.SERVER_ERROR),
        ("ModelStreamErrorException", None, "model stream failed", C.SERVER_ERROR),
        ("server_error", 500, "The server had an error", C.SERVER_ERROR),
        (None, None, "502 Bad Gateway", C.SERVER_ERROR),
        ("EndpointConnectionError", None, "Could not connect", C.NETWORK_ERROR),
        (None, None, "[Errno 104] Connection reset by peer", C.NETWORK_ERROR),
        (None, None, "You need provisioned throughput for this model", C.PROVISIONING_REQUIRED),
        (None, None, "The request timed out", C.TIMEOUT),
        (None, None, "getaddrinfo: Temporary failure in name resolution", C.NETWORK_ERROR),
        (None, None, "something odd", C.UNKNOWN_ERROR),
    ],
)
def test_categorise(code: str | None, status: int | None, message: str, category: C) -> None:
    assert categorise_error(code=code, status=status, message=message).category is category


def test_unknown_is_medium_and_permanent() -> None:
    result = categorise_error(message="???")
    assert (result.severity, result.temporary) == (Severity.MEDIUM, False)


def test_only_rate_limit_timeout_server_and_network_are_temporary() -> None:
    temporary = {c for c in C if is_temporary(c)}
    assert temporary == {C.RATE_LIMIT, C.TIMEOUT, C.SERVER_ERROR, C.NETWORK_ERROR}


def test_unsupported_feature_is_given_not_matched() -> None:
    # Only the runner's evidence gives it (certify.evidence): no provider signal maps to it.
    result = categorise_error(code="UnsupportedFeature", status=400, message="tools")
    assert result.category is C.CONFIGURATION_ERROR


def test_codes_win_over_messages() -> None:
    # A throttling code whose message mentions "not found" stays a rate limit.
    result = categorise_error(code="ThrottlingException", message="quota not found")
    assert result.category is C.RATE_LIMIT
