"""Enqueue certifications: one function for the API and the CLI.

The job row, the certifications marked QUEUED and the queued workflows are written in
ONE database transaction (DBOS's queue lives in the same database), so they can never
disagree. At most one queued-or-running certification per (deployment, region): the
queue's deduplication id refuses a second one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dbos import DBOSClient
from dbos._error import DBOSQueueDeduplicatedError
from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import CertificationStatus, JobKind, Priority
from modelcert.errors import UserError
from modelcert.jobs.control import region_queue_options
from modelcert.jobs.queues import PRIORITY_VALUES, queue_name, wake_workers
from modelcert.jobs.workflows import certification_options, enqueue_certification
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, Deployment, Job, Provider, utcnow


@dataclass(frozen=True)
class QueuedCertification:
    deployment_id: int
    deployment: str  # provider-slug/model-id
    region: str
    workflow_id: str


@dataclass(frozen=True)
class RefusedCertification:
    deployment_id: int
    deployment: str
    region: str
    reason: str


@dataclass
class EnqueueResult:
    job_id: str | None
    kind: JobKind
    priority: Priority
    queued: list[QueuedCertification] = field(default_factory=list)
    refused: list[RefusedCertification] = field(default_factory=list)


DUPLICATE_REASON = "a certification of this deployment in this region is already queued or running"


def deduplication_id(deployment_id: int, region: str) -> str:
    return f"{deployment_id}@{region}"


def workflow_id_for(job_id: str, deployment_id: int, region: str) -> str:
    return f"{job_id}:{deployment_id}@{region}"


class Enqueuer:
    """Holds the DBOS client of this process (API or CLI) and the queues it registered."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        # An unreachable database is an answer here (the API's 503, the CLI's one line),
        # not a wait: DBOS's client would otherwise block the request until it returns.
        self.client = DBOSClient(system_database_engine=engine, retry_connection_errors=False)
        self._registered: set[str] = set()

    def close(self) -> None:
        self.client.destroy()

    def ensure_queue(self, region: str) -> str:
        """Register (or update) a region's queue with the limits from settings."""
        name = queue_name(self.settings, region)
        if name not in self._registered:
            # A paused region stays paused (modelcert.jobs.control).
            self.client.register_queue(
                name,
                on_conflict="always_update",
                **region_queue_options(self.engine, self.settings, region),
            )
            self._registered.add(name)
        return name

    def enqueue(
        self,
        factory: sessionmaker[Session],
        targets: Sequence[tuple[str | int, str]],
        *,
        kind: JobKind,
        priority: Priority = Priority.NORMAL,
        created_by: str | None = None,
        delay_s: float = 0.0,
        scope: dict[str, Any] | None = None,
    ) -> EnqueueResult:
        """Validate the targets, then write the job and queue its work in one transaction."""
        if not targets:
            raise UserError("nothing to certify: no deployment × region matched", field="targets")
        if delay_s < 0:
            raise UserError("delay must be ≥ 0 seconds", field="delay")
        result = EnqueueResult(job_id=None, kind=kind, priority=priority)
        with transaction(factory) as session:
            resolved = [
                (d.id, f"{d.provider.slug}/{d.provider_model_id}", region)
                for d, region in _resolve(session, targets)
            ]
        # Queue registration writes through its own connection: never inside our
        # transaction (on SQLite the second writer would wait for us forever).
        for region in sorted({region for _, _, region in resolved}):
            self.ensure_queue(region)
        with transaction(factory) as session:
            job = Job(
                kind=kind.value,
                priority=priority.value,
                created_by=created_by,
                scope=scope or _scope(resolved),
            )
            session.add(job)
            session.flush()
            for deployment_id, label, region in resolved:
                queued = self._enqueue_one(
                    session, job.id, deployment_id, region, priority, delay_s
                )
                if queued is None:
                    result.refused.append(
                        RefusedCertification(deployment_id, label, region, DUPLICATE_REASON)
                    )
                    continue
                result.queued.append(QueuedCertification(deployment_id, label, region, queued))
                _mark_queued(session, deployment_id, region, job.id)
            job.total = len(result.queued)
            if result.queued:
                wake_workers(session.connection())  # idle workers claim at commit
            if not result.queued:
                # Nothing new to do: leave no empty job behind.
                session.delete(job)
            else:
                result.job_id = job.id
        return result

    def _enqueue_one(
        self,
        session: Session,
        job_id: str,
        deployment_id: int,
        region: str,
        priority: Priority,
        delay_s: float,
    ) -> str | None:
        workflow_id = workflow_id_for(job_id, deployment_id, region)
        options = certification_options(
            queue_name=queue_name(self.settings, region),
            workflow_id=workflow_id,
            deduplication_id=deduplication_id(deployment_id, region),
            priority=PRIORITY_VALUES[priority],
            delay_s=delay_s,
        )
        try:
            # A savepoint: a refused duplicate must not abort the whole transaction.
            with session.begin_nested():
                enqueue_certification(
                    self.client,
                    session.connection(),
                    options,
                    job_id=job_id,
                    deployment_id=deployment_id,
                    region=region,
                )
        except DBOSQueueDeduplicatedError:
            return None
        return workflow_id


def _resolve(
    session: Session, targets: Sequence[tuple[str | int, str]]
) -> list[tuple[Deployment, str]]:
    resolved: list[tuple[Deployment, str]] = []
    seen: set[tuple[int, str]] = set()
    for ref, region in targets:
        deployment = repo.find_deployment(session, ref)
        repo.check_region(deployment.provider, region)
        if (deployment.id, region) not in seen:
            seen.add((deployment.id, region))
            resolved.append((deployment, region))
    return resolved


def _scope(resolved: Sequence[tuple[int, str, str]]) -> dict[str, Any]:
    return {
        "deployments": sorted({d for d, _, _ in resolved}),
        "regions": sorted({r for _, _, r in resolved}),
    }


def _mark_queued(session: Session, deployment_id: int, region: str, job_id: str) -> None:
    certification = repo.certification_row(session, deployment_id, region)
    certification.status = CertificationStatus.QUEUED.value
    certification.job_id = job_id
    session.flush()


def all_active_targets(
    session: Session, regions: Sequence[str], provider_slug: str | None = None
) -> list[tuple[int, str]]:
    """Every active deployment (of one provider, or all) × the requested regions it serves."""
    query = (
        select(Deployment)
        .join(Provider)
        .where(Deployment.active.is_(True), Provider.active.is_(True))
    )
    if provider_slug:
        repo.get_provider(session, provider_slug)
        query = query.where(Provider.slug == provider_slug)
    targets = []
    for deployment in session.scalars(query).unique():
        served = deployment.provider.regions
        for region in regions or served:
            if region in served:
                targets.append((deployment.id, region))
    return targets


def recertify_targets(session: Session, now: datetime | None = None) -> list[tuple[int, str]]:
    """Certifications that expired, failed, errored or ran out of time."""
    now = now or utcnow()
    query = select(Certification).where(
        or_(
            Certification.status.in_(
                [
                    CertificationStatus.FAILED.value,
                    CertificationStatus.ERROR.value,
                    CertificationStatus.INCOMPLETE.value,
                ]
            ),
            Certification.expires_at <= now,
        )
    )
    return [(c.deployment_id, c.region) for c in session.scalars(query)]
