"""Operator controls, one function each for the API, the CLI and the dashboard: pause /
resume a region, change a job's priority, cancel a job, retry its failures, deactivate /
reactivate / remove a deployment or a provider. Each change is recorded in the audit log
(`store.audit`): who (`Actor`), what, when.

The queue's own mechanics are `jobs.control` and `jobs.cancel`'s; this module adds the
checks an operator's request needs (the region is served, the deployment is active) and
the audit entry. Where the change is ours alone (the catalog, a priority) the entry is
written in the same transaction; where DBOS writes through its own connection (a pause,
a cancel) it is written once that succeeded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import CertificationStatus, JobKind, Priority
from modelcert.errors import NotFoundError, UserError
from modelcert.store import audit, repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, Deployment, Provider

if TYPE_CHECKING:
    from dbos import DBOSClient

    from modelcert.jobs.enqueue import Enqueuer, EnqueueResult
    from modelcert.settings import Settings


@dataclass(frozen=True)
class Actor:
    """Who acts: an API key's name (`api`, `dashboard`) or the OS user (`cli`)."""

    name: str
    interface: str


def _record(session: Session, actor: Actor, action: str, target: str, **details: Any) -> None:
    audit.record(
        session,
        actor=actor.name,
        interface=actor.interface,
        action=action,
        target=target,
        details=details,
    )


def _label(deployment: Deployment) -> str:
    return f"{deployment.provider.slug}/{deployment.provider_model_id}"


# --- regions --------------------------------------------------------------------------


def served_regions(session: Session) -> set[str]:
    """The regions some active provider serves."""
    regions: set[str] = set()
    for provider in session.scalars(select(Provider).where(Provider.active.is_(True))):
        regions.update(provider.regions or [])
    return regions


def pause_region(
    factory: sessionmaker[Session],
    client: DBOSClient,
    settings: Settings,
    actor: Actor,
    region: str,
) -> bool:
    """Pause a region's queue (queued work waits, running work finishes); False when it
    was paused already. An unknown region is `NotFoundError`."""
    from modelcert.jobs import control

    with transaction(factory) as session:
        if region not in served_regions(session):
            raise NotFoundError(f"unknown region {region!r}", field="region")
    changed = control.pause_region(factory, client, settings, region, paused_by=actor.name)
    if changed:
        with transaction(factory) as session:
            _record(session, actor, "region.pause", region)
    return changed


def resume_region(
    factory: sessionmaker[Session],
    client: DBOSClient,
    settings: Settings,
    actor: Actor,
    region: str,
) -> bool:
    """Resume a paused region's queue; False when it was not paused."""
    from modelcert.jobs import control

    changed = control.resume_region(factory, client, settings, region)
    if changed:
        with transaction(factory) as session:
            _record(session, actor, "region.resume", region)
    return changed


def paused_regions(session: Session) -> list[dict[str, Any]]:
    from modelcert.jobs import control

    return [
        {"region": p.region, "pausedBy": p.paused_by, "pausedAt": p.paused_at.isoformat()}
        for p in control.paused_regions(session).values()
    ]


# --- jobs -----------------------------------------------------------------------------


def set_priority(
    factory: sessionmaker[Session], actor: Actor, job_id: str, priority: Priority
) -> int:
    """Give a job's still-queued certifications another priority; how many changed."""
    from modelcert.jobs import control

    with transaction(factory) as session:
        count = control.set_job_priority(session, job_id, priority)
        _record(session, actor, "job.priority", job_id, priority=priority.value, changed=count)
    return count


def cancel_job(
    factory: sessionmaker[Session], client: DBOSClient, actor: Actor, job_id: str
) -> int:
    """Cancel a job's unfinished certifications; how many were cancelled."""
    from modelcert.jobs.cancel import cancel_job as cancel

    count = cancel(factory, client, job_id)
    with transaction(factory) as session:
        _record(session, actor, "job.cancel", job_id, cancelled=count)
    return count


def retry_failed(
    factory: sessionmaker[Session],
    enqueuer: Enqueuer,
    actor: Actor,
    job_id: str,
    priority: Priority = Priority.NORMAL,
) -> EnqueueResult:
    """Queue again, as a new job, the certifications of `job_id` whose latest run failed,
    errored or was incomplete, of deployments still active."""
    from modelcert.jobs import control

    with transaction(factory) as session:
        failed = control.failed_targets(session, job_id)
        targets = [t for t in failed if not inactive_targets(session, [t])]
    if not failed:
        raise UserError(f"job {job_id} has no failed certification to retry", field="jobId")
    if not targets:
        raise UserError(
            f"job {job_id}: every failed certification is of a deactivated deployment or provider",
            field="jobId",
        )
    result = enqueuer.enqueue(
        factory,
        targets,
        kind=JobKind.SINGLE if len(targets) == 1 else JobKind.MULTIPLE,
        priority=priority,
        created_by=actor.name,
        scope=control.retry_scope(job_id, targets),
    )
    with transaction(factory) as session:
        _record(
            session,
            actor,
            "job.retry_failed",
            job_id,
            newJobId=result.job_id,
            queued=len(result.queued),
            refused=len(result.refused),
            skippedInactive=len(failed) - len(targets),
        )
    return result


