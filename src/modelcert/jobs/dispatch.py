"""The worker's one dispatcher: claims certifications across every region queue it serves,
never more than it can start.

DBOS polls each queue in a thread of its own, and each thread claims up to that queue's
`worker_concurrency`: a worker serving R regions claimed R × its concurrency and ran only
its concurrency of them (the rest waited in its in-memory queue, invisible to the other
workers, and stranded if it died), while an idle worker paid R pollers' queries. Here one
thread per worker does it all:

- **Claim only what you can start.** The budget is this worker's capacity
  (CERTIFICATION_CONCURRENCY + MODELCERT_WORKER_PREFETCH) minus what it already holds in
  every region together; each region's share is claimed with DBOS's own claim
  (`SystemDatabase.start_queued_workflows`), which keeps the region's concurrency and
  start-rate limits exact across workers (REPEATABLE READ + NOWAIT on PostgreSQL, BEGIN
  IMMEDIATE on SQLite) and a paused region's zero. Regions are visited best priority
  first, then oldest.
- **Idle cost independent of the number of regions.** One indexed query says which of
  the served queues hold claimable work; nothing else runs while there is none. On
  PostgreSQL the thread then sleeps on LISTEN (`queues.WAKE_CHANNEL`: the enqueue, the
  hand-backs, a resumed region NOTIFY at commit) with a slow backstop poll; on SQLite (one
  machine) it polls every MODELCERT_QUEUE_POLL_S. When a slot frees locally it claims at
  once; work it saw but could not take (a region at its limit) is looked at again every
  poll interval.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.exc import DBAPIError

from modelcert.jobs.queues import APP_VERSION, WAKE_CHANNEL, dbos_table
from modelcert.obs.logging import log_event
from modelcert.store.outage import describe_outage, is_database_unavailable

if TYPE_CHECKING:
    from dbos import DBOS

# Idle, with LISTEN working: a backstop poll in case a NOTIFY was missed (a reconnect).
IDLE_BACKSTOP_S = 5.0
# How often the thread looks at its own in-memory load while it is full and work waits.
LOCAL_TICK_S = 0.05
# A claim refused by a peer's concurrent claim (PostgreSQL lock / serialization conflict)
# is tried again after this long, jittered.
CONFLICT_RETRY_S = 0.05
# A workflow just claimed counts as held until DBOS registers it as active (dispatch
# registers it asynchronously), for at most this long.
CLAIM_REGISTRATION_S = 5.0


@dataclass(frozen=True)
class Waiting:
    """What one region queue holds for this worker's application version."""

    queue: str
    enqueued: int
    best_priority: int
    oldest_ms: int


