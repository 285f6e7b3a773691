"""`modelcert worker`: runs certifications from the region queues it serves, reports its
health, and shuts down gracefully on SIGTERM / SIGINT.

The worker wires everything a certification needs, explicitly: the store, the engine
(with its provider pool, throttle gates, in-flight registry and timing), the DBOS
adapter that makes the engine durable (`CertificationWorkflow`), the re-certification
duty (`RecertifyScheduler`) and notification deliveries (`NotificationDelivery`; the
store tells a `Notifier` of verdicts and finished jobs), then launches DBOS. The same
class runs inside a test process (`Worker.drain()` waits until the queue is empty), as
arq's burst mode does.

Started while the database is unreachable, it serves its health endpoints (not ready,
with the reason) and starts for real when the database answers. Stopping drains: it
stops claiming and reports not ready at once, hands back what it had claimed but not
started, keeps its heartbeat while in-flight certifications finish within the grace,
then hands back what is left (another worker resumes each at its last completed test).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType, TracebackType

from dbos import DBOS
from sqlalchemy import Engine, text

from modelcert.certify.engine import CertificationEngine, InFlight, Timing
from modelcert.certify.throttle import ThrottleGates
from modelcert.domain import DEFAULT_REGIONS
from modelcert.errors import StoreUnavailable
from modelcert.jobs.control import region_queue_options
from modelcert.jobs.dispatch import Dispatcher
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.notify import DELIVERY_WORKFLOW, NOTIFY_QUEUE, NotificationDelivery
from modelcert.jobs.notify_events import Notifier
from modelcert.jobs.queue_stats import queue_counts
from modelcert.jobs.queues import (
    DBOS_BACKGROUND_POLL_S,
    SCHEDULE_QUEUE,
    WORKFLOW_NAME,
    calm_dbos_background,
    dbos_config,
    dbos_table,
    default_executor_id,
    forget_instances,
    queue_name,
    release_unfinished,
)
from modelcert.jobs.reaper import SilenceWatch, mark_stopped, reap, write_heartbeat
from modelcert.jobs.schedule import TICK_WORKFLOW_NAME, RecertifyScheduler, install_schedule
from modelcert.jobs.workflows import CertificationWorkflow, adopt_legacy_certifications
from modelcert.obs import metrics
from modelcert.obs.logging import configure_logging, log_event
from modelcert.settings import Settings
from modelcert.store import db, repo
from modelcert.store.db import transaction
from modelcert.store.outage import is_database_unavailable, wait_out_outage
from modelcert.store.pacing import SharedPacing
from modelcert.store.runs import RunStore
from modelcert.worker.health import HealthServer, WorkerState, database_check

HEARTBEAT_INTERVAL_S = 2.0
QUEUE_COUNTS_INTERVAL_S = 10.0
# The reaper watches a silence over at least this many heartbeat intervals, whatever
# MODELCERT_WORKER_DEAD_AFTER_S says: one late beat is not a death.
MIN_SILENT_BEATS = 2.5
# How often the main thread looks for a stop request: a signal delivered to another
# thread does not wake a main thread blocked on a lock, only one that polls.
SIGNAL_POLL_S = 0.2
# Notification deliveries a worker sends at once (each waits on a receiver, not a model).
NOTIFY_CONCURRENCY = 4


def served_regions(engine: Engine, requested: Sequence[str]) -> tuple[str, ...]:
    """The requested regions, or every region a catalog provider serves (plus the defaults)."""
    if requested:
        return tuple(dict.fromkeys(requested))
    factory = db.make_session_factory(engine)
    with transaction(factory) as session:
        regions = {r for d in repo.list_deployments(session) for r in d.provider.regions}
    return tuple(sorted(regions | set(DEFAULT_REGIONS)))


class Worker:
    """One worker: DBOS executor + health server + heartbeat (+ reaper when elected)."""

    def __init__(
        self,
        settings: Settings,
        *,
        regions: Sequence[str] = (),
        executor_id: str | None = None,
        health_port: int | None = None,
        timing: Timing | None = None,
    ) -> None:
        self.settings = settings
        # No ping before each checkout (SQLAlchemy's pool_pre_ping: a round trip per
        # transaction, 8 % of a busy worker's samples): every write here retries on a
        # lost connection (RunStore.retrying, DBOS's own retries), and a disconnect
        # invalidates the whole pool, so a restarted database costs one retry, not a ping
        # per transaction for ever.
        self.engine = db.make_engine(settings.database_url, pool_pre_ping=False)
        self.factory = db.make_session_factory(self.engine)
        self.requested_regions = tuple(regions)
        self.regions = tuple(dict.fromkeys(regions))  # all served ones once connected
        self.executor_id = executor_id or settings.executor_id or default_executor_id()
        self.in_flight = InFlight(limit=settings.certification_concurrency)
        self.store = RunStore(self.factory)  # waits out database blips until stop()
        # Pacing shared with the other workers through this database (store.pacing).
        self.gates = ThrottleGates(
            shared=SharedPacing(self.engine) if settings.shared_pacing else None
        )
        self.certifier = CertificationEngine(
            self.store,
            settings,
            gates=self.gates,
            in_flight=self.in_flight,
            timing=timing,
            executor_id=self.executor_id,
        )
        self.state = WorkerState(
            executor_id=self.executor_id,
            regions=self.regions,
            concurrency=settings.certification_concurrency,
            started_at=time.time(),
            last_heartbeat=None,
            last_queue_poll=None,
            in_flight=self.in_flight.current,
            pacing=self.certifier.gates.rates,
        )
        self.health = HealthServer(
            self.state,
            database_check(self.engine),
            host=settings.worker_health_host,
            port=settings.worker_health_port if health_port is None else health_port,
        )
        self.dead_after_s = max(
            settings.worker_dead_after_s, MIN_SILENT_BEATS * HEARTBEAT_INTERVAL_S
        )
        self.watch = SilenceWatch()
        self._stop_requested = threading.Event()  # a signal or stop(): drain now
        self._heartbeat_stop = threading.Event()  # the drain is over
        self._enqueuer: Enqueuer | None = None
        self._instances: tuple[object, ...] = ()
        self._heartbeat: threading.Thread | None = None
        self._dispatcher: Dispatcher | None = None
        self._launched = False

    def _queue_names(self) -> list[str]:
        return [queue_name(self.settings, region) for region in self.regions]

    def _connect(self) -> bool:
        """Migrate and find the regions, waiting while the database is unreachable (the
        health server says why meanwhile); False when a stop came first."""
        waited: list[BaseException] = []

        def connect() -> None:
            db.upgrade(self.engine)
            self.regions = served_regions(self.engine, self.requested_regions)
            self.state.regions = self.regions

        def waiting(exc: BaseException) -> None:
            waited.append(exc)
            log_event(
                "waiting_for_database",
                executor_id=self.executor_id,
                error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            )

        try:
            wait_out_outage(
                connect, stop=self._stop_requested, first_s=0.2, on_first_outage=waiting
            )
        except StoreUnavailable:
            return False
        if waited:
            log_event("database_back", executor_id=self.executor_id)
        return True

    def start(self) -> bool:
        """Serve health, wait for the database, launch DBOS (which resumes this executor's
        unfinished work), then take work. False when stopped before it could start."""
        self.health.start()
        if not self._connect():
            return False
        adopted = adopt_legacy_certifications(self.engine)
        if adopted:
            log_event("legacy_certifications_adopted", count=adopted)
        self._enqueuer = Enqueuer(self.engine, self.settings)
        # Verdict changes and finished jobs are noticed where they are stored.
        self.store.notifier = Notifier(self._enqueuer.client)
        DBOS(config=dbos_config(self.settings, self.engine, self.executor_id))  # type: ignore[arg-type]
        # Configured instances are registered before the launch, so that recovery finds them.
        self._instances = (
            CertificationWorkflow(self.certifier, self.store, self.engine),
            RecertifyScheduler(self.factory, self.settings, self._enqueuer, self.executor_id),
            NotificationDelivery(self.factory, self.settings),
        )
        # DBOS polls the schedule's queue; the region queues are this worker's
        # dispatcher's (one thread for all, claiming no more than the worker can start).
        DBOS.listen_queues([SCHEDULE_QUEUE, NOTIFY_QUEUE])
        calm_dbos_background()
        DBOS.launch()
        self._launched = True
        for region in self.regions:
            # A paused region stays paused across restarts (modelcert.jobs.control).
            options = region_queue_options(self.engine, self.settings, region)
            DBOS.register_queue(
                queue_name(self.settings, region), on_conflict="always_update", **options
            )
        DBOS.register_queue(
            SCHEDULE_QUEUE,
            global_concurrency=1,
            polling_interval_sec=DBOS_BACKGROUND_POLL_S,
            on_conflict="always_update",
        )
        DBOS.register_queue(
            NOTIFY_QUEUE,
            worker_concurrency=NOTIFY_CONCURRENCY,
            polling_interval_sec=self.settings.queue_polling_interval_s,
            on_conflict="always_update",
        )
        install_schedule(self.settings)
        self._dispatcher = Dispatcher(
            self.engine,
            self._queue_names(),
            self.executor_id,
            capacity=self.settings.certification_concurrency + self.settings.worker_prefetch,
            poll_s=self.settings.queue_polling_interval_s,
        )
        self._dispatcher.start()
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="heartbeat", daemon=True
        )
        self._heartbeat.start()
        metrics.set_worker_up()
        log_event(
            "worker_started",
            executor_id=self.executor_id,
            regions=list(self.regions),
            concurrency=self.settings.certification_concurrency,
            health_port=self.health.port,
        )
        return True

    def stop(self, grace_s: float | None = None) -> None:
        """Drain: stop claiming and report not ready at once; what was claimed but not
        started goes back to the queue; in-flight work gets `grace_s` (SHUTDOWN_GRACE_S)
        to finish, heartbeats going on; then whatever is left goes back to the queue too
        (another worker resumes it at its last completed test)."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        self.state.shutting_down = True
        self._stop_requested.set()
        log_event(
            "worker_stopping",
            executor_id=self.executor_id,
            in_flight=len(self.in_flight),
            grace_s=grace,
        )
        unfinished: list[str] = []
        # Nothing new starts from here: first, before the dispatcher's thread is joined (a
        # claimed certification given a slot meanwhile started during a stop, ran into
        # the grace and had its test in flight paid twice; found by the chaos test).
        self.in_flight.release_waiting()
        if self._dispatcher is not None:
            self._dispatcher.stop()  # claims nothing more
        if self._launched:
            # Once draining, nothing new starts: what runs now is all that may be left
            # unfinished (DBOS's teardown cancels it, emptying the registry).
            unfinished = list(self.in_flight.current)
            # Stops the queue threads at once, then waits for running workflows.
            DBOS.destroy(workflow_completion_timeout_sec=math.ceil(grace))
            forget_instances(*self._instances)
            self._launched = False
        self.store.close()  # writes still waiting for the database give up
        self._heartbeat_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=HEARTBEAT_INTERVAL_S + 5)
        try:
            with transaction(self.factory) as session:
                handed_back = release_unfinished(session.connection(), unfinished, self.executor_id)
                # A clean stop is not a death: the reaper leaves this executor alone.
                mark_stopped(
                    session,
                    self.executor_id,
                    f"stopped; {handed_back} unfinished handed back to the queue",
                )
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            # Unreachable: the reaper hands them back once it sees this worker silent.
            log_event("error", where="stop", error=f"{type(exc).__name__}: database unavailable")
        if self._enqueuer is not None:
            self._enqueuer.close()
        self.health.stop()
        self.gates.close()
        self.engine.dispose()
        log_event("worker_stopped", executor_id=self.executor_id)

    def __enter__(self) -> Worker:
        if not self.start():
            raise RuntimeError(f"worker {self.executor_id} was stopped before it started")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(grace_s=0 if exc is not None else None)

    def pending_work(self) -> int:
        """Certifications (re-certification runs, notification deliveries) queued or
        running, in the database."""
        table = dbos_table(self.engine.dialect.name, "workflow_status")
        with self.engine.connect() as connection:
            count = connection.execute(
                text(
                    f"SELECT COUNT(*) FROM {table} WHERE name IN (:certify, :tick, :run, :notify) "
                    "AND status IN ('ENQUEUED', 'PENDING', 'DELAYED')"
                ),
                {
                    "certify": WORKFLOW_NAME,
                    "tick": TICK_WORKFLOW_NAME,
                    "run": "recertify_run",
                    "notify": DELIVERY_WORKFLOW,
                },
            ).scalar_one()
        return int(count)

    def drain(self, timeout_s: float = 120.0, poll_s: float = 0.05) -> None:
        """Block until nothing is queued or running (for tests and scripts: burst mode)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pending_work() == 0 and len(self.in_flight) == 0:
                return
            time.sleep(poll_s)
        raise TimeoutError(
            f"worker {self.executor_id}: work still pending after {timeout_s:g} s "
            f"({self.pending_work()} queued or running)"
        )

    def _heartbeat_loop(self) -> None:
        last_reap = 0.0
        last_counts = 0.0
        while not self._heartbeat_stop.is_set():
            try:
                with transaction(self.factory) as session:
                    write_heartbeat(
                        session,
                        self.executor_id,
                        self.regions,
                        self.settings.certification_concurrency,
                        len(self.in_flight),
                    )
                self.state.last_heartbeat = time.time()
            except Exception as exc:  # the database is down: /health will say so
                # What the reaper watched meanwhile cannot be trusted: watch again.
                self.watch.interrupt()
                log_event("error", where="heartbeat", error=f"{type(exc).__name__}: {exc}")
            dispatcher = self._dispatcher
            if dispatcher is not None and dispatcher.alive and not self._stop_requested.is_set():
                self.state.last_queue_poll = time.time()
            if time.monotonic() - last_counts >= QUEUE_COUNTS_INTERVAL_S:
                last_counts = time.monotonic()
                self._publish_queue_counts()
            if (
                time.monotonic() - last_reap >= self.dead_after_s / 4
                and not self._stop_requested.is_set()
            ):
                last_reap = time.monotonic()
                try:
                    reap(self.factory, self.executor_id, self.dead_after_s, self.watch)
                except Exception as exc:
                    log_event("error", where="reaper", error=f"{type(exc).__name__}: {exc}")
            self._heartbeat_stop.wait(HEARTBEAT_INTERVAL_S)

    def _publish_queue_counts(self) -> None:
        """`modelcert_queue_jobs{region,state}`: the same queue-wide numbers on every worker."""
        try:
            with transaction(self.factory) as session:
                metrics.set_queue_counts(queue_counts(session, self.settings))
        except Exception as exc:
            log_event("error", where="queue counts", error=f"{type(exc).__name__}: {exc}")

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """The signal handler: /ready turns 503 at once and nothing new starts; the main
        thread drains."""
        self.state.shutting_down = True
        self._stop_requested.set()
        self.in_flight.release_waiting()

    def run_forever(self) -> None:
        """Start, then block until SIGTERM / SIGINT; drain (see `stop`)."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        # Poll, not wait(): Python runs signal handlers in the main thread only, and a
        # signal the kernel delivered to another thread (DBOS's, the health server's)
        # does not interrupt a main thread blocked on a lock: such a SIGTERM was ignored
        # until the next wake-up, which never came.
        while not self._stop_requested.wait(SIGNAL_POLL_S):
            pass
        self.stop()


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
