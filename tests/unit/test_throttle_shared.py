"""The shared gate's logic (`certify.throttle`: take_slot, hold_quota, record_outcome,
SharedThrottleGate) on an injected clock, no sleeps: one state that several gates use
as they would through the database (`tests/integration/test_shared_pacing.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from modelcert.certify.throttle import (
    PacingRow,
    QuotaKey,
    SharedThrottleGate,
    ThrottleGate,
    ThrottleGates,
    hold_quota,
    record_outcome,
    take_slot,
)

T = TypeVar("T")
KEY = QuotaKey("sim", "us-east-1", "quota:acct")


@dataclass
class Row:
    rate: float | None = None
    hold_until: float = 0.0
    next_start: float = 0.0
    last_throttled: float = 0.0
    last_served: float = 0.0
    measuring: bool = False
    window_started: float = 0.0
    window_starts: int = 0
    window_ok: int = 0
    window_throttled: int = 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class OneState:
    """A PacingStore holding its rows in memory, on the test's clock (the store's
    clock is deliberately 5,000 s off the gates': only differences may matter)."""

    def __init__(self, clock: Clock, *, fail: bool = False) -> None:
        self.rows: dict[str, Row] = {}
        self.clock = clock
        self.fail = fail
        self.calls = 0

    def update(self, quota: str, decide: Callable[[PacingRow, float], T]) -> T:
        self.calls += 1
        if self.fail:
            raise ConnectionError("database unreachable")
        return decide(self.rows.setdefault(quota, Row()), self.clock.now + 5000.0)


async def direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def test_slots_are_spaced_by_the_shared_rate_and_hold_first() -> None:
    row = Row(rate=4.0)
    assert [take_slot(row, 10.0) for _ in range(3)] == [0.0, 0.25, 0.5]
    hold_quota(row, 10.0, 2.0)
    assert take_slot(row, 10.0) == 2.0  # nobody starts before the hold ends
    assert take_slot(row, 10.0) == 2.25
    hold_quota(row, 10.0, 1.0)  # a shorter hold never shortens the earlier one
    assert row.hold_until == 12.0


def test_an_unpaced_quota_gives_no_slot_but_honours_a_hold() -> None:
    row = Row()
    assert take_slot(row, 5.0) == 0.0 and take_slot(row, 5.0) == 0.0
    hold_quota(row, 5.0, 3.0)
    assert take_slot(row, 6.0) == 2.0


def test_one_aimd_state_measures_then_cuts_then_grows_then_forgets() -> None:
    gate = ThrottleGate()  # its parameters: window 0.5 s, ×0.8, +1/s, forget after 10 s
    row = Row()
    record_outcome(row, 0.0, False, gate)
    assert row.rate is None and not row.measuring  # no 429: nothing learnt
    record_outcome(row, 1.0, True, gate)
    assert row.measuring and row.window_started == 1.0
    for t in (1.1, 1.2, 1.3, 1.4):
        take_slot(row, t)
        record_outcome(row, t, False, gate)
    take_slot(row, 1.5)
    record_outcome(row, 1.5, False, gate)  # the window closes: 5 answered in 0.5 s
    assert row.rate == 10.0 and not row.measuring
    for t in (1.6, 1.7, 1.8, 1.9):
        take_slot(row, t)
        record_outcome(row, t, t == 1.7, gate)
    take_slot(row, 2.0)
    record_outcome(row, 2.0, False, gate)  # a window with a 429: cut from what was sent
    assert row.rate == 8.0
    for t in (2.2, 2.5):
        take_slot(row, t)
        record_outcome(row, t, False, gate)
    assert row.rate == 8.0  # clean window, 4/s sent: no more than twice what was sent
    for t in (2.6, 2.8, 3.0):
        take_slot(row, t)
        record_outcome(row, t, False, gate)
    assert row.rate == 9.0  # clean window, 6/s sent: +1/s
    record_outcome(row, 13.0, False, gate)
    assert row.rate is None  # no 429 for 10 s: pacing stops


async def test_gates_of_two_workers_take_turns_in_one_schedule() -> None:
    clock = Clock()
    store = OneState(clock)
    a = SharedThrottleGate(KEY, store, clock, run=direct)
    b = SharedThrottleGate(KEY, store, clock, run=direct)
    assert await a.wait(clock.sleep) == 0.0 and store.calls == 0  # no 429: no store cost
    a.record(throttled=True)  # a's 429 ...
    a.hold(1.0)
    await a.drain()
    assert a.shared and not b.shared
    b.record(throttled=True)  # ... and b's first 429 makes b join the shared state
    await b.drain()
    store.rows[str(KEY)].rate = 2.0  # as a closed window would have set it
    waits = [await gate.wait(clock.sleep) for gate in (a, b, a, b)]
    # One hold for both, then one start every 0.5 s whichever worker it is.
    assert waits == [1.0, 0.5, 0.5, 0.5]
    assert a.shared_rate == 2.0 and ThrottleGates().rates() == {}


async def test_an_unreachable_store_falls_back_to_local_pacing(caplog: Any) -> None:
    clock = Clock()
    store = OneState(clock, fail=True)
    gate = SharedThrottleGate(KEY, store, clock, run=direct)
    gate.record(throttled=True)
    gate.hold(2.0)
    await gate.drain()
    with caplog.at_level("WARNING", logger="modelcert.certify.throttle"):
        assert await gate.wait(clock.sleep) == 2.0  # the local hold still holds
        assert await gate.wait(clock.sleep) == 0.0
    assert gate.store_errors == 4  # record, hold, two slots: none raised
    warned = [r for r in caplog.records if "pacing locally" in r.getMessage()]
    assert len(warned) == 1  # once per 30 s, not once per call
    assert "database unreachable" in warned[0].getMessage()


def test_gates_are_shared_only_given_a_store() -> None:
    clock = Clock()
    assert type(ThrottleGates(clock).get(KEY)) is ThrottleGate
    shared = ThrottleGates(clock, shared=OneState(clock)).get(KEY)
    assert isinstance(shared, SharedThrottleGate)
