"""Pacing shared through the database (`store.pacing.SharedPacing`), SQLite and
PostgreSQL: two gates, each on its own engine and sessions as two workers would be, draw
on one zero-burst quota and together pass every test (none failed for RATE_LIMIT); the
state they share is one row; an unreachable pacing table fails no test
(the gate paces locally)."""

from __future__ import annotations

import asyncio
import logging

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
    assert any("pacing locally" in r.getMessage() for r in caplog.records)
