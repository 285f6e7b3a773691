"""Scheduled re-certification: a DBOS schedule re-queues, at low priority, the
certifications that are about to expire and the failed ones whose retry interval passed.

The schedule lives in DBOS's tables (`install_schedule` writes it when a worker starts)
and every worker runs DBOS's scheduler. Each tick is a workflow whose id is derived from
the schedule's name and the tick's time (`sched-<name>-<time>`), so with several workers
a tick still runs once. DBOS fires only plain functions on a schedule, so the tick hands
the work to `RecertifyScheduler.run`, a workflow of the worker's configured instance
(which holds the database, the settings and the enqueuer), queued as the tick's child.
The selection and the enqueue run in one step: one job per tick (created by
"scheduler"), none when nothing is due. The enqueuer refuses what is already queued or
running.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dbos import DBOS, DBOSConfiguredInstance, EnqueueOptions
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from modelcert.domain import CertificationStatus, JobKind, Priority
from modelcert.errors import UserError
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.queues import APP_VERSION, SCHEDULE_QUEUE
from modelcert.obs import metrics
from modelcert.obs.logging import log_event
from modelcert.settings import Settings
from modelcert.store.db import transaction
from modelcert.store.models import Certification, Deployment, Provider, utcnow

SCHEDULE_NAME = "modelcert-recertify"
TICK_WORKFLOW_NAME = "recertify_due"
REQUESTER = "scheduler"

SCHEDULER_CLASS = "RecertifyScheduler"
SCHEDULER_INSTANCE = "recertify"

VALID_STATUSES = (CertificationStatus.CERTIFIED.value, CertificationStatus.QUALITY_WARNING.value)
# An unavailable deployment ends FAILED (badge UNAVAILABLE); ERROR is our own fault and
# INCOMPLETE ran out of time: both are tried again too. CANCELLED is left alone: someone
# stopped it on purpose.
FAILED_STATUSES = (
    CertificationStatus.FAILED.value,
    CertificationStatus.ERROR.value,
    CertificationStatus.INCOMPLETE.value,
)
# Bounds the lists in the tick's log line; the counts are always complete.
LOGGED_TARGETS = 50


@dataclass(frozen=True)
class RecertifyPolicy:
    """When one provider's certifications are due again."""

    enabled: bool
    window: timedelta
    failed_after: timedelta


def recertify_policy(config: Mapping[str, Any], settings: Settings) -> RecertifyPolicy:
    """The settings, overridden by the provider config's `recertify` object.

    `{"recertify": {"enabled": false}}`, `window_h`, `failed_after_h`; a bad value is a
    UserError naming the key."""
    override = config.get("recertify", {})
    if not isinstance(override, Mapping):
        raise UserError("config.recertify must be an object", field="config.recertify")
    unknown = sorted(set(override) - {"enabled", "window_h", "failed_after_h"})
    if unknown:
        raise UserError(
            f"config.recertify: unknown key {unknown[0]!r} "
            "(known: enabled, window_h, failed_after_h)",
            field=f"config.recertify.{unknown[0]}",
        )
    enabled = override.get("enabled", True)
    if not isinstance(enabled, bool):
        raise UserError(
            "config.recertify.enabled must be true or false", field="config.recertify.enabled"
        )
    return RecertifyPolicy(
        enabled=enabled,
        window=timedelta(hours=_hours(override, "window_h", settings.recertify_window_h)),
        failed_after=timedelta(
            hours=_hours(override, "failed_after_h", settings.recertify_failed_after_h)
        ),
    )


def _hours(override: Mapping[str, Any], key: str, default: float) -> float:
    value = override.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UserError(
            f"config.recertify.{key} must be a number of hours > 0, not {value!r}",
            field=f"config.recertify.{key}",
        )
    return float(value)


@dataclass(frozen=True)
class DueCertification:
    deployment_id: int
    deployment: str  # provider-slug/model-id
    region: str
    reason: str  # expiring (still valid) | expired | failed

    @property
    def label(self) -> str:
        return f"{self.deployment}@{self.region}"


