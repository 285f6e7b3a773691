"""Real worker processes for the tests that need a process boundary (kill -9, SIGTERM,
two workers at once): the harness `modelcert up` and the benchmarks use
(`modelcert.worker.process`), with the test suite's fast settings."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from modelcert.settings import Settings
from modelcert.worker.process import WorkerProcess, free_port
from tests.support.inprocess import FAST_AVAILABILITY_GAP_S

__all__ = ["StartProcesses", "WorkerProcess", "free_port", "test_worker", "worker_processes"]

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


StartProcesses = Callable[..., list[WorkerProcess]]


@contextmanager
def worker_processes(
    settings: Settings, log_dir: Path, regions: tuple[str, ...]
) -> Iterator[StartProcesses]:
    """`start("a", "b", wait=True, **env)` starts worker processes at once and (unless
    `wait=False`) waits until each is ready. They poll the queues as often as `settings`
    say (what the test's enqueuer registered) and stop without grace unless
    MODELCERT_SHUTDOWN_GRACE_S is given; on exit every one is stopped, all at once."""
    started: list[WorkerProcess] = []

    def start(*executor_ids: str, wait: bool = True, **env: str) -> list[WorkerProcess]:
        env = {
            "MODELCERT_QUEUE_POLL_S": str(settings.queue_polling_interval_s),
            "MODELCERT_SHUTDOWN_GRACE_S": "0",
            **env,
        }
        batch = [
            test_worker(settings.database_url, executor_id, log_dir, regions=regions, env=env)
            for executor_id in executor_ids
        ]
        started.extend(batch)
        for worker in batch:
            worker.spawn()
        if wait:
            for worker in batch:
                worker.wait_ready()
        return batch

    try:
        yield start
    finally:
        for worker in started:  # all at once: their shutdowns overlap
            if worker.running() and worker.process is not None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in started:
            worker.stop()
