"""Real worker processes for the tests that need a process boundary (kill -9, SIGTERM,
two workers at once): the harness `modelcert up` and the benchmarks use
(`modelcert.worker.process`), with the test suite's fast settings."""

from __future__ import annotations

from pathlib import Path

from modelcert.worker.process import WorkerProcess, free_port
from tests.support.inprocess import FAST_AVAILABILITY_GAP_S

__all__ = ["WorkerProcess", "free_port", "test_worker"]

# What every test worker process reads from its environment (the tests' own Settings must
# agree where they enqueue: the enqueuer re-registers each region queue).
TEST_WORKER_ENV = {
    "MODELCERT_QUEUE_POLL_S": "0.1",
    "MODELCERT_LOG_JSON": "1",
    "MODELCERT_SHUTDOWN_GRACE_S": "30",
    "MODELCERT_AVAILABILITY_GAP_S": str(FAST_AVAILABILITY_GAP_S),
    "MODELCERT_RETRY_BASE_MS": "10",
    "MODELCERT_RETRY_MAX_MS": "100",
}


def test_worker(
    database_url: str,
    executor_id: str,
    log_dir: Path,
    *,
    regions: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> WorkerProcess:
    """A worker subprocess (not started) logging to `log_dir/<executor_id>.log`."""
    return WorkerProcess(
        database_url,
        executor_id,
        log_path=log_dir / f"{executor_id}.log",
        regions=regions,
        env={**TEST_WORKER_ENV, **(env or {})},
    )


test_worker.__test__ = False  # type: ignore[attr-defined]  # a factory, not a pytest test