@dataclass
class RecertifyReport:
    """What one pass found due, and what became of it."""

    now: datetime
    due: list[DueCertification] = field(default_factory=list)
    queued: list[DueCertification] = field(default_factory=list)
    refused: list[DueCertification] = field(default_factory=list)
    job_id: str | None = None
    # Providers whose `recertify` config is invalid: skipped, "slug: message".
    misconfigured: list[str] = field(default_factory=list)

    def log_fields(self) -> dict[str, Any]:
        return {
            "due": len(self.due),
            "due_by_reason": dict(Counter(d.reason for d in self.due)),
            "queued": len(self.queued),
            "refused": len(self.refused),
            "job_id": self.job_id,
            "queued_targets": [d.label for d in self.queued[:LOGGED_TARGETS]],
            "refused_targets": [d.label for d in self.refused[:LOGGED_TARGETS]],
            "misconfigured": self.misconfigured,
        }


def select_due(session: Session, settings: Settings, now: datetime) -> RecertifyReport:
    """The certifications of active deployments and providers that are due at `now`."""
    report = RecertifyReport(now=now)
    conditions: list[ColumnElement[bool]] = []
    providers = session.scalars(
        select(Provider).where(Provider.active.is_(True)).order_by(Provider.slug)
    )
    for provider in providers:
        try:
            policy = recertify_policy(provider.config or {}, settings)
        except UserError as exc:
            report.misconfigured.append(f"{provider.slug}: {exc.message}")
            continue
        if policy.enabled:
            conditions.append(_due_condition(provider.id, policy, now))
    if not conditions:
        return report
    query = (
        select(Certification)
        .join(Deployment, Certification.deployment_id == Deployment.id)
        .where(Deployment.active.is_(True), or_(*conditions))
        .order_by(Certification.id)
    )
    for certification in session.scalars(query):
        deployment = certification.deployment
        # A region the provider no longer serves would make the enqueue refuse the batch.
        if certification.region not in deployment.provider.regions:
            continue
        report.due.append(
            DueCertification(
                deployment_id=deployment.id,
                deployment=f"{deployment.provider.slug}/{deployment.provider_model_id}",
                region=certification.region,
                reason=_reason(certification, now),
            )
        )
    return report


def _due_condition(provider_id: int, policy: RecertifyPolicy, now: datetime) -> ColumnElement[bool]:
    last_run_ended = func.coalesce(Certification.completed_at, Certification.updated_at)
    return and_(
        Deployment.provider_id == provider_id,
        or_(
            and_(
                Certification.status.in_(VALID_STATUSES),
                Certification.expires_at <= now + policy.window,
            ),
            and_(
                Certification.status.in_(FAILED_STATUSES),
                last_run_ended <= now - policy.failed_after,
            ),
        ),
    )


def _reason(certification: Certification, now: datetime) -> str:
    if certification.status in FAILED_STATUSES:
        return "failed"
    assert certification.expires_at is not None
    return "expiring" if certification.expires_at > now else "expired"


def recertify_due(
    factory: sessionmaker[Session],
    settings: Settings,
    enqueuer: Enqueuer | None,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    requested_by: str = REQUESTER,
) -> RecertifyReport:
    """Select what is due and (unless a dry run) queue it as one low-priority job."""
    with transaction(factory) as session:
        report = select_due(session, settings, now or utcnow())
    if not report.due or dry_run:
        return report
    if enqueuer is None:
        raise RuntimeError("recertify_due needs an Enqueuer unless dry_run")
    result = enqueuer.enqueue(
        factory,
        [(d.deployment_id, d.region) for d in report.due],
        kind=JobKind.RECERTIFY,
        priority=Priority.LOW,
        created_by=requested_by,
        scope={
            "deployments": sorted({d.deployment_id for d in report.due}),
            "regions": sorted({d.region for d in report.due}),
            "trigger": "schedule",
        },
    )
    report.job_id = result.job_id
    queued = {(q.deployment_id, q.region) for q in result.queued}
    for due in report.due:
        outcome = "queued" if (due.deployment_id, due.region) in queued else "refused"
        (report.queued if outcome == "queued" else report.refused).append(due)
        metrics.record_recertification(due.reason, outcome)
    return report


