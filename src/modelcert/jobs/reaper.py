"""Worker heartbeats, and the reaper that takes over a dead worker's certifications.

Without DBOS's paid control plane nothing resumes the workflows of an executor that
never comes back. Every worker writes a heartbeat; one of them, elected by a lease
row (a conditional UPDATE, so it works on SQLite and PostgreSQL alike), looks for
executors whose heartbeat went silent and puts their unfinished certifications back on
their region queue. DBOS's resume clears the deduplication id: it is restored at once,
so "at most one queued-or-running certification per (deployment, region)" still holds.

Silence is what the reaper *watched*, not what timestamps say (`SilenceWatch`): an
executor is dead when its heartbeat counter has not moved through `dead_after_s` of
the reaper's own monotonic time, over which every one of the reaper's database calls
succeeded. A database outage (or the reaper's own partition) interrupts the watch and
starts it over, so live workers are not reaped for an outage they shared; no two
machines' clocks are compared. docs/worker-guide.md gives the safety argument.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from dbos import DBOS
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelcert.jobs.queues import WORKFLOW_NAME, dbos_table, wake_workers
from modelcert.obs.logging import log_event
from modelcert.store.db import transaction
from modelcert.store.models import utcnow
from modelcert.store.worker_models import Lease, WorkerHeartbeat

REAPER_LEASE = "reaper"


def write_heartbeat(
    session: Session,
    executor_id: str,
    regions: tuple[str, ...],
    concurrency: int,
    in_flight: int,
) -> None:
    """Upsert this worker's heartbeat row (a restart clears an earlier stop)."""
    now = utcnow()
    row = session.get(WorkerHeartbeat, executor_id)
    if row is None:
        row = WorkerHeartbeat(executor_id=executor_id, started_at=now)
        session.add(row)
    row.hostname = socket.gethostname()
    row.pid = os.getpid()
    row.regions = list(regions)
    row.concurrency = concurrency
    row.in_flight = in_flight
    row.heartbeat_at = now
    row.beats = (row.beats or 0) + 1
    # A worker writing heartbeats is alive, whatever an earlier stop recorded.
    row.stopped_at = None
    row.note = None


def mark_stopped(session: Session, executor_id: str, note: str) -> None:
    row = session.get(WorkerHeartbeat, executor_id)
    if row is not None:
        row.stopped_at = utcnow()
        row.note = note


def hold_lease(session: Session, name: str, holder: str, ttl_s: float) -> bool:
    """Take or renew the lease `name` for `holder`; False while someone else holds it."""
    now = utcnow()
    lease = session.get(Lease, name, with_for_update=True)
    if lease is None:
        try:
            with session.begin_nested():
                session.add(
                    Lease(name=name, holder=holder, expires_at=now + timedelta(seconds=ttl_s))
                )
        except IntegrityError:  # another worker created it first
            return False
        return True
    if lease.holder != holder and lease.expires_at > now:
        return False
    lease.holder = holder
    lease.expires_at = now + timedelta(seconds=ttl_s)
    return True


@dataclass
class SilenceWatch:
    """The reaper's watch over other executors' heartbeat counters.

    `observe` records, for each executor that did not stop cleanly, its counter and the
    reaper's monotonic time when the counter was first seen at that value; an executor
    whose counter stayed put for `dead_after_s` of watching is silent. `interrupt()`
    forgets everything: called whenever the reaper's own database access failed, or it
    was not the reaper, since it cannot tell what happened meanwhile."""

    clock: Callable[[], float] = time.monotonic
    seen: dict[str, tuple[int, float]] = field(default_factory=dict)

    def interrupt(self) -> None:
        self.seen.clear()

    def observe(self, session: Session, me: str, dead_after_s: float) -> list[str]:
        now = self.clock()
        rows = session.execute(
            select(WorkerHeartbeat.executor_id, WorkerHeartbeat.beats).where(
                WorkerHeartbeat.stopped_at.is_(None), WorkerHeartbeat.executor_id != me
            )
        ).all()
        watched: dict[str, tuple[int, float]] = {}
        for executor_id, beats in rows:
            before = self.seen.get(executor_id)
            watched[executor_id] = before if before and before[0] == beats else (beats, now)
        self.seen = watched
        return [e for e, (_, since) in watched.items() if now - since >= dead_after_s]


def _first_in_its_class(factory: sessionmaker[Session], workflow_id: str) -> None:
    """Put a requeued certification ahead of the rest of its priority class.

    Its `created_at` is no help: a batch is enqueued in one transaction, so the whole job
    shares it and the requeued work was claimed in arbitrary order, often last (B4 in
    docs/benchmarks.md). It has already spent provider calls and holds its job open:
    1/5/9 (high/normal/low) become 0/4/8, still behind the class above."""
    with transaction(factory) as session:
        table = dbos_table(session.get_bind().dialect.name, "workflow_status")
        session.execute(
            text(
                f"UPDATE {table} SET priority = priority - 1 "
                "WHERE workflow_uuid = :id AND status = 'ENQUEUED' AND priority > 0"
            ),
            {"id": workflow_id},
        )


def _restore_deduplication(factory: sessionmaker[Session], workflow_id: str) -> None:
    dedup = workflow_id.split(":", 1)[-1]  # "<job>:<deployment>@<region>"
    with transaction(factory) as session:
        table = dbos_table(session.get_bind().dialect.name, "workflow_status")
        session.execute(
            text(
                f"UPDATE {table} SET deduplication_id = :dedup "
                "WHERE workflow_uuid = :id AND status IN ('ENQUEUED', 'PENDING')"
            ),
            {"dedup": dedup, "id": workflow_id},
        )


def reap(
    factory: sessionmaker[Session], me: str, dead_after_s: float, watch: SilenceWatch
) -> list[str]:
    """If this worker holds the reaper lease, requeue the work of executors `watch` saw
    silent for `dead_after_s`. A failure here interrupts the watch (the caller's own
    heartbeat failing must interrupt it too)."""
    try:
        with transaction(factory) as session:
            if not hold_lease(session, REAPER_LEASE, me, ttl_s=dead_after_s):
                watch.interrupt()
                return []
            dead = watch.observe(session, me, dead_after_s)
    except Exception:
        watch.interrupt()
        raise
    resumed: list[str] = []
    for executor in dead:
        workflows = DBOS.list_workflows(
            executor_id=executor,
            status="PENDING",
            name=WORKFLOW_NAME,
            load_input=False,
            load_output=False,
        )
        for workflow in workflows:
            DBOS.resume_workflow(workflow.workflow_id, queue_name=workflow.queue_name)
            _first_in_its_class(factory, workflow.workflow_id)
            try:
                _restore_deduplication(factory, workflow.workflow_id)
            except IntegrityError:
                log_event(
                    "error",
                    where="reaper",
                    workflow_id=workflow.workflow_id,
                    error="deduplication id taken by a newer certification",
                )
            resumed.append(workflow.workflow_id)
        with transaction(factory) as session:
            mark_stopped(
                session, executor, f"silent; {len(workflows)} certifications requeued by {me}"
            )
            if workflows:
                wake_workers(session.connection())  # idle workers take them now
        watch.seen.pop(executor, None)
        log_event("stalled", executor_id=executor, requeued=len(workflows), reaper=me)
    return resumed