class Dispatcher:
    """One thread claiming certifications for every region queue of one worker."""

    def __init__(
        self,
        engine: Engine,
        queues: Sequence[str],
        executor_id: str,
        capacity: int,
        *,
        poll_s: float,
        dbos_instance: Callable[[], DBOS] | None = None,
    ) -> None:
        self.engine = engine
        self.queues = tuple(queues)
        self.executor_id = executor_id
        self.capacity = capacity
        self.poll_s = poll_s
        self._dbos_instance = dbos_instance or _launched_dbos
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._recent: dict[str, float] = {}  # claimed, maybe not yet registered active
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._listening = False
        self.last_poll: float | None = None  # wall clock of the last look (for /health)
        self.claimed_total = 0

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._thread.start()
        if self.engine.dialect.name == "postgresql":
            self._listener = threading.Thread(
                target=self._listen, name="dispatcher-listen", daemon=True
            )
            self._listener.start()

    def stop(self) -> None:
        """Stop claiming (what was claimed is the worker's drain's business)."""
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._listener):
            if thread is not None:
                thread.join(timeout=5.0)

    def wake(self) -> None:
        """Look for work now (a slot freed, or a hint that work arrived)."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    # -- load ----------------------------------------------------------------------

    def held(self) -> int:
        """Certifications this worker holds (claimed or running), in all its queues."""
        active = self._dbos_instance()._active_workflows_set
        registered = set(active.activeList())
        now = time.monotonic()
        for workflow_id, claimed_at in list(self._recent.items()):
            if workflow_id in registered or now - claimed_at > CLAIM_REGISTRATION_S:
                del self._recent[workflow_id]
        return sum(active.count_for_queue(name) for name in self.queues) + len(self._recent)

    # -- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.poll_s
        while not self._stop.is_set():
            self._wake.clear()
            try:
                delay = self._one_round()
                backoff = self.poll_s
            except Exception as exc:  # the database is away, or a claim failed
                if self._stop.is_set():
                    return
                if _is_claim_conflict(exc):
                    delay = CONFLICT_RETRY_S * random.uniform(0.5, 1.5)
                else:
                    reason = (
                        describe_outage(exc)
                        if is_database_unavailable(exc)
                        else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    )
                    log_event("error", where="dispatcher", error=reason)
                    backoff = min(IDLE_BACKSTOP_S, backoff * 2)
                    delay = backoff
            self._wait(delay)

    def _wait(self, delay: float) -> None:
        if delay <= 0:
            return
        self._wake.wait(delay * random.uniform(0.95, 1.05))

    def _one_round(self) -> float:
        """Claim what fits; returns how long to wait before the next look."""
        budget = self.capacity - self.held()
        if budget <= 0:
            # Full: look at the local load again soon; a freed slot claims at once.
            return LOCAL_TICK_S
        waiting = self.look()
        self.last_poll = time.time()
        if not waiting:
            return IDLE_BACKSTOP_S if self._listening else self.poll_s
        claimed = 0
        for region_queue in waiting:
            if claimed >= budget or self._stop.is_set():
                break
            claimed += self._claim(region_queue.queue, budget - claimed)
        if claimed >= budget:
            return LOCAL_TICK_S  # full now; more is waiting
        if claimed and sum(w.enqueued for w in waiting) > claimed:
            return 0.0  # took some; others may be claimable right away
        # Work waits, but region limits (concurrency, start rate, a pause) hold it.
        return self.poll_s

    def look(self) -> list[Waiting]:
        """The served queues holding ENQUEUED work of this version, best first."""
        table = dbos_table(self.engine.dialect.name, "workflow_status")
        query = text(
            f"SELECT queue_name, COUNT(*), MIN(priority), MIN(created_at) FROM {table} "
            "WHERE status = 'ENQUEUED' AND queue_name IN :queues "
            "AND (application_version = :version OR application_version IS NULL) "
            "GROUP BY queue_name"
        ).bindparams(bindparam("queues", expanding=True))
        with self.engine.connect() as connection:
            rows = connection.execute(
                query, {"queues": list(self.queues), "version": APP_VERSION}
            ).all()
        found = [Waiting(row[0], int(row[1]), int(row[2] or 0), int(row[3] or 0)) for row in rows]
        return sorted(found, key=lambda w: (w.best_priority, w.oldest_ms, w.queue))

    def _claim(self, queue_name: str, budget: int) -> int:
        """Claim up to `budget` from one region queue with DBOS's claim, then start them."""
        from dbos._utils import GlobalParams, generate_uuid

        dbos = self._dbos_instance()
        queue = dbos._sys_db.get_queue(queue_name)
        if queue is None or queue._concurrency == 0:  # not registered yet, or paused
            return 0
        in_queue = dbos._active_workflows_set.count_for_queue(queue_name)
        # This worker's share of this queue for this claim: what it holds there plus the
        # room left in its whole budget (DBOS's own per-queue worker limit is ignored).
        queue._worker_concurrency = in_queue + budget
        owner_xid = generate_uuid()
        claimed, _ = dbos._sys_db.start_queued_workflows(
            queue,
            GlobalParams.executor_id,
            GlobalParams.app_version,
            None,
            in_queue,
            owner_xid=owner_xid,
        )
        if not claimed:
            return 0
        now = time.monotonic()
        for workflow_id in claimed:
            self._recent[workflow_id] = now
        self.claimed_total += len(claimed)
        self._start(dbos, claimed, owner_xid)
        return len(claimed)

    def _start(self, dbos: DBOS, workflow_ids: list[str], owner_xid: str) -> None:
        from dbos._core import execute_dequeued_workflow

        statuses = {s["workflow_uuid"]: s for s in dbos._sys_db.get_workflow_statuses(workflow_ids)}
        for workflow_id in workflow_ids:
            status = statuses.get(workflow_id)
            if status is None:
                continue  # cancelled or deleted between the claim and now
            try:
                execute_dequeued_workflow(dbos, status, owner_xid)
            except Exception as exc:
                log_event(
                    "error",
                    where="dispatcher start",
                    workflow_id=workflow_id,
                    error=f"{type(exc).__name__}: {exc}",
                )

    # -- PostgreSQL wake-ups ---------------------------------------------------------

    def _listen(self) -> None:
        """Hold a LISTEN connection and turn each NOTIFY into a wake-up; reconnect on loss
        (polling at the poll interval meanwhile)."""
        while not self._stop.is_set():
            try:
                with contextlib.closing(self._listen_connection()) as connection:
                    connection.execute(f"LISTEN {WAKE_CHANNEL}")
                    self._listening = True
                    self._wake.set()  # anything sent before LISTEN: look now
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=1.0, stop_after=1):
                            self._wake.set()
            except Exception as exc:
                self._listening = False
                if self._stop.is_set():
                    return
                if not is_database_unavailable(exc):
                    log_event(
                        "error", where="dispatcher listen", error=f"{type(exc).__name__}: {exc}"
                    )
                self._stop.wait(min(IDLE_BACKSTOP_S, 1.0))
        self._listening = False

    def _listen_connection(self) -> Any:
        import psycopg

        # The engine's URL, as libpq reads it (its driver name is SQLAlchemy's).
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=10)


def _launched_dbos() -> DBOS:
    from dbos._dbos import _get_dbos_instance

    return _get_dbos_instance()


def _is_claim_conflict(exc: BaseException) -> bool:
    """A peer claimed the same queue at the same moment (PostgreSQL NOWAIT / REPEATABLE
    READ refusing ours): try again shortly."""
    if not isinstance(exc, DBAPIError):
        return False
    name = type(exc.orig).__name__
    return name in {"LockNotAvailable", "SerializationFailure"}
