"""Pacing shared through the database (`store.pacing.SharedPacing`), SQLite and
PostgreSQL. The rule, one SQL statement per operation, on an injected clock (the store's
`now` is the test's): slots spaced by the shared rate behind a 429's Retry-After; slow
start, one cut per window whoever sees the 429, additive increase bounded by what was
sent, forgotten after 10 s without a 429. Then gates of two "workers" (each its own
engine) taking turns in one schedule, and against a real zero-burst sim quota together
passing every test; an unreachable pacing table fails no test (the gate paces locally)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select

from modelcert.certify.battery import BATTERY_BY_ID, PlannedTest
from modelcert.certify.runner import RetryPolicy, run_test
from modelcert.certify.throttle import QuotaKey, SharedThrottleGate, ThrottleGates
from modelcert.domain import TestOutcome
from modelcert.providers.base import Target
from modelcert.providers.sim import SimProvider
from modelcert.store import db
from modelcert.store.pacing import QuotaPacing, SharedPacing

Q = "sim/us-east-1/quota:acct"

BASIC = PlannedTest(BATTERY_BY_ID["basic-prompt"])
KEY = QuotaKey("sim", "us-east-1", "quota:acct")
# 20 calls/s and no burst: one call at a time, every 50 ms.
QUOTA = Target(
    "quota-limited", "us-east-1", options={"quota_rps": 20, "quota_burst": 1, "latency_ms": 5}
)
# The production retry count (3), short backoffs.
POLICY = RetryPolicy(max_retries=3, base_s=0.01, max_s=0.05, max_throttle_s=30)


async def _workers(url: str, workers: int = 2, calls_each: int = 10) -> list[SharedThrottleGate]:
    provider = SimProvider()  # one quota for both "workers"
    engines = [db.make_engine(url) for _ in range(workers)]
    gates = []
    for engine in engines:
        gate = ThrottleGates(shared=SharedPacing(engine)).get(KEY)
        assert isinstance(gate, SharedThrottleGate)
        gates.append(gate)
    try:
        results = await asyncio.gather(
            *(
                run_test(BASIC, provider, QUOTA, policy=POLICY, gate=gate)
                for gate in gates
                for _ in range(calls_each)
            )
        )
        for gate in gates:
            await gate.drain()
    finally:
        for engine in engines:
            engine.dispose()
    failed = [
        (r.error_category, r.error_message) for r in results if r.outcome is not TestOutcome.PASSED
    ]
    assert failed == []
    return gates


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def direct(call: Callable[..., Any], *args: Any) -> Any:
    return call(*args)


def test_slots_are_spaced_by_the_shared_rate_behind_a_retry_after(engine: Engine) -> None:
    clock = Clock()
    store = SharedPacing(engine, clock=clock)  # slots granted up to 0.25 s ahead
    first = store.slot(Q)
    assert (first.granted, first.wait_s, first.rate) == (True, 0.0, None)  # unpaced: go
    store.throttled(Q, retry_after_s=0.5)  # the first 429: not paced yet, but held
    assert round(store.slot(Q).wait_s, 6) == 0.5
    clock.now += 0.5
    store.served(Q, answered=8)  # the measuring window: 8 answered in 0.5 s
    assert store.rate(Q) == pytest.approx(16.0)
    waits = [store.slot(Q) for _ in range(6)]
    assert [(s.granted, round(s.wait_s, 6)) for s in waits] == [
        (True, 0.0),
        (True, 0.0625),
        (True, 0.125),
        (True, 0.1875),
        (True, 0.25),
        (False, 0.0625),  # 0.3125 s ahead: not granted; ask again in 0.0625 s
    ]
    store.throttled(Q, retry_after_s=0.6)  # a 429 pushes the schedule behind its Retry-After
    pushed = store.slot(Q)
    assert (pushed.granted, round(pushed.wait_s, 6)) == (False, 0.35)  # 0.6 - 0.25 ahead
    assert store.rate(Q) == pytest.approx(16.0)  # no cut within the window just measured
    clock.now += 10.0
    slot = store.slot(Q)
    assert slot.granted and slot.wait_s == 0.0  # the schedule is behind: go now


def test_the_shared_rate_is_measured_probed_cut_once_per_window_grown_and_forgotten(
    engine: Engine,
) -> None:
    clock = Clock()  # the rule: window 0.5 s, ×0.8, +1/s, forget after 10 s
    store = SharedPacing(engine, clock=clock)
    store.served(Q, answered=5)
    assert store.rate(Q) is None  # no 429: nothing to learn

    def send(starts: int, over_s: float) -> None:
        for _ in range(starts):
            assert store.slot(Q).granted
            clock.now += over_s / starts
        clock.now += 1e-6  # (a window is over once its 0.5 s have passed)

    store.throttled(Q, retry_after_s=0.0)  # measuring: what do the workers get answered?
    store.served(Q, answered=4)  # two workers report within the window ...
    store.throttled(Q, retry_after_s=0.0)  # (429s while measuring change nothing)
    clock.now += 0.5 + 1e-6
    store.served(Q, answered=6)  # ... and the window closes: 10 in 0.5 s
    assert store.rate(Q) == pytest.approx(20.0, rel=1e-4)
    send(10, 0.5)
    store.served(Q)
    assert store.rate(Q) == pytest.approx(40.0, rel=1e-4)  # probing: doubled per window
    send(6, 0.6)
    store.throttled(Q, retry_after_s=0.0)  # a 429 a window on: cut from what was sent
    assert store.rate(Q) == pytest.approx(min(40.0, 6 / 0.6) * 0.8, rel=1e-4)  # 8
    store.throttled(Q, retry_after_s=0.0)  # another worker's 429, same window
    store.throttled(Q, retry_after_s=0.0)
    assert store.rate(Q) == pytest.approx(8.0, rel=1e-4)  # one cut per window, whoever saw it
    send(4, 0.5)
    store.served(Q)
    assert store.rate(Q) == pytest.approx(9.0, rel=1e-4)  # a clean window after a cut: +1/s
    send(2, 0.6)
    store.served(Q)
    assert store.rate(Q) == pytest.approx(9.0, rel=1e-4)  # 3.3/s sent: no more than 2 × 4.5
    clock.now += 10.0
    store.served(Q)
    assert store.rate(Q) is None  # no 429 for 10 s: pacing stops
    store.throttled(Q, retry_after_s=0.0)
    clock.now += 0.5 + 1e-6
    store.served(Q, answered=3)
    assert store.rate(Q) == pytest.approx(6.0, rel=1e-4)  # and is measured again


async def test_gates_of_two_workers_take_turns_in_one_schedule(
    engine: Engine, database_url: str
) -> None:
    clock = Clock()
    engines = [db.make_engine(database_url) for _ in range(2)]
    try:
        a, b = (
            SharedThrottleGate(KEY, SharedPacing(engine, clock=clock), clock, run=direct)
            for engine in engines
        )
        assert await a.wait(clock.sleep) == 0.0 and not a.shared  # no 429: no store call
        a.record(throttled=True)  # a's 429 ...
        a.hold(1.0)
        await a.drain()
        assert a.shared and not b.shared
        b.record(throttled=True)  # ... and b's first 429 makes b draw on the shared state
        assert b.shared
        clock.now += 0.5
        # The measuring window closes: 4 answered in 0.5 s (as a served() report says).
        SharedPacing(engines[0], clock=clock).served(str(KEY), answered=4)
        waits = [await gate.wait(clock.sleep) for gate in (a, b, a, b, a)]
        # The hold (till 1 s after the 429) for both, then paced at 8/s, whichever
        # worker it is.
        assert [round(w, 6) for w in waits] == [0.5, 0.125, 0.125, 0.125, 0.125]
        assert a.shared_rate == b.shared_rate == pytest.approx(8.0)
        assert a.store_errors == b.store_errors == 0
    finally:
        for engine in engines:
            engine.dispose()


def test_gates_are_shared_only_given_a_store(engine: Engine) -> None:
    assert type(ThrottleGates().get(KEY)) is not SharedThrottleGate
    gates = ThrottleGates(shared=SharedPacing(engine))
    assert isinstance(gates.get(KEY), SharedThrottleGate)
    gates.close()


async def test_two_workers_share_one_pacing_state(engine: Engine, database_url: str) -> None:
    gates = await _workers(database_url)
    assert all(g.shared for g in gates)  # both met a 429 and paced through the database
    assert all(g.store_errors == 0 for g in gates)
    with db.make_session_factory(engine)() as session:
        rows = session.scalars(select(QuotaPacing)).all()
    assert [row.quota for row in rows] == [str(KEY)]  # one state for the quota
    assert rows[0].last_throttled > 0


async def test_unreachable_pacing_table_fails_no_test(
    engine: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db.downgrade(engine, "0005")  # the table is gone: every pacing statement fails
    # One worker: its local gate takes over (as every gate paced before it was shared).
    with caplog.at_level(logging.WARNING, logger="modelcert.certify.throttle"):
        gates = await _workers(database_url, workers=1, calls_each=12)
    assert all(g.store_errors > 0 for g in gates)
    warned = [r for r in caplog.records if "pacing locally" in r.getMessage()]
    assert len(warned) == 1  # once per 30 s, not once per call