# --- the catalog ----------------------------------------------------------------------


def inactive_targets(
    session: Session, targets: Iterable[tuple[str | int, str]]
) -> list[tuple[str, str]]:
    """The targets (deployment ref, region) whose deployment or provider is deactivated,
    as (provider/model-id, why). Unknown refs are left to the enqueue to refuse."""
    found: list[tuple[str, str]] = []
    for ref in dict.fromkeys(str(ref).strip() for ref, _region in targets):  # once a ref
        try:
            deployment = repo.find_deployment(session, ref)
        except UserError:
            continue
        if not deployment.provider.active:
            found.append(
                (_label(deployment), f"provider {deployment.provider.slug} is deactivated")
            )
        elif not deployment.active:
            found.append((_label(deployment), "deactivated"))
    return found


def check_active(session: Session, targets: Sequence[tuple[str | int, str]]) -> None:
    """`UserError` (field `deployment`) when a target's deployment or provider is
    deactivated: deactivated deployments are not queued."""
    inactive = inactive_targets(session, targets)
    if inactive:
        label, why = inactive[0]
        raise UserError(
            f"deployment {label} is not active ({why}): reactivate it to certify it",
            field="deployment",
        )


def set_deployment_active(
    factory: sessionmaker[Session], actor: Actor, ref: str | int, active: bool
) -> tuple[str, bool]:
    """(provider/model-id, whether it changed)."""
    with transaction(factory) as session:
        deployment = repo.find_deployment(session, ref)
        label = _label(deployment)
        if deployment.active == active:
            return label, False
        deployment.active = active
        action = "deployment.activate" if active else "deployment.deactivate"
        _record(session, actor, action, label, deploymentId=deployment.id)
    return label, True


def set_provider_active(
    factory: sessionmaker[Session], actor: Actor, slug: str, active: bool
) -> bool:
    """Whether it changed. A deactivated provider's deployments are not queued, scheduled
    or listed among those to certify; their own flags are kept for its reactivation."""
    with transaction(factory) as session:
        provider = repo.get_provider(session, slug)
        if provider.active == active:
            return False
        provider.active = active
        action = "provider.activate" if active else "provider.deactivate"
        _record(session, actor, action, provider.slug)
    return True


_PENDING = (CertificationStatus.QUEUED.value, CertificationStatus.RUNNING.value)


def remove_deployment(factory: sessionmaker[Session], actor: Actor, ref: str | int) -> str:
    """Delete a deployment with its certifications, runs and test results; refused while
    one of its certifications is queued or running (cancel the job first). Its provider
    and model stay. Returns provider/model-id."""
    with transaction(factory) as session:
        deployment = repo.find_deployment(session, ref)
        label, deployment_id = _label(deployment), deployment.id
        pending = session.scalar(
            select(func.count())
            .select_from(Certification)
            .where(Certification.deployment_id == deployment_id, Certification.status.in_(_PENDING))
        )
        if pending:
            raise UserError(
                f"deployment {label} has {pending} certification(s) queued or running: "
                "cancel their job first, or deactivate it",
                field="deployment",
            )
        runs = session.scalar(
            select(func.count())
            .select_from(Certification)
            .where(Certification.deployment_id == deployment_id)
        )
        # The database's ON DELETE CASCADE removes certifications, runs and test results.
        session.execute(delete(Deployment).where(Deployment.id == deployment_id))
        _record(
            session,
            actor,
            "deployment.remove",
            label,
            deploymentId=deployment_id,
            certifications=int(runs or 0),
        )
    return label


def remove_provider(factory: sessionmaker[Session], actor: Actor, slug: str) -> int:
    """Delete a provider with all its deployments and their history; refused while one
    of them has a certification queued or running. Returns how many deployments went."""
    with transaction(factory) as session:
        provider = repo.get_provider(session, slug)
        provider_id = provider.id
        deployment_ids = list(
            session.scalars(select(Deployment.id).where(Deployment.provider_id == provider_id))
        )
        pending = session.scalar(
            select(func.count())
            .select_from(Certification)
            .where(
                Certification.deployment_id.in_(deployment_ids),
                Certification.status.in_(_PENDING),
            )
        )
        if pending:
            raise UserError(
                f"provider {slug} has {pending} certification(s) queued or running: cancel "
                "their jobs first, or deactivate it",
                field="provider",
            )
        # ON DELETE CASCADE: its deployments, then their certifications, runs and tests.
        session.execute(delete(Provider).where(Provider.id == provider_id))
        _record(session, actor, "provider.remove", slug, deployments=len(deployment_ids))
    return len(deployment_ids)
