"""What the results so far say about the rest of a certification. Pure.

- **Fail fast**: once a test shows the deployment unusable (an availability category), or
  it stops answering (two tests in a row end timed out, refused, throttled or erroring on
  the server side), the remaining tests need not run: no paying for calls that cannot
  succeed, and a dead endpoint gets its verdict in about two test timeouts.
- **An optional feature is not the deployment**: a validation error on a request that
  used an optional feature (tools, JSON mode, stop sequences, sampling parameters), from
  an endpoint that answered the basic request in this run, says that the feature is
  unsupported, not that the deployment is misconfigured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from modelcert.certify.battery import BatteryTest
from modelcert.certify.errors import rule_for
from modelcert.domain import NOT_AVAILABLE_CATEGORIES, ErrorCategory, TestOutcome, TestResult

# The test whose request is the basic one: every other request adds to it.
BASIC_TEST_ID = "basic-prompt"
# After this many tests in a row end unresponsive, the endpoint is not worth waiting for.
UNRESPONSIVE_LIMIT = 2
UNRESPONSIVE = frozenset(
    {
        ErrorCategory.TIMEOUT,
        ErrorCategory.NETWORK_ERROR,
        ErrorCategory.SERVER_ERROR,
        ErrorCategory.RATE_LIMIT,
    }
)


def skip_reason_after(results: Sequence[TestResult]) -> str | None:
    """Fail fast: why the remaining tests need not run, given the results so far."""
    for result in results:
        if result.error_category in NOT_AVAILABLE_CATEGORIES:
            return f"not run: {result.error_category} in {result.test_id}"
    tail = [r for r in results if r.outcome.executed][-UNRESPONSIVE_LIMIT:]
    if len(tail) == UNRESPONSIVE_LIMIT and all(r.error_category in UNRESPONSIVE for r in tail):
        categories = " and ".join(dict.fromkeys(str(r.error_category) for r in tail))
        return f"not run: endpoint unresponsive ({categories} in {len(tail)} tests in a row)"
    return None


def basic_request_answered(results: Sequence[TestResult]) -> bool:
    return any(r.test_id == BASIC_TEST_ID and r.outcome is TestOutcome.PASSED for r in results)


def refine_feature_failure(
    result: TestResult, test: BatteryTest, *, basic_answered: bool
) -> TestResult:
    """A CONFIGURATION_ERROR on an optional feature, when the endpoint answered the basic
    request (`basic_request_answered` of the results before), becomes UNSUPPORTED_FEATURE:
    the test fails with the provider's message, and the deployment is not failed (or the
    rest skipped) for it."""
    if (
        not basic_answered
        or test.feature is None
        or result.error_category is not ErrorCategory.CONFIGURATION_ERROR
    ):
        return result
    category = ErrorCategory.UNSUPPORTED_FEATURE
    return replace(
        result,
        error_category=category,
        error_severity=rule_for(category).severity,
        detail=f"{test.feature} not supported by this endpoint: {result.error_message}",
    )
