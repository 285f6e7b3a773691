"""A shared throttle gate: concurrent calls to a quota-limited provider take turns
instead of failing for RATE_LIMIT."""

from __future__ import annotations

import asyncio
import time

from modelcert.certify.battery import BATTERY_BY_ID, PlannedTest
from modelcert.certify.runner import RetryPolicy, run_test
from modelcert.certify.throttle import ThrottleGate, ThrottleGates
from modelcert.domain import ErrorCategory, TestOutcome
from modelcert.providers.base import Target
from modelcert.providers.sim import SimProvider

BASIC = PlannedTest(BATTERY_BY_ID["basic-prompt"])
QUOTA = Target("quota-limited", "us-east-1", options={"quota_rps": 10, "latency_ms": 5})


async def _burst(gate: ThrottleGate | None, calls: int = 12) -> list[object]:
    provider = SimProvider()
    policy = RetryPolicy(max_retries=1, base_s=0.01, max_s=0.05, max_throttle_s=10)
    return await asyncio.gather(
        *(run_test(BASIC, provider, QUOTA, policy=policy, gate=gate) for _ in range(calls))
    )


async def test_without_a_gate_a_burst_fails_for_rate_limit() -> None:
    results = await _burst(None)
    assert any(r.error_category is ErrorCategory.RATE_LIMIT for r in results)  # type: ignore[attr-defined]


async def test_with_a_gate_the_burst_takes_turns_and_passes() -> None:
    started = time.perf_counter()
    results = await _burst(ThrottleGates().get("sim", "us-east-1"))
    elapsed = time.perf_counter() - started
    assert all(r.outcome is TestOutcome.PASSED for r in results)  # type: ignore[attr-defined]
    assert sum(r.retries for r in results) > 0  # type: ignore[attr-defined]
    assert elapsed >= (12 - 1) / 10 * 0.9  # bounded by the quota, not faster


async def test_gate_hold_never_shortens() -> None:
    now = [100.0]
    gate = ThrottleGate(clock=lambda: now[0])
    gate.hold(5)
    gate.hold(1)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    assert await gate.wait(sleep) == 5.0 and slept == [5.0]
    assert await gate.wait(sleep) == 0.0
