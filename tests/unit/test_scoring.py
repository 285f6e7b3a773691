from __future__ import annotations

import pytest

from modelcert.certify.scoring import TestScoreInput, badge_for, score_results
from modelcert.domain import Badge, CertificationStatus, ErrorCategory, TestOutcome

PASS = TestOutcome.PASSED
FAIL = TestOutcome.FAILED


def passed(n: int, latency_ms: float, retries: int = 0) -> list[TestScoreInput]:
    return [TestScoreInput(PASS, latency_ms, retries) for _ in range(n)]


def failed(n: int, category: ErrorCategory, message: str = "boom") -> list[TestScoreInput]:
    return [TestScoreInput(FAIL, None, 0, category, message) for _ in range(n)]


def test_worked_example_fast_model_is_premium() -> None:
    score = score_results(passed(7, 1285))
    assert (score.rating, score.badge, score.status) == (
        5.0,
        Badge.PREMIUM,
        CertificationStatus.CERTIFIED,
    )
    assert score.score == 100
    assert score.success_rate == 100.0


def test_worked_example_slow_model_is_recommended() -> None:
    score = score_results(passed(7, 5963))
    assert (score.rating, score.badge) == (4.4, Badge.RECOMMENDED)
    assert score.status is CertificationStatus.CERTIFIED


def test_no_passing_test_is_unavailable_not_limited() -> None:
    # The old system scored average latency 0 as "fast" and landed here at LIMITED.
    score = score_results(failed(7, ErrorCategory.TIMEOUT))
    assert score.badge is Badge.UNAVAILABLE
    assert score.rating == 0.0
    assert score.status is CertificationStatus.FAILED
    assert score.avg_latency_ms is None


def test_retries_are_counted_and_lower_resilience() -> None:
    calm = score_results(passed(6, 1000))
    retried = score_results(passed(6, 1000, retries=6))
    assert retried.total_retries == 36
    assert retried.rating == calm.rating - 0.5


@pytest.mark.parametrize(
    ("passes", "fails", "status"),
    [
        (8, 2, CertificationStatus.CERTIFIED),  # 80 %
        (7, 3, CertificationStatus.QUALITY_WARNING),  # 70 %
        (6, 4, CertificationStatus.QUALITY_WARNING),  # 60 %
        (5, 5, CertificationStatus.FAILED),  # 50 %
    ],
)
def test_status_thresholds(passes: int, fails: int, status: CertificationStatus) -> None:
    results = passed(passes, 500) + failed(fails, ErrorCategory.QUALITY_ISSUE)
    assert score_results(results).status is status


def test_not_available_category_fails_whatever_the_success_rate() -> None:
    results = passed(9, 500) + failed(1, ErrorCategory.PERMISSION_ERROR, "AccessDenied")
    score = score_results(results)
    assert score.success_rate == 90.0
    assert score.status is CertificationStatus.FAILED
    assert score.error_category is ErrorCategory.PERMISSION_ERROR
    assert score.error_message == "AccessDenied"


def test_decisive_error_is_the_highest_priority_category() -> None:
    results = failed(1, ErrorCategory.TIMEOUT) + failed(1, ErrorCategory.UNAVAILABLE, "gone")
    assert score_results(results).error_category is ErrorCategory.UNAVAILABLE


def test_skipped_tests_do_not_count() -> None:
    results = passed(4, 800) + [TestScoreInput(TestOutcome.SKIPPED)] * 3
    score = score_results(results)
    assert (score.tests_total, score.tests_skipped, score.success_rate) == (4, 3, 100.0)


def test_all_skipped_is_an_error_not_a_verdict() -> None:
    assert score_results([TestScoreInput(TestOutcome.SKIPPED)]).status is CertificationStatus.ERROR


@pytest.mark.parametrize(
    ("rating", "badge"),
    [
        (4.8, Badge.PREMIUM),
        (4.7, Badge.RECOMMENDED),
        (4.0, Badge.RECOMMENDED),
        (3.0, Badge.FUNCTIONAL),
        (2.0, Badge.LIMITED),
        (1.0, Badge.NOT_RECOMMENDED),
        (0.9, Badge.UNAVAILABLE),
    ],
)
def test_badges(rating: float, badge: Badge) -> None:
    assert badge_for(rating) is badge


def not_run(n: int) -> list[TestScoreInput]:
    reason = "not run: the certification exceeded CERTIFICATION_TIMEOUT (300 s)"
    return [TestScoreInput(TestOutcome.NOT_RUN, detail=reason) for _ in range(n)]


def test_tests_not_run_for_lack_of_time_give_no_verdict() -> None:
    # 8 of 12 passed and 4 never ran: 100 % of what ran, but the 4 could have failed.
    score = score_results(passed(8, 500) + not_run(4))
    assert score.status is CertificationStatus.INCOMPLETE
    assert (score.rating, score.badge, score.score) == (None, None, None)
    assert (score.tests_total, score.tests_passed, score.tests_skipped) == (8, 8, 4)
    assert score.error_message is not None
    assert "4 of 12 tests not run" in score.error_message
    assert "CERTIFICATION_TIMEOUT" in score.error_message


def test_missing_evidence_never_certifies_even_one_test_short() -> None:
    score = score_results(passed(11, 500) + not_run(1))
    assert score.status is CertificationStatus.INCOMPLETE


def test_an_unusable_deployment_fails_on_the_evidence_that_ran() -> None:
    results = failed(1, ErrorCategory.PERMISSION_ERROR, "denied") + not_run(11)
    score = score_results(results)
    assert score.status is CertificationStatus.FAILED
    assert score.badge is Badge.UNAVAILABLE


@pytest.mark.parametrize(
    ("passes", "fails", "category"),
    [
        # 9/10 with a decisive CONFIGURATION_ERROR would rate ~4.6 (RECOMMENDED) uncapped.
        (9, 1, ErrorCategory.CONFIGURATION_ERROR),
        (5, 5, ErrorCategory.QUALITY_ISSUE),  # FAILED below 60 %
        (7, 3, ErrorCategory.TIMEOUT),  # QUALITY_WARNING
        (6, 4, ErrorCategory.QUALITY_ISSUE),
    ],
)
def test_verdict_rating_and_badge_agree(passes: int, fails: int, category: ErrorCategory) -> None:
    score = score_results(passed(passes, 500) + failed(fails, category))
    assert score.badge is not None and score.rating is not None
    allowed = {
        CertificationStatus.FAILED: {Badge.NOT_RECOMMENDED, Badge.UNAVAILABLE},
        CertificationStatus.QUALITY_WARNING: {
            Badge.FUNCTIONAL,
            Badge.LIMITED,
            Badge.NOT_RECOMMENDED,
            Badge.UNAVAILABLE,
        },
    }[score.status]
    assert score.badge in allowed, (score.status, score.rating, score.badge)
    assert badge_for(score.rating) is score.badge


def test_a_failed_run_for_availability_is_rated_zero() -> None:
    score = score_results(passed(9, 500) + failed(1, ErrorCategory.CONFIGURATION_ERROR))
    assert (score.status, score.rating, score.badge) == (
        CertificationStatus.FAILED,
        0.0,
        Badge.UNAVAILABLE,
    )


def test_an_unsupported_optional_feature_does_not_fail_the_deployment() -> None:
    score = score_results(passed(11, 500) + failed(1, ErrorCategory.UNSUPPORTED_FEATURE))
    assert score.status is CertificationStatus.CERTIFIED
    assert score.error_category is ErrorCategory.UNSUPPORTED_FEATURE
