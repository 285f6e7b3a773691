"""The runner against the sim provider: retries, Retry-After, timeouts, classification."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from modelcert.certify.battery import BATTERY_BY_ID, PlannedTest, plan_battery
from modelcert.certify.runner import RetryPolicy, run_battery, run_test, skip_reason_after
from modelcert.domain import Capabilities, ErrorCategory, TestOutcome
from modelcert.providers.base import ChatEvent, ChatRequest, Target
from modelcert.providers.sim import SimProvider

BASIC = PlannedTest(BATTERY_BY_ID["basic-prompt"])


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def test_rate_limits_are_retried_honouring_retry_after() -> None:
    sleep = SleepRecorder()
    target = Target("flaky", "us-east-1", options={"error_rate_429": 1.0, "retry_after_s": 3})
    result = await run_test(
        BASIC, SimProvider(), target, policy=RetryPolicy(max_retries=3), sleep=sleep
    )
    assert result.outcome is TestOutcome.FAILED
    assert result.error_category is ErrorCategory.RATE_LIMIT
    assert (result.retries, result.attempts) == (3, 4)
    assert all(3.0 <= d <= 3.3 for d in sleep.delays)  # never earlier than asked
    assert result.throttled_s >= 9.0
    assert result.error_message == "Rate exceeded. (simulated)"
    assert result.http_status == 429


async def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    policy = RetryPolicy(max_retries=6, base_s=2, max_s=16, jitter=0.2)
    rng = random.Random(1)
    delays = [policy.delay(n, None, rng) for n in range(1, 7)]
    for delay, nominal in zip(delays, [2, 4, 8, 16, 16, 16], strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2


async def test_temporary_failures_recover() -> None:
    sleep = SleepRecorder()
    target = Target("flaky", "us-east-1", options={"error_rate_429": 0.3, "retry_after_s": 0.01})
    provider = SimProvider(seed=3)
    results = [await run_test(BASIC, provider, target, sleep=sleep) for _ in range(10)]
    assert all(r.outcome is TestOutcome.PASSED for r in results)
    assert sum(r.retries for r in results) > 0


async def test_permanent_errors_are_not_retried() -> None:
    sleep = SleepRecorder()
    result = await run_test(BASIC, SimProvider(), Target("access-denied"), sleep=sleep)
    assert result.error_category is ErrorCategory.PERMISSION_ERROR
    assert (result.retries, result.attempts, sleep.delays) == (0, 1, [])
    assert "don't have access" in (result.error_message or "")


async def test_timeout_really_cancels_the_call() -> None:
    started = time.perf_counter()
    result = await run_test(
        BASIC,
        SimProvider(),
        Target("hangs"),
        timeout_s=0.2,
        policy=RetryPolicy(max_retries=1, base_s=0.01),
        sleep=SleepRecorder(),
    )
    elapsed = time.perf_counter() - started
    assert result.error_category is ErrorCategory.TIMEOUT
    assert result.attempts == 2
    assert elapsed < 2.0  # two 0.2 s attempts, not a hang


class ExplodingProvider:
    """An adapter with a bug: the runner must classify it, not crash."""

    kind = "broken"
    simulated = True

    async def chat(self, target: Target, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        raise KeyError("choices")
        yield  # pragma: no cover

    async def aclose(self) -> None:
        return None


async def test_a_misbehaving_provider_is_classified_not_raised() -> None:
    result = await run_test(BASIC, ExplodingProvider(), Target("x"), sleep=SleepRecorder())
    assert result.outcome is TestOutcome.FAILED
    assert result.error_category is ErrorCategory.QUALITY_ISSUE
    assert result.error_code == "MalformedResponse"
    assert "KeyError" in (result.error_message or "")


async def test_fail_fast_after_a_not_available_error() -> None:
    plan = plan_battery("Meta", Capabilities())
    results = await run_battery(
        plan, SimProvider(), Target("bad-credentials"), sleep=SleepRecorder()
    )
    assert results[0].error_category is ErrorCategory.AUTHENTICATION_ERROR
    assert all(r.outcome is TestOutcome.SKIPPED for r in results[1:])
    assert "AUTHENTICATION_ERROR" in results[1].detail


def test_skip_reason_after_two_timeouts_in_a_row() -> None:
    from modelcert.certify.runner import TestResult

    timeout = TestResult("a", "A", TestOutcome.FAILED, error_category=ErrorCategory.TIMEOUT)
    ok = TestResult("b", "B", TestOutcome.PASSED)
    assert skip_reason_after([timeout]) is None
    assert skip_reason_after([timeout, ok]) is None
    assert "unresponsive" in (skip_reason_after([ok, timeout, timeout]) or "")


async def test_progress_callback_sees_every_test() -> None:
    seen: list[tuple[int, int, str]] = []

    def on_result(index: int, total: int, result: Any) -> None:
        seen.append((index, total, result.test_id))

    plan = plan_battery("Meta", Capabilities())[:3]
    await run_battery(plan, SimProvider(), Target("healthy-fast"), on_result=on_result)
    assert [s[0] for s in seen] == [0, 1, 2] and all(s[1] == 3 for s in seen)


@pytest.mark.parametrize("stream", [True, False])
async def test_latency_and_ttft_are_measured(stream: bool) -> None:
    target = Target("healthy-fast", options={"latency_ms": 200})
    result = await run_test(BASIC, SimProvider(), target, streaming=stream)
    assert result.outcome is TestOutcome.PASSED
    assert result.latency_ms is not None and 190 <= result.latency_ms < 1000
    assert result.ttft_ms is not None and 50 <= result.ttft_ms <= result.latency_ms
    if stream:  # streamed text starts before the answer ends; a whole answer arrives at once
        assert result.ttft_ms < result.latency_ms * 0.6
