"""A shared throttle gate: concurrent calls to a quota-limited provider take turns
instead of failing for RATE_LIMIT."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelcert.certify.battery import BATTERY_BY_ID, PlannedTest
from modelcert.certify.runner import RetryPolicy, run_test
from modelcert.certify.throttle import QuotaKey, ThrottleGate, ThrottleGates
from modelcert.domain import ErrorCategory, TestOutcome
from modelcert.providers.base import Target
from modelcert.providers.sim import SimProvider

BASIC = PlannedTest(BATTERY_BY_ID["basic-prompt"])
# A strict quota (no burst): every call must wait its turn.
QUOTA = Target(
    "quota-limited", "us-east-1", options={"quota_rps": 10, "quota_burst": 1, "latency_ms": 5}
)


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
    results = await _burst(ThrottleGates().get(QuotaKey("sim", "us-east-1", "quota-limited")))
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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def _attempts(gate: ThrottleGate, clock: FakeClock, outcomes: str, every_s: float) -> None:
    """Let one attempt through the gate per character ("x": 429, ".": answered)."""
    for outcome in outcomes:
        await gate.wait(clock.sleep)
        clock.now += every_s
        gate.record(throttled=outcome == "x")


async def test_pacing_starts_after_a_429_at_the_rate_the_quota_served() -> None:
    clock = FakeClock()
    gate = ThrottleGate(clock=clock)
    await _attempts(gate, clock, "....", 0.05)
    assert gate.rate is None  # no 429 yet: not paced
    await _attempts(gate, clock, "x" + "." * 11, 0.05)  # 11 answered in the 0.55 s after it
    assert gate.rate == pytest.approx(20, rel=0.01)


async def test_aimd_cuts_after_a_window_with_429s_and_grows_after_one_without() -> None:
    clock = FakeClock()
    gate = ThrottleGate(clock=clock)
    await _attempts(gate, clock, "x" + "." * 11, 0.05)
    rate = gate.rate
    assert rate is not None
    await _attempts(gate, clock, "....x....x..", 1 / rate)  # a window with 429s: cut by 0.8
    assert gate.rate == pytest.approx(rate * 0.8, rel=0.05)
    cut = gate.rate
    await _attempts(gate, clock, "." * 10, 1 / cut)  # a window without: one more call/s
    assert gate.rate == pytest.approx(cut + 1, rel=0.05)


async def test_paced_starts_are_spaced_and_after_a_hold_the_first_in_line_goes_at_its_end() -> None:
    clock = FakeClock()
    gate = ThrottleGate(clock=clock)
    await _attempts(gate, clock, "x" + "." * 5, 0.1)  # paced at 10 calls/s
    assert gate.rate == pytest.approx(10, rel=0.01)
    began = clock.now
    await gate.wait(clock.sleep)
    await gate.wait(clock.sleep)
    assert clock.now - began == pytest.approx(0.1)  # spaced by 1 / rate
    gate.hold(0.03)
    held = clock.now
    await gate.wait(clock.sleep)
    assert clock.now - held == pytest.approx(0.03)  # the hold, not the spacing, decides


async def test_pacing_stops_once_the_429s_have_stopped() -> None:
    clock = FakeClock()
    gate = ThrottleGate(clock=clock, forget_after_s=10)
    await _attempts(gate, clock, "x" + "." * 11, 0.05)
    assert gate.rate is not None
    clock.now += 11
    await _attempts(gate, clock, ".", 0.05)
    assert gate.rate is None


async def test_two_gates_sharing_one_quota_each_get_a_fair_part() -> None:
    """Two worker processes (two gates) calling one provider's 40 calls/s quota: both
    keep getting answers; neither is starved by the other's pacing."""
    provider = SimProvider()
    target = Target("healthy-fast", "us-east-1", options={"quota_rps": 40, "latency_ms": 20})
    gates = [ThrottleGate(), ThrottleGate()]
    served = [0, 0]
    deadline = time.monotonic() + 4.0

    async def caller(index: int) -> None:
        while time.monotonic() < deadline:
            result = await run_test(BASIC, provider, target, gate=gates[index])
            assert result.outcome is TestOutcome.PASSED, result.detail
            served[index] += 1

    await asyncio.gather(*(caller(i) for i in (0, 1) for _ in range(10)))
    assert min(served) >= 0.3 * sum(served), served
    assert all(gate.rate is not None for gate in gates)  # both learnt to pace


def test_gates_are_per_quota_not_per_provider() -> None:
    gates = ThrottleGates()
    east_a = gates.get(QuotaKey("bedrock", "us-east-1", "model-a"))
    assert gates.get(QuotaKey("bedrock", "us-east-1", "model-a")) is east_a
    assert gates.get(QuotaKey("bedrock", "us-east-1", "model-b")) is not east_a
    assert gates.get(QuotaKey("bedrock", "eu-west-1", "model-a")) is not east_a


def test_a_gate_knows_whether_its_quota_is_serving() -> None:
    now = [0.0]
    gate = ThrottleGate(clock=lambda: now[0])
    assert not gate.serving(within_s=30)  # nothing answered yet
    gate.record(throttled=True)
    assert not gate.serving(within_s=30)
    gate.record(throttled=False)
    now[0] = 29.0
    assert gate.serving(within_s=30)
    now[0] = 31.0
    assert not gate.serving(within_s=30)
