"""The durable path inside the test process: a real `Worker` (DBOS launched here, the
same engine, workflow and store a `modelcert worker` process runs), drained instead of
waited for. Subprocess workers (tests/support/workers.py) are kept for what needs a
process boundary: kill -9, SIGTERM, two workers at once, the CLI.

DBOS is one runtime per process: start at most one in-process worker at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from modelcert.certify.engine import CertificationEngine, CertificationOutcome, CertificationRequest
from modelcert.settings import Settings
from modelcert.store.db import make_session_factory
from modelcert.store.runs import RunStore
from modelcert.worker.main import Worker

# The pause inside the `availability` test: 2 s in production, next to nothing here.
FAST_AVAILABILITY_GAP_S = 0.01


def fast_settings(database_url: str, **changes: Any) -> Settings:
    """Settings for tests: short retries and availability gap, a quick queue poll."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "retry_base_ms": 10,
        "retry_max_ms": 100,
        "availability_gap_s": FAST_AVAILABILITY_GAP_S,
        "queue_polling_interval_s": 0.05,
        **changes,
    }
    return Settings(**values)


StartWorker = Callable[..., Worker]


@contextmanager
def in_process_workers(settings: Settings) -> Iterator[StartWorker]:
    """`start(regions=..., executor_id=..., **setting_changes)` starts a worker here;
    every worker started is stopped (without grace) on exit."""
    started: list[Worker] = []

    def start(
        *, regions: Sequence[str] = (), executor_id: str = "in-process", **changes: Any
    ) -> Worker:
        worker_settings = settings.model_copy(update=changes) if changes else settings
        worker = Worker(worker_settings, regions=regions, executor_id=executor_id, health_port=0)
        worker.start()
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop(grace_s=0)


async def certify_here(
    settings: Settings, deployment: str | int, region: str, **engine_options: Any
) -> CertificationOutcome:
    """One certification by the engine in this process, as `modelcert certify` runs it."""
    from modelcert.store.db import make_engine

    database = make_engine(settings.database_url)
    engine = CertificationEngine(
        RunStore(make_session_factory(database)), settings, **engine_options
    )
    try:
        return await engine.certify(CertificationRequest(deployment, region))
    finally:
        await engine.aclose()
        database.dispose()
