"""InFlight, the worker's slots: once draining, nothing new starts — what waits for a slot
is handed back (SlotReleased), what runs goes on; and a stop request drains at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modelcert.certify.engine import InFlight, SlotReleased
from modelcert.settings import Settings


async def test_draining_hands_back_what_waits_and_lets_what_runs_finish() -> None:
    slots = InFlight(limit=1)
    running = asyncio.Event()
    finish = asyncio.Event()

    async def first() -> str:
        async with slots.slot("a", 1, "r"):
            running.set()
            await finish.wait()
        return "finished"

    async def second() -> str:
        async with slots.slot("b", 2, "r"):
            return "started"  # must not happen: the stop came while it waited

    one = asyncio.create_task(first())
    await running.wait()
    two = asyncio.create_task(second())
    await asyncio.sleep(0)  # waiting for the slot now
    slots.release_waiting()
    with pytest.raises(SlotReleased):
        await two
    finish.set()
    assert await one == "finished"
    with pytest.raises(SlotReleased):  # asked for after the drain began, with a slot free
        async with slots.slot("c", 3, "r"):
            pass
    assert slots.current == {}


def test_a_stop_request_drains_before_anything_else(tmp_path: Path) -> None:
    # The chaos test found a certification given a slot while stop() was still joining
    # the dispatcher's thread: it started during the stop and was cut by the grace. The
    # signal handler itself now closes the slots.
    from modelcert.worker.main import Worker

    settings = Settings(database_url=f"sqlite:///{tmp_path}/w.db")
    worker = Worker(settings, regions=("us-east-1",), health_port=0)
    try:
        assert not worker.in_flight.draining
        worker.request_stop()
        assert worker.in_flight.draining and worker.state.shutting_down
    finally:
        worker.engine.dispose()
