"""The events, found where they happen, each under a deterministic key.

`Notifier` is called by `RunStore` in the transaction that stores a verdict or closes a
job (the engine's durable `finish` step), and by the schedule's tick for the checks
(`expiring_events`, `degraded_events`). It writes the delivery rows and queues their
workflows in that same transaction: the event, its deliveries and their workflows
commit together or not at all, and a step run twice finds its rows already there (unique
on subscription × key) and queues nothing more.

Keys: `verdict.changed:<run id>`, `job.finished:<job id>`,
`certification.expiring:<certification id>:<expires at>` (once per verdict),
`latency.degraded:<deployment id>@<region>:<UTC date>` (at most once a day per pair)."""

from __future__ import annotations

from datetime import datetime, timedelta

from dbos import DBOSClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelcert.domain import CertificationStatus
from modelcert.jobs.notify import enqueue_deliveries
from modelcert.reports.trends import recent_pairs
from modelcert.store import notifications
from modelcert.store.models import Certification, CertificationRun, Deployment, Job, utcnow
from modelcert.store.notifications import Event, Subscription

VERDICTS = (
    CertificationStatus.CERTIFIED.value,
    CertificationStatus.QUALITY_WARNING.value,
    CertificationStatus.FAILED.value,
)
RECENT = timedelta(hours=24)
BASELINE = timedelta(days=7)
# The most pairs a degradation check compares (the most recently run first).
MAX_PAIRS = 10_000


def verdict_changed(previous: str | None, current: str) -> bool:
    """A change worth telling: from a valid verdict to FAILED, or back (recovered). The
    first verdict of a pair, and CERTIFIED ↔ QUALITY_WARNING, are not."""
    if previous not in VERDICTS or current not in VERDICTS:
        return False
    valid = CertificationStatus(previous).is_valid_verdict
    return valid != CertificationStatus(current).is_valid_verdict


def _label(deployment: Deployment) -> str:
    return f"{deployment.provider.slug}/{deployment.provider_model_id}"


def _pair_data(deployment: Deployment, region: str) -> dict[str, object]:
    return {
        "deployment_id": deployment.id,
        "deployment": _label(deployment),
        "provider": deployment.provider.slug,
        "region": region,
    }


class Notifier:
    """Turns what the store just wrote into delivery rows and queued workflows."""

    def __init__(self, client: DBOSClient) -> None:
        self.client = client

    def emit(
        self, session: Session, event: Event, targets: list[Subscription] | None = None
    ) -> list[int]:
        """Delivery rows for the subscriptions that want `event` and have none for it
        yet, their workflows queued; in the caller's transaction."""
        created = notifications.queue_event(session, event, targets)
        enqueue_deliveries(self.client, session, created)
        return created

    def run_finished(self, session: Session, run: CertificationRun) -> list[int]:
        """`verdict.changed` when this run's verdict flips the pair's previous one. On every
        worker's hot path: one query when no one subscribes to it."""
        wanted = _subscribed(session, notifications.VERDICT_CHANGED)
        if not wanted or run.status not in VERDICTS:
            return []
        previous = session.scalar(
            select(CertificationRun.status)
            .where(
                CertificationRun.certification_id == run.certification_id,
                CertificationRun.id != run.id,
                CertificationRun.status.in_(VERDICTS),
            )
            .order_by(CertificationRun.completed_at.desc(), CertificationRun.id.desc())
            .limit(1)
        )
        if not verdict_changed(previous, run.status):
            return []
        deployment = session.get(Deployment, run.deployment_id)
        assert deployment is not None
        event = Event(
            key=f"{notifications.VERDICT_CHANGED}:{run.id}",
            kind=notifications.VERDICT_CHANGED,
            occurred_at=run.completed_at or utcnow(),
            data={
                **_pair_data(deployment, run.region),
                "from": previous,
                "to": run.status,
                "recovered": CertificationStatus(run.status).is_valid_verdict,
                "run_id": run.id,
                "job_id": run.job_id,
                "score": run.score,
                "error_category": run.error_category,
            },
        )
        return self.emit(session, event, wanted)

    def job_finished(self, session: Session, job_id: str) -> list[int]:
        """`job.finished`, once per job (its key is the job's id)."""
        wanted = _subscribed(session, notifications.JOB_FINISHED)
        if not wanted:
            return []
        job = session.get(Job, job_id)
        assert job is not None
        event = Event(
            key=f"{notifications.JOB_FINISHED}:{job.id}",
            kind=notifications.JOB_FINISHED,
            occurred_at=job.completed_at or utcnow(),
            data={
                "job_id": job.id,
                "job_kind": job.kind,
                "status": job.status,
                "total": job.total,
                "succeeded": job.succeeded,
                "failed": job.failed,
                "created_by": job.created_by,
            },
        )
        return self.emit(session, event, wanted)

    def check(self, session: Session, now: datetime) -> list[int]:
        """The periodic events: expiring certifications and degraded latency."""
        wanted = notifications.subscriptions(session, active_only=True)
        created: list[int] = []
        for event, subscription in expiring_events(session, wanted, now):
            created += self.emit(session, event, [subscription])
        for event, subscription in degraded_events(session, wanted, now):
            created += self.emit(session, event, [subscription])
        return created