# --- the DBOS schedule --------------------------------------------------------------


@DBOS.dbos_class(SCHEDULER_CLASS)
class RecertifyScheduler(DBOSConfiguredInstance):
    """A worker's re-certification duty: what one tick does, with the worker's database,
    settings and enqueuer."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        enqueuer: Enqueuer,
        executor_id: str,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.enqueuer = enqueuer
        self.executor_id = executor_id
        super().__init__(config_name=SCHEDULER_INSTANCE)

    @DBOS.workflow(name="recertify_run")
    async def run(self, scheduled_at: str) -> dict[str, Any]:
        summary = await self.enqueue_due(scheduled_at)
        return {**summary, "notifications": await self.notify_check(scheduled_at)}

    @DBOS.step(name="notify_check", retries_allowed=True, max_attempts=3)
    async def notify_check(self, scheduled_at: str) -> int:
        """The tick's notification checks (expiring certifications, degraded latency) at
        the tick's own time; how many deliveries they queued (each event once: its
        deliveries are unique per subscription)."""
        return await asyncio.to_thread(
            check_notifications, self.factory, self.enqueuer, datetime.fromisoformat(scheduled_at)
        )

    @DBOS.step(name="enqueue_due", retries_allowed=True, max_attempts=3)
    async def enqueue_due(self, scheduled_at: str) -> dict[str, Any]:
        """One tick's work; its summary is what DBOS checkpoints."""
        if not self.settings.recertify_enabled:
            log_event("recertify_tick", scheduled_at=scheduled_at, skipped="schedule is off")
            return {"skipped": True}
        report = await asyncio.to_thread(recertify_due, self.factory, self.settings, self.enqueuer)
        fields = report.log_fields()
        log_event(
            "recertify_tick", scheduled_at=scheduled_at, executor_id=self.executor_id, **fields
        )
        return fields


def check_notifications(factory: sessionmaker[Session], enqueuer: Enqueuer, now: datetime) -> int:
    """Queue the deliveries of the periodic events due at `now`; how many were queued."""
    from modelcert.jobs.notify_events import Notifier

    with transaction(factory) as session:
        created = Notifier(enqueuer.client).check(session, now)
    if created:
        log_event("notifications_queued", count=len(created), at=now.isoformat())
    return len(created)


def _scheduler_options() -> EnqueueOptions:
    return {
        "workflow_name": "recertify_run",
        "class_name": SCHEDULER_CLASS,
        "instance_name": SCHEDULER_INSTANCE,
        "queue_name": SCHEDULE_QUEUE,
        "app_version": APP_VERSION,
    }


@DBOS.workflow(name=TICK_WORKFLOW_NAME)
def recertify_tick(scheduled_at: datetime, context: Any) -> None:
    """The scheduled workflow: DBOS passes the tick's time and the schedule's context.
    Its child (one per tick, its id derived from the tick's) does the work."""
    del context
    DBOS.enqueue_workflow_with_options(_scheduler_options(), scheduled_at.isoformat())


def install_schedule(settings: Settings) -> None:
    """After DBOS.launch(): make the stored schedule match MODELCERT_RECERTIFY_SCHEDULE.

    Every worker calls this; give them all the same setting (the last one started wins)."""
    if not settings.recertify_enabled:
        # The schedule is stored in the database: leaving it would keep it firing.
        DBOS.delete_schedule(SCHEDULE_NAME)
        log_event("recertify_schedule", schedule="off")
        return
    current = DBOS.get_schedule(SCHEDULE_NAME)
    if (
        current is None
        or current["schedule"] != settings.recertify_schedule
        or current["workflow_name"] != TICK_WORKFLOW_NAME
    ):
        # Replacing an identical schedule would restart every worker's schedule thread.
        DBOS.apply_schedules(
            [
                {
                    "schedule_name": SCHEDULE_NAME,
                    "workflow_fn": recertify_tick,
                    "schedule": settings.recertify_schedule,
                }
            ]
        )
    log_event(
        "recertify_schedule",
        schedule=settings.recertify_schedule,
        window_h=settings.recertify_window_h,
        failed_after_h=settings.recertify_failed_after_h,
    )
