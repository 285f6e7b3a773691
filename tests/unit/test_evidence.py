"""What the results so far say: fail fast, and an optional feature is not the deployment."""

from __future__ import annotations

import pytest

from modelcert.certify.battery import BATTERY_BY_ID
from modelcert.certify.evidence import (
    basic_request_answered,
    refine_feature_failure,
    skip_reason_after,
)
from modelcert.domain import ErrorCategory as C
from modelcert.domain import Severity, TestOutcome, TestResult


def ok(test_id: str = "t") -> TestResult:
    return TestResult(test_id, test_id, TestOutcome.PASSED)


def failed(category: C, test_id: str = "t") -> TestResult:
    return TestResult(
        test_id, test_id, TestOutcome.FAILED, error_category=category, error_message="boom"
    )


def skipped() -> TestResult:
    return TestResult("s", "s", TestOutcome.SKIPPED, detail="capability not declared")


def test_an_unusable_deployment_skips_the_rest() -> None:
    reason = skip_reason_after([ok(), failed(C.PERMISSION_ERROR, "streaming")])
    assert reason == "not run: PERMISSION_ERROR in streaming"


@pytest.mark.parametrize("category", [C.TIMEOUT, C.NETWORK_ERROR, C.SERVER_ERROR, C.RATE_LIMIT])
def test_two_unresponsive_tests_in_a_row_skip_the_rest(category: C) -> None:
    assert skip_reason_after([failed(category)]) is None
    reason = skip_reason_after([ok(), failed(category), skipped(), failed(category)])
    assert reason is not None and "unresponsive" in reason and str(category) in reason


def test_an_answer_in_between_keeps_the_certification_going() -> None:
    assert skip_reason_after([failed(C.TIMEOUT), ok(), failed(C.TIMEOUT)]) is None
    # A wrong answer is an answer: the endpoint responds.
    assert skip_reason_after([failed(C.TIMEOUT), failed(C.QUALITY_ISSUE)]) is None
    assert skip_reason_after([failed(C.UNSUPPORTED_FEATURE), failed(C.TIMEOUT)]) is None


def test_mixed_unresponsive_categories_count_together() -> None:
    reason = skip_reason_after([failed(C.NETWORK_ERROR), failed(C.TIMEOUT)])
    assert reason is not None and "NETWORK_ERROR and TIMEOUT" in reason


def test_basic_request_answered() -> None:
    assert basic_request_answered([ok("basic-prompt")])
    assert not basic_request_answered([failed(C.CONFIGURATION_ERROR, "basic-prompt")])
    assert not basic_request_answered([ok("streaming")])


@pytest.mark.parametrize("test_id", ["tool-calling", "json-output", "stop-sequence", "parameters"])
def test_a_rejected_optional_feature_is_unsupported_not_misconfigured(test_id: str) -> None:
    rejected = failed(C.CONFIGURATION_ERROR, test_id)
    refined = refine_feature_failure(rejected, BATTERY_BY_ID[test_id], basic_answered=True)
    assert refined.error_category is C.UNSUPPORTED_FEATURE
    assert refined.error_severity is Severity.LOW
    assert refined.outcome is TestOutcome.FAILED
    assert refined.error_message == "boom"  # the provider's own text is kept
    feature = BATTERY_BY_ID[test_id].feature
    assert feature is not None and refined.detail.startswith(f"{feature} not supported")
    assert skip_reason_after([ok("basic-prompt"), refined]) is None


def test_a_validation_error_on_the_basic_request_still_fails_the_deployment() -> None:
    rejected = failed(C.CONFIGURATION_ERROR, "tool-calling")
    tool = BATTERY_BY_ID["tool-calling"]
    assert refine_feature_failure(rejected, tool, basic_answered=False) is rejected
    basic = failed(C.CONFIGURATION_ERROR, "basic-prompt")
    assert (
        refine_feature_failure(basic, BATTERY_BY_ID["basic-prompt"], basic_answered=True) is basic
    )


def test_other_failures_of_a_feature_test_are_left_alone() -> None:
    wrong = failed(C.QUALITY_ISSUE, "json-output")
    assert refine_feature_failure(wrong, BATTERY_BY_ID["json-output"], basic_answered=True) is wrong
