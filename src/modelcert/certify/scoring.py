"""Scoring (DOMAIN §4) with the old defects fixed. Pure.

Fixed defects: a deployment with no passing test is UNAVAILABLE (the old code gave
it a perfect performance score from an average latency of 0 and landed at LIMITED);
retries are counted and lower the resilience term.

Two rules of our own:

- **No verdict from missing evidence.** A test that was meant to run but did not, for a
  reason that is not the model's (NOT_RUN: the certification ran out of time), makes the
  certification INCOMPLETE, with no rating or badge, unless what did run already shows
  the deployment unusable (an availability category: FAILED on that evidence).
- **A suite's weights and required tests count.** The success rate is weighted by each
  test's weight (1 for the built-in battery); a failed test marked `required` fails the
  certification whatever the rate (`modelcert.suites`).
- **Verdict, rating and badge agree.** The rating is capped by the verdict: a
  QUALITY_WARNING is at most FUNCTIONAL, a FAILED at most NOT_RECOMMENDED (UNAVAILABLE
  when an availability category decided it), so no failed run is rated RECOMMENDED.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Protocol

from modelcert.certify.errors import rule_for
from modelcert.domain import (
    NOT_AVAILABLE_CATEGORIES,
    Badge,
    CertificationStatus,
    ErrorCategory,
    Score,
    TestOutcome,
)

CERTIFIED_MIN_SUCCESS = 80.0
QUALITY_WARNING_MIN_SUCCESS = 60.0

_BADGE_THRESHOLDS: tuple[tuple[float, Badge], ...] = (
    (4.8, Badge.PREMIUM),
    (4.0, Badge.RECOMMENDED),
    (3.0, Badge.FUNCTIONAL),
    (2.0, Badge.LIMITED),
    (1.0, Badge.NOT_RECOMMENDED),
)


# The highest rating each verdict allows (badges follow the rating).
_RATING_CAP: dict[CertificationStatus, float] = {
    CertificationStatus.QUALITY_WARNING: 3.9,  # at most FUNCTIONAL
    CertificationStatus.FAILED: 1.9,  # at most NOT_RECOMMENDED
}


class ScoredTest(Protocol):
    """What scoring reads of one test result (a `domain.TestResult` has it all)."""

    @property
    def outcome(self) -> TestOutcome: ...
    @property
    def latency_ms(self) -> float | None: ...
    @property
    def retries(self) -> int: ...
    @property
    def error_category(self) -> ErrorCategory | None: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def detail(self) -> str: ...
    @property
    def test_id(self) -> str: ...
    @property
    def weight(self) -> float: ...
    @property
    def required(self) -> bool: ...


@dataclass(frozen=True)
class TestScoreInput:
    """What scoring needs from one test result, for building results by hand."""

    __test__ = False

    outcome: TestOutcome
    latency_ms: float | None = None
    retries: int = 0
    error_category: ErrorCategory | None = None
    error_message: str | None = None
    detail: str = ""
    test_id: str = "test"
    weight: float = 1.0
    required: bool = False


def performance_factor(avg_latency_ms: float) -> float:
    if avg_latency_ms < 2_000:
        return 1.0
    if avg_latency_ms < 5_000:
        return 0.7
    if avg_latency_ms < 10_000:
        return 0.4
    return 0.2


def badge_for(rating: float) -> Badge:
    for threshold, badge in _BADGE_THRESHOLDS:
        if rating >= threshold:
            return badge
    return Badge.UNAVAILABLE


def compute_rating(
    *,
    passed: int,
    total: int,
    avg_latency_ms: float | None,
    avg_retries: float,
    errors: int,
    success_fraction: float | None = None,
) -> float:
    """0.5·success + resilience + performance + stability, one decimal; 0 with no pass.
    `success_fraction` (0-1) is the weighted pass rate when tests weigh differently."""
    if total == 0 or passed == 0 or avg_latency_ms is None:
        return 0.0
    success = (passed / total if success_fraction is None else success_fraction) * 4
    resilience = max(0.5, 1 - min(avg_retries, 6) / 6 * 0.5)
    stability = max(0.0, 1 - errors / total)
    raw = 0.5 * success + resilience + performance_factor(avg_latency_ms) + stability
    return round(raw + 1e-9, 1)


def decisive_error(
    results: Sequence[ScoredTest],
) -> tuple[ErrorCategory, str | None] | None:
    """The most serious failure (lowest category priority), first one on ties."""
    failures = [r for r in results if r.outcome is TestOutcome.FAILED and r.error_category]
    if not failures:
        return None
    worst = min(failures, key=lambda r: rule_for(r.error_category).priority)  # type: ignore[arg-type]
    assert worst.error_category is not None
    return worst.error_category, worst.error_message


def status_for(
    success_rate: float, executed: int, decisive: ErrorCategory | None, *, missing: int = 0
) -> CertificationStatus:
    """The verdict; `missing` counts the tests that did not run for lack of time."""
    if decisive in NOT_AVAILABLE_CATEGORIES:
        return CertificationStatus.FAILED
    if missing:
        return CertificationStatus.INCOMPLETE
    if executed == 0:
        return CertificationStatus.ERROR
    if success_rate >= CERTIFIED_MIN_SUCCESS:
        return CertificationStatus.CERTIFIED
    if success_rate >= QUALITY_WARNING_MIN_SUCCESS:
        return CertificationStatus.QUALITY_WARNING
    return CertificationStatus.FAILED


def capped_rating(
    status: CertificationStatus, rating: float, decisive: ErrorCategory | None
) -> float:
    """The rating the verdict allows: no failed run above NOT_RECOMMENDED, none UNAVAILABLE
    for availability reasons above 0."""
    if status is CertificationStatus.FAILED and decisive in NOT_AVAILABLE_CATEGORIES:
        return 0.0
    return min(rating, _RATING_CAP.get(status, rating))


def score_results(results: Sequence[ScoredTest]) -> Score:
    """Turn per-test results into the certification's verdict."""
    executed = [r for r in results if r.outcome.executed]
    missing = [r for r in results if r.outcome is TestOutcome.NOT_RUN]
    passed = [r for r in executed if r.outcome is TestOutcome.PASSED]
    failed = len(executed) - len(passed)
    latencies = [r.latency_ms for r in passed if r.latency_ms is not None]
    avg_latency = sum(latencies) / len(latencies) if latencies else None
    total_retries = sum(r.retries for r in executed)
    avg_retries = total_retries / len(executed) if executed else 0.0
    weight_run = sum(r.weight for r in executed)
    weight_passed = sum(r.weight for r in passed)
    success_rate = weight_passed / weight_run * 100 if weight_run > 0 else 0.0

    decisive = decisive_error(results)
    category = decisive[0] if decisive else None
    message = decisive[1] if decisive else None
    status = status_for(success_rate, len(executed), category, missing=len(missing))
    required_failed = [r for r in executed if r.required and r.outcome is TestOutcome.FAILED]
    if required_failed and status is not CertificationStatus.FAILED:
        first = required_failed[0]
        status = CertificationStatus.FAILED
        category = first.error_category or ErrorCategory.QUALITY_ISSUE
        message = f"required test {first.test_id} failed: {first.error_message or first.detail}"
    rating: float | None = None
    if status not in (CertificationStatus.INCOMPLETE, CertificationStatus.ERROR):
        raw = compute_rating(
            passed=len(passed),
            total=len(executed),
            avg_latency_ms=avg_latency,
            avg_retries=avg_retries,
            errors=failed,
            success_fraction=success_rate / 100,
        )
        rating = capped_rating(status, raw, category)
    if status is CertificationStatus.INCOMPLETE:
        message = (
            f"incomplete: {len(missing)} of {len(results)} tests not run "
            f"({missing[0].detail or 'no reason given'}); no verdict on the model"
        )
    return Score(
        status=status,
        score=round(rating * 20) if rating is not None else None,
        rating=rating,
        badge=badge_for(rating) if rating is not None else None,
        tests_total=len(executed),
        tests_passed=len(passed),
        tests_failed=failed,
        tests_skipped=len(results) - len(executed),
        success_rate=round(success_rate, 1),
        avg_latency_ms=round(avg_latency, 1) if avg_latency is not None else None,
        p50_latency_ms=round(median(latencies), 1) if latencies else None,
        max_latency_ms=round(max(latencies), 1) if latencies else None,
        total_retries=total_retries,
        error_category=category,
        error_severity=rule_for(category).severity if category else None,
        error_message=message,
    )


def not_started_score(message: str) -> Score:
    """The outcome of a certification that was not started (a budget kept it back)."""
    return Score(
        status=CertificationStatus.SKIPPED,
        score=None,
        rating=None,
        badge=None,
        tests_total=0,
        tests_passed=0,
        tests_failed=0,
        tests_skipped=0,
        success_rate=0.0,
        avg_latency_ms=None,
        p50_latency_ms=None,
        max_latency_ms=None,
        total_retries=0,
        error_category=None,
        error_severity=None,
        error_message=message,
    )
