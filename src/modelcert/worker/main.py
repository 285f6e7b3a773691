"""`modelcert worker`: a dedicated process that runs certifications from the region
queues it serves, reports its health, and shuts down gracefully on SIGTERM / SIGINT."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType

from dbos import DBOS
from sqlalchemy import Engine

from modelcert.domain import DEFAULT_REGIONS
from modelcert.jobs.control import region_queue_options
from modelcert.jobs.engine import dbos_config, default_executor_id, queue_name
from modelcert.jobs.reaper import mark_stopped, reap, write_heartbeat
from modelcert.jobs.runtime import WorkerRuntime, configure_runtime
from modelcert.jobs.stats import queue_counts
from modelcert.obs import metrics
from modelcert.obs.logging import configure_logging, log_event
from modelcert.settings import Settings
from modelcert.store import db, repo
from modelcert.store.db import transaction
from modelcert.worker.health import HealthServer, WorkerState, database_check

HEARTBEAT_INTERVAL_S = 2.0
QUEUE_COUNTS_INTERVAL_S = 10.0


def served_regions(engine: Engine, requested: Sequence[str]) -> tuple[str, ...]:
    """The requested regions, or every region a catalog provider serves (plus the defaults)."""
    if requested:
        return tuple(dict.fromkeys(requested))
    factory = db.make_session_factory(engine)
    with transaction(factory) as session:
        regions = {r for d in repo.list_deployments(session) for r in d.provider.regions}
    return tuple(sorted(regions | set(DEFAULT_REGIONS)))


class Worker:
    """One worker process: DBOS executor + health server + heartbeat."""

    def __init__(
        self,
        settings: Settings,
        *,
        regions: Sequence[str] = (),
        executor_id: str | None = None,
        health_port: int | None = None,
    ) -> None:
        self.settings = settings
        self.engine = db.make_engine(settings.database_url)
        db.upgrade(self.engine)
        self.regions = served_regions(self.engine, regions)
        self.executor_id = executor_id or settings.executor_id or default_executor_id()
        self.runtime = WorkerRuntime(
            factory=db.make_session_factory(self.engine),
            settings=settings,
            executor_id=self.executor_id,
        )
        self.state = WorkerState(
            executor_id=self.executor_id,
            regions=self.regions,
            concurrency=settings.certification_concurrency,
            started_at=time.time(),
            last_heartbeat=None,
            last_queue_poll=None,
            in_flight=self.runtime.in_flight,
            pacing=self.runtime.gates.rates,
        )
        self.health = HealthServer(
            self.state,
            database_check(self.engine),
            host=settings.worker_health_host,
            port=settings.worker_health_port if health_port is None else health_port,
        )
        self._stop = threading.Event()

    def _queue_names(self) -> list[str]:
        return [queue_name(self.settings, region) for region in self.regions]

    def start(self) -> None:
        configure_runtime(self.runtime)
        import modelcert.jobs.workflows  # noqa: F401  (registers the workflow with DBOS)
        from modelcert.jobs.schedule import install_schedule  # registers the tick workflow

        DBOS(config=dbos_config(self.settings, self.engine, self.executor_id))  # type: ignore[arg-type]
        DBOS.listen_queues(self._queue_names())
        DBOS.launch()  # also resumes this executor's unfinished workflows
        for region in self.regions:
            # A paused region stays paused across restarts (modelcert.jobs.control).
            options = region_queue_options(self.engine, self.settings, region)
            DBOS.register_queue(
                queue_name(self.settings, region), on_conflict="always_update", **options
            )
        install_schedule(self.engine, self.settings)
        self.health.start()
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        metrics.set_worker_up()
        log_event(
            "worker_started",
            executor_id=self.executor_id,
            regions=list(self.regions),
            concurrency=self.settings.certification_concurrency,
            health_port=self.health.port,
        )

    def _heartbeat_loop(self) -> None:
        queues = {f"queue-worker-{name}" for name in self._queue_names()}
        factory = self.runtime.factory
        last_reap = 0.0
        last_counts = 0.0
        while not self._stop.is_set():
            try:
                with transaction(factory) as session:
                    write_heartbeat(
                        session,
                        self.executor_id,
                        self.regions,
                        self.settings.certification_concurrency,
                        len(self.runtime.in_flight),
                    )
                self.state.last_heartbeat = time.time()
            except Exception as exc:  # the database is down: /health will say so
                log_event("error", where="heartbeat", error=f"{type(exc).__name__}: {exc}")
            alive = {t.name for t in threading.enumerate() if t.is_alive()}
            if queues <= alive:
                self.state.last_queue_poll = time.time()
            if time.monotonic() - last_counts >= QUEUE_COUNTS_INTERVAL_S:
                last_counts = time.monotonic()
                self._publish_queue_counts()
            if time.monotonic() - last_reap >= self.settings.worker_dead_after_s / 4:
                last_reap = time.monotonic()
                try:
                    reap(factory, self.executor_id, self.settings.worker_dead_after_s)
                except Exception as exc:
                    log_event("error", where="reaper", error=f"{type(exc).__name__}: {exc}")
            self._stop.wait(HEARTBEAT_INTERVAL_S)

    def _publish_queue_counts(self) -> None:
        """`modelcert_queue_jobs{region,state}`: the same queue-wide numbers on every worker."""
        try:
            with transaction(self.runtime.factory) as session:
                metrics.set_queue_counts(queue_counts(session, self.settings))
        except Exception as exc:
            log_event("error", where="queue counts", error=f"{type(exc).__name__}: {exc}")

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        self.state.shutting_down = True
        self._stop.set()

    def run_forever(self) -> None:
        """Start, then block until SIGTERM / SIGINT; finish in-flight work within the grace."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        self._stop.wait()
        log_event(
            "worker_stopping",
            executor_id=self.executor_id,
            in_flight=len(self.runtime.in_flight),
            grace_s=self.settings.shutdown_grace_s,
        )
        # DBOS stops dequeuing and waits for running workflows up to the grace period;
        # whatever is still unfinished resumes when this executor id starts again.
        DBOS.destroy(workflow_completion_timeout_sec=int(self.settings.shutdown_grace_s))
        unfinished = len(self.runtime.in_flight)
        with transaction(self.runtime.factory) as session:
            # A clean stop is not a death: the reaper leaves this executor's work alone
            # (whatever did not finish in the grace period resumes when it restarts).
            mark_stopped(session, self.executor_id, f"stopped; {unfinished} unfinished")
        self.health.stop()
        log_event("worker_stopped", executor_id=self.executor_id)


def run_worker(
    settings: Settings,
    *,
    regions: Sequence[str] = (),
    executor_id: str | None = None,
    health_port: int | None = None,
) -> None:
    configure_logging(json_lines=settings.log_json, level=settings.log_level)
    Worker(
        settings, regions=regions, executor_id=executor_id, health_port=health_port
    ).run_forever()