def _subscribed(session: Session, kind: str) -> list[Subscription]:
    return [s for s in notifications.subscriptions(session, active_only=True) if kind in s.events]


def expiring_events(
    session: Session, wanted: list[Subscription], now: datetime
) -> list[tuple[Event, Subscription]]:
    """For each subscription to `certification.expiring`, the valid certifications that
    expire within its `expiring_within_h`."""
    found: list[tuple[Event, Subscription]] = []
    for subscription in wanted:
        if notifications.CERTIFICATION_EXPIRING not in subscription.events:
            continue
        horizon = now + timedelta(hours=subscription.expiring_within_h)
        rows = session.scalars(
            select(Certification)
            .where(Certification.valid_clause(now), Certification.expires_at <= horizon)
            .order_by(Certification.id)
        )
        for certification in rows:
            expires_at = certification.expires_at
            assert expires_at is not None
            event = Event(
                key=(
                    f"{notifications.CERTIFICATION_EXPIRING}:{certification.id}:"
                    f"{expires_at.isoformat()}"
                ),
                kind=notifications.CERTIFICATION_EXPIRING,
                occurred_at=now,
                data={
                    **_pair_data(certification.deployment, certification.region),
                    "status": certification.status,
                    "expires_at": expires_at.isoformat(),
                    "hours_left": round((expires_at - now).total_seconds() / 3600, 2),
                },
            )
            found.append((event, subscription))
    return found


def degraded_events(
    session: Session, wanted: list[Subscription], now: datetime
) -> list[tuple[Event, Subscription]]:
    """For each subscription to `latency.degraded`, the pairs whose latency p95 over the
    last 24 h is more than its `degraded_factor` times their p95 over the 7 days before."""
    subscribed = [s for s in wanted if notifications.LATENCY_DEGRADED in s.events]
    if not subscribed:
        return []
    recent = recent_pairs(session, now=now, span=RECENT, limit=MAX_PAIRS).pairs
    baseline = {
        (pair.deployment, pair.region): pair.latency_p95_ms
        for pair in recent_pairs(session, now=now - RECENT, span=BASELINE, limit=MAX_PAIRS).pairs
    }
    labels = {_label(d): d for d in session.scalars(select(Deployment)).unique()}
    found: list[tuple[Event, Subscription]] = []
    for pair in recent:
        before = baseline.get((pair.deployment, pair.region))
        deployment = labels.get(pair.deployment)
        if pair.latency_p95_ms is None or not before or deployment is None:
            continue
        ratio = pair.latency_p95_ms / before
        event = Event(
            key=(
                f"{notifications.LATENCY_DEGRADED}:{deployment.id}@{pair.region}:"
                f"{now.date().isoformat()}"
            ),
            kind=notifications.LATENCY_DEGRADED,
            occurred_at=now,
            data={
                **_pair_data(deployment, pair.region),
                "p95_ms": round(pair.latency_p95_ms, 1),
                "baseline_p95_ms": round(before, 1),
                "ratio": round(ratio, 2),
            },
        )
        found.extend((event, s) for s in subscribed if ratio > s.degraded_factor)
    return found
