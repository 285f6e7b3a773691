"""The runner against the sim provider: retries, Retry-After, the per-test time budget,
classification."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator

import pytest

from modelcert.certify.battery import BATTERY_BY_ID, PlannedTest
from modelcert.certify.runner import RetryPolicy, run_test
from modelcert.certify.throttle import ThrottleGate
from modelcert.domain import ErrorCategory, TestOutcome
from modelcert.providers.base import ChatEvent, ChatRequest, ProviderError, Target
from modelcert.providers.sim import SimProvider

BASIC = PlannedTest(BATTERY_BY_ID["basic-prompt"])


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class FakeTime:
    """A clock that only moves when someone sleeps: budgets are checked without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.delays: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.now += seconds


class RefusingProvider:
    """Every call fails at once with the same error (a dead or throttling endpoint)."""

    kind = "refusing"
    simulated = True

    def __init__(self, error: ProviderError) -> None:
        self.error = error
        self.requests: list[ChatRequest] = []

    async def chat(self, target: Target, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        self.requests.append(request)
        raise self.error
        yield  # pragma: no cover

    async def aclose(self) -> None:
        return None


async def test_rate_limits_are_retried_honouring_retry_after() -> None:
    sleep = SleepRecorder()
    target = Target("flaky", "us-east-1", options={"error_rate_429": 1.0, "retry_after_s": 3})
    result = await run_test(
        BASIC, SimProvider(), target, policy=RetryPolicy(max_retries=3), sleep=sleep
    )
    assert result.outcome is TestOutcome.FAILED
    assert result.error_category is ErrorCategory.RATE_LIMIT
    assert (result.retries, result.attempts) == (3, 4)
    assert result.rate_limited == 4  # every answer was a 429, the last one too
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


async def test_a_hung_call_is_cancelled_and_uses_up_the_test_budget() -> None:
    started = time.perf_counter()
    provider = SimProvider()
    result = await run_test(
        BASIC,
        provider,
        Target("hangs"),
        timeout_s=0.2,
        policy=RetryPolicy(max_retries=3, base_s=0.01),
        sleep=SleepRecorder(),
    )
    elapsed = time.perf_counter() - started
    assert result.error_category is ErrorCategory.TIMEOUT
    # The timeout is the test's whole budget: no second hung attempt (a dead endpoint
    # costs one timeout per test, not 1 + max_retries of them).
    assert (result.attempts, result.retries) == (1, 0)
    assert elapsed < 2.0


async def test_the_provider_is_told_how_long_the_call_may_take() -> None:
    provider = RefusingProvider(ProviderError("nope", status=403, code="AccessDeniedException"))
    await run_test(BASIC, provider, Target("x"), timeout_s=7.0, sleep=SleepRecorder())
    assert provider.requests and provider.requests[0].timeout_s == pytest.approx(7.0, abs=0.5)


async def test_connection_failures_are_retried_within_the_budget_then_fail() -> None:
    fake = FakeTime()
    refused = ProviderError("Connection refused", code="ConnectionError")
    result = await run_test(
        BASIC,
        RefusingProvider(refused),
        Target("x"),
        timeout_s=10.0,
        policy=RetryPolicy(max_retries=10, base_s=2, max_s=16, jitter=0),
        sleep=fake.sleep,
        clock=fake.clock,
    )
    assert result.error_category is ErrorCategory.NETWORK_ERROR
    # 2 + 4 s fit in the 10 s budget, the next 8 s would not: it fails then, not later.
    assert fake.delays == [2.0, 4.0]
    assert (result.attempts, result.retries) == (3, 2)
    assert result.rate_limited == 0  # retried, but not for a rate limit


async def test_a_quota_refusing_everything_fails_within_the_test_budget() -> None:
    fake = FakeTime()
    throttled = ProviderError("Rate exceeded", status=429, retry_after=1.0)
    gate = ThrottleGate(fake.clock)
    result = await run_test(
        BASIC,
        RefusingProvider(throttled),
        Target("x"),
        timeout_s=5.0,
        policy=RetryPolicy(jitter=0, max_throttle_s=120),
        sleep=fake.sleep,
        clock=fake.clock,
        gate=gate,
    )
    assert result.error_category is ErrorCategory.RATE_LIMIT
    # Nobody is served by this quota: its 429s are the endpoint's answer, not a queue.
    assert fake.now - 1000.0 <= 5.0
    assert result.retries >= 3


async def test_taking_turns_behind_a_serving_quota_is_not_the_endpoint_failing() -> None:
    fake = FakeTime()
    throttled = ProviderError("Rate exceeded", status=429, retry_after=4.0)
    gate = ThrottleGate(fake.clock)
    gate.record(throttled=False)  # another caller was just served by this quota

    class ServedAfterAWhile(RefusingProvider):
        async def chat(
            self, target: Target, request: ChatRequest
        ) -> AsyncGenerator[ChatEvent, None]:
            if fake.now - 1000.0 < 20:
                gate.record(throttled=False)  # the quota keeps serving others
                raise throttled
            async for event in SimProvider().chat(Target("healthy-fast"), request):
                yield event

    result = await run_test(
        BASIC,
        ServedAfterAWhile(throttled),
        Target("x"),
        timeout_s=5.0,
        policy=RetryPolicy(jitter=0, max_throttle_s=120),
        sleep=fake.sleep,
        clock=fake.clock,
        gate=gate,
    )
    # 20 s of waiting its turn, four times the test's 5 s budget: still passes.
    assert result.outcome is TestOutcome.PASSED
    assert result.throttled_s >= 20
    assert result.rate_limited == result.retries == 5  # 429 at 0, 4, 8, 12, 16 s


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


@pytest.mark.parametrize("stream", [True, False])
async def test_latency_and_ttft_are_measured(stream: bool) -> None:
    target = Target("healthy-fast", options={"latency_ms": 200})
    result = await run_test(BASIC, SimProvider(), target, streaming=stream)
    assert result.outcome is TestOutcome.PASSED
    assert result.latency_ms is not None and 190 <= result.latency_ms < 1000
    assert result.ttft_ms is not None and 50 <= result.ttft_ms <= result.latency_ms
    if stream:  # streamed text starts before the answer ends; a whole answer arrives at once
        assert result.ttft_ms < result.latency_ms * 0.6
