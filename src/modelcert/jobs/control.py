"""Operator controls over the queue: pause / resume a region, change a queued job's
priority, find the failed certifications of a job to retry them.

A pause is kept twice, on purpose: a `region_pauses` row (the durable truth, read by the
dashboard and by whoever registers the region's queue) and the DBOS queue itself, whose
concurrency is set to 0 so that no worker dequeues from it. Workers read their queues'
limits from the database on every poll, so a pause reaches every worker without a
restart. Registering a queue with `queue_options` (a worker starting, the API's first
enqueue for a region) overwrites the DBOS limits: register with `region_queue_options`,
which keeps a paused region paused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dbos import DBOSClient
from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import CertificationStatus, JobStatus, Priority
from modelcert.errors import NotFoundError, UserError
from modelcert.jobs.queues import (
    PRIORITY_VALUES,
    dbos_table,
    queue_name,
    queue_options,
    wake_workers,
)
from modelcert.settings import Settings
from modelcert.store.db import transaction
from modelcert.store.models import CertificationRun, Job
from modelcert.store.worker_models import RegionPause

_RETRYABLE = (
    CertificationStatus.FAILED.value,
    CertificationStatus.ERROR.value,
    CertificationStatus.INCOMPLETE.value,
)


def paused_regions(session: Session) -> dict[str, RegionPause]:
    """Paused regions, by name."""
    return {p.region: p for p in session.scalars(select(RegionPause).order_by(RegionPause.region))}


def is_paused(session: Session, region: str) -> bool:
    return session.get(RegionPause, region) is not None


def registration_options(settings: Settings, *, paused: bool) -> dict[str, Any]:
    """`queue_options`, with no concurrency at all while the region is paused."""
    options = queue_options(settings)
    if paused:
        # DBOS dequeues nothing from a queue whose concurrency budget is 0; the queued
        # workflows stay ENQUEUED, in their order, until the limits come back.
        options.update(global_concurrency=0, worker_concurrency=0)
    return options


def region_queue_options(engine: Engine, settings: Settings, region: str) -> dict[str, Any]:
    """The DBOS `register_queue` options for a region's queue, paused or not: what every
    process that registers a queue (worker start, the API's first enqueue) should pass, so
    that a restart does not silently resume a paused region."""
    with Session(engine) as session:
        paused = is_paused(session, region)
    return registration_options(settings, paused=paused)


def _apply(client: DBOSClient, settings: Settings, region: str, *, paused: bool) -> None:
    client.register_queue(
        queue_name(settings, region),
        on_conflict="always_update",
        **registration_options(settings, paused=paused),
    )


def pause_region(
    factory: sessionmaker[Session],
    client: DBOSClient,
    settings: Settings,
    region: str,
    *,
    paused_by: str | None,
) -> bool:
    """Pause a region's queue; False when it was paused already (nothing changes)."""
    with transaction(factory) as session:
        if is_paused(session, region):
            return False
        session.add(RegionPause(region=region, paused_by=paused_by))
    # After the commit: DBOS writes through its own connection (SQLite has one writer).
    _apply(client, settings, region, paused=True)
    return True


def resume_region(
    factory: sessionmaker[Session], client: DBOSClient, settings: Settings, region: str
) -> bool:
    """Resume a paused region's queue; False when it was not paused."""
    with transaction(factory) as session:
        removed = session.execute(delete(RegionPause).where(RegionPause.region == region))
        was_paused = bool(getattr(removed, "rowcount", 0))
    if was_paused:
        _apply(client, settings, region, paused=False)
        with transaction(factory) as session:
            wake_workers(session.connection())  # its queued work is claimable again
    return was_paused


def set_job_priority(session: Session, job_id: str, priority: Priority) -> int:
    """Give a job's still-queued certifications another priority; returns how many.

    DBOS 3.4 has no API to change a queued workflow's priority, but it dequeues by the
    `priority` column of `workflow_status` on every poll, so updating that column for
    rows still ENQUEUED (never started: no worker holds them) is safe and takes effect
    on the next poll. Rows already running or finished are left alone.
    """
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"unknown job {job_id!r}", field="jobId")
    if JobStatus(job.status).is_final:
        raise UserError(f"job {job_id} is already {job.status}", field="jobId")
    table = dbos_table(session.get_bind().dialect.name, "workflow_status")
    changed = session.execute(
        text(
            f"UPDATE {table} SET priority = :priority "
            "WHERE workflow_uuid LIKE :prefix AND status = 'ENQUEUED'"
        ),
        # job.id is a stored UUID (no % or _), so the LIKE matches this job's workflows only.
        {"priority": PRIORITY_VALUES[priority], "prefix": f"{job.id}:%"},
    )
    count = int(getattr(changed, "rowcount", 0) or 0)
    if count == 0:
        raise UserError(
            f"job {job_id} has no certification waiting in a queue: nothing to re-prioritise",
            field="priority",
        )
    session.execute(update(Job).where(Job.id == job_id).values(priority=priority.value))
    return count


def failed_targets(session: Session, job_id: str) -> list[tuple[int, str]]:
    """(deployment, region) pairs whose latest run in this job FAILED, ERRORED or was
    INCOMPLETE."""
    if session.get(Job, job_id) is None:
        raise NotFoundError(f"unknown job {job_id!r}", field="jobId")
    latest: dict[tuple[int, str], str] = {}
    runs = session.scalars(
        select(CertificationRun)
        .where(CertificationRun.job_id == job_id)
        .order_by(CertificationRun.id)
    )
    for run in runs:
        latest[(run.deployment_id, run.region)] = run.status
    return sorted(pair for pair, status in latest.items() if status in _RETRYABLE)


def retry_scope(job_id: str, targets: Iterable[tuple[int, str]]) -> dict[str, Any]:
    """The scope recorded on a retry job: what it covers and which job it retries."""
    pairs = list(targets)
    return {
        "deployments": sorted({d for d, _ in pairs}),
        "regions": sorted({r for _, r in pairs}),
        "retryOf": job_id,
    }
