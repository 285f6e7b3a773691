"""What the dashboard pages show, read from the database (read-only)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, raiseload

from modelcert.api import queries
from modelcert.domain import CertificationStatus
from modelcert.jobs.control import paused_regions
from modelcert.jobs.queue_stats import queue_stats
from modelcert.settings import Settings
from modelcert.store.models import (
    Certification,
    CertificationRun,
    Deployment,
    Job,
    Provider,
    TestResultRow,
)
from modelcert.store.worker_models import WorkerHeartbeat

HOURS_SHOWN = 24
# Runs that ended without a valid verdict and say why (INCOMPLETE: out of time).
_FAILED = (
    CertificationStatus.FAILED.value,
    CertificationStatus.ERROR.value,
    CertificationStatus.INCOMPLETE.value,
)


def label(deployment: Deployment) -> str:
    return f"{deployment.provider.slug}/{deployment.provider_model_id}"


@dataclass(frozen=True)
class Answered:
    """Latency of every test that got an answer, passed or not (a run's own figures count
    passed tests only: a run whose every answer failed a check has none)."""

    count: int = 0
    avg: float | None = None
    max: float | None = None


def answered_latency(tests: Iterable[TestResultRow]) -> Answered:
    latencies = [t.latency_ms for t in tests if t.latency_ms is not None]
    if not latencies:
        return Answered()
    return Answered(len(latencies), sum(latencies) / len(latencies), max(latencies))


@dataclass
class HourBucket:
    start: datetime
    finished: int = 0
    failed: int = 0

    @property
    def failure_rate(self) -> float:
        return self.failed / self.finished if self.finished else 0.0


@dataclass(frozen=True)
class Throttling:
    """How a region's rate limits slowed its tests."""

    waited_s: float = 0.0
    tests: int = 0  # tests that waited for a rate limit (and then passed or not)
    retries: int = 0  # retries made by those tests
    failed: int = 0  # tests that failed on RATE_LIMIT in the end
    answers: int = 0  # RATE_LIMIT answers (429s) the tests got


@dataclass
class RegionLoad:
    region: str
    counts: dict[str, int]
    paused: bool
    paused_by: str | None = None
    throttling: Throttling = Throttling()


@dataclass
class Overview:
    by_status: dict[str, int]
    valid: int
    queue_totals: dict[str, int]
    regions: list[RegionLoad]
    workers: list[dict[str, Any]]
    hours: list[HourBucket] = field(default_factory=list)

    @property
    def busiest_hour(self) -> int:
        return max((h.finished for h in self.hours), default=0)


def overview(session: Session, settings: Settings, now: datetime) -> Overview:
    stats = queue_stats(session, settings)
    by_status, valid = queries.certification_counts(session, now)
    paused = paused_regions(session)
    served = {r for p in queries.active_providers(session) for r in p.regions}
    throttling = _throttling(session, now - timedelta(hours=HOURS_SHOWN))
    regions = []
    for region in sorted(served | set(stats["byRegion"]) | set(paused)):
        pause = paused.get(region)
        regions.append(
            RegionLoad(
                region=region,
                counts=stats["byRegion"].get(region, {}),
                paused=pause is not None,
                paused_by=pause.paused_by if pause else None,
                throttling=throttling.get(region, Throttling()),
            )
        )
    totals = {k: v for k, v in stats.items() if isinstance(v, int) and k != "paused"}
    return Overview(
        by_status=by_status,
        valid=valid,
        queue_totals=totals,
        regions=regions,
        workers=_workers(session, settings, now),
        hours=_hours(session, now),
    )


# A worker that stopped or died stays listed this long after it was last heard from.
WORKERS_KEPT = timedelta(hours=1)


def _workers(session: Session, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """Workers heard from lately: alive, silent (no heartbeat for longer than the reaper
    waits, not yet reaped), dead (reaped: its work requeued) or stopped (a clean stop),
    each with when it was last seen; alive ones first."""
    rows = session.scalars(
        select(WorkerHeartbeat)
        .where(
            WorkerHeartbeat.stopped_at.is_(None)
            | (WorkerHeartbeat.heartbeat_at >= now - WORKERS_KEPT)
        )
        .order_by(WorkerHeartbeat.executor_id)
    )
    workers = []
    for w in rows:
        age = max(0.0, (now - w.heartbeat_at).total_seconds())
        if w.stopped_at is None:
            state = "alive" if age <= settings.worker_dead_after_s else "silent"
        else:
            state = "dead" if (w.note or "").startswith("silent") else "stopped"
        workers.append(
            {
                "executor_id": w.executor_id,
                "hostname": w.hostname,
                "regions": w.regions,
                "in_flight": w.in_flight if w.stopped_at is None else 0,
                "concurrency": w.concurrency,
                "heartbeat_age_s": age,
                "last_seen": w.heartbeat_at,
                "stopped_at": w.stopped_at,
                "state": state,
                "note": w.note,
            }
        )
    order = {"alive": 0, "silent": 1, "dead": 2, "stopped": 3}
    return sorted(workers, key=lambda w: (order[w["state"]], w["executor_id"]))


def _hours(session: Session, now: datetime) -> list[HourBucket]:
    top = now.replace(minute=0, second=0, microsecond=0)
    first = top - timedelta(hours=HOURS_SHOWN - 1)
    buckets = [HourBucket(first + timedelta(hours=i)) for i in range(HOURS_SHOWN)]
    rows = session.execute(
        select(CertificationRun.completed_at, CertificationRun.status).where(
            CertificationRun.completed_at >= first
        )
    )
    for completed_at, status in rows:
        if completed_at is None:
            continue
        index = int((completed_at - first).total_seconds() // 3600)
        if 0 <= index < HOURS_SHOWN:
            buckets[index].finished += 1
            buckets[index].failed += status in _FAILED
    return buckets


def _throttling(session: Session, since: datetime) -> dict[str, Throttling]:
    """Per region, over the tests of runs started since `since`: seconds waited for a rate
    limit (Retry-After holds and the pacing they set off), tests that waited, the retries
    those tests made, tests that failed on RATE_LIMIT in the end, and RATE_LIMIT answers."""
    waited = TestResultRow.throttled_s > 0
    rows = session.execute(
        select(
            CertificationRun.region,
            func.coalesce(func.sum(TestResultRow.throttled_s), 0.0),
            func.count(TestResultRow.id).filter(waited),
            func.coalesce(func.sum(TestResultRow.retries).filter(waited), 0),
            func.count(TestResultRow.id).filter(TestResultRow.error_category == "RATE_LIMIT"),
            func.coalesce(func.sum(TestResultRow.rate_limited), 0),
        )
        .join(CertificationRun, CertificationRun.id == TestResultRow.run_id)
        .where(CertificationRun.started_at >= since)
        .group_by(CertificationRun.region)
    )
    return {
        region: Throttling(float(seconds), int(tests), int(retries), int(failed), int(answers))
        for region, seconds, tests, retries, failed, answers in rows
    }


@dataclass
class MatrixRow:
    deployment: Deployment
    cells: dict[str, Certification]

    @property
    def failed(self) -> int:
        return sum(c.status in _FAILED for c in self.cells.values())

    @property
    def worst_rating(self) -> float:
        ratings = [c.rating for c in self.cells.values() if c.rating is not None]
        return min(ratings, default=6.0)  # never rated: after every rated one


NEVER = "NEVER"  # the status filter's "never certified here"
MATRIX_SORTS = {
    "name": "provider / model",
    "failed": "most failed cells first",
    "rating": "lowest rating first",
    "vendor": "vendor",
}


@dataclass(frozen=True)
class MatrixFilters:
    """The matrix page's filter form; empty strings mean "any"."""

    q: str = ""
    provider: str = ""
    vendor: str = ""
    status: str = ""
    region: str = ""
    sort: str = "name"

    def active(self) -> dict[str, str]:
        values = {
            "q": self.q,
            "provider": self.provider,
            "vendor": self.vendor,
            "status": self.status,
            "region": self.region,
            "sort": "" if self.sort == "name" else self.sort,
        }
        return {k: v for k, v in values.items() if v}


@dataclass
class Matrix:
    regions: list[str]
    rows: list[MatrixRow]
    deployments: int  # active deployments, before the filters
    all_regions: list[str]
    providers: list[str]
    vendors: list[str]


def matrix(session: Session, filters: MatrixFilters | None = None) -> Matrix:
    """Every active deployment × the regions its provider serves, with current verdicts,
    narrowed by `filters` (provider, vendor, a status some shown cell has, one region, a
    search in the shown name or the model's name) and sorted."""
    filters = filters or MatrixFilters()
    deployments = list(
        session.scalars(
            select(Deployment)
            .join(Provider)
            .where(Deployment.active.is_(True), Provider.active.is_(True))
            .order_by(Provider.slug, Deployment.provider_model_id)
        ).unique()
    )
    all_regions = sorted({r for d in deployments for r in d.provider.regions})
    providers = sorted({d.provider.slug for d in deployments})
    vendors = sorted({d.model.vendor for d in deployments})
    cells: dict[int, dict[str, Certification]] = {}
    # The cells alone: their deployments are those above (no join per certification).
    query = select(Certification).options(raiseload(Certification.deployment))
    if filters.region:
        query = query.where(Certification.region == filters.region)
    for cert in session.scalars(query):
        cells.setdefault(cert.deployment_id, {})[cert.region] = cert
    regions = [r for r in all_regions if not filters.region or r == filters.region]
    needle = filters.q.lower()
    rows = []
    for d in deployments:
        served = [r for r in regions if r in d.provider.regions]
        if filters.region and not served:
            continue
        if filters.provider and d.provider.slug != filters.provider:
            continue
        if filters.vendor and d.model.vendor != filters.vendor:
            continue
        if needle and needle not in label(d).lower() and needle not in d.model.name.lower():
            continue
        row = MatrixRow(d, {r: c for r, c in cells.get(d.id, {}).items() if r in served})
        if filters.status:
            statuses = {row.cells[r].status if r in row.cells else NEVER for r in served}
            if filters.status not in statuses:
                continue
        rows.append(row)
    if filters.sort == "failed":
        rows.sort(key=lambda row: -row.failed)
    elif filters.sort == "rating":
        rows.sort(key=lambda row: row.worst_rating)
    elif filters.sort == "vendor":
        rows.sort(key=lambda row: row.deployment.model.vendor.lower())
    return Matrix(regions, rows, len(deployments), all_regions, providers, vendors)


@dataclass(frozen=True)
class JobFilters:
    """The Jobs page's search form; empty strings mean "any"."""

    q: str = ""
    provider: str = ""
    model: str = ""
    region: str = ""
    status: str = ""
    requester: str = ""
    date_from: date | None = None
    date_to: date | None = None

    def active(self) -> dict[str, str]:
        values = {
            "q": self.q,
            "provider": self.provider,
            "model": self.model,
            "region": self.region,
            "status": self.status,
            "requester": self.requester,
            "date_from": self.date_from.isoformat() if self.date_from else "",
            "date_to": self.date_to.isoformat() if self.date_to else "",
        }
        return {k: v for k, v in values.items() if v}


def _touches(*conditions: Any) -> Any:
    """Jobs with a run, or a certification, matching the conditions."""
    by_run = exists(
        select(CertificationRun.id)
        .join(Deployment, Deployment.id == CertificationRun.deployment_id)
        .join(Provider)
        .where(CertificationRun.job_id == Job.id, *conditions)
    )
    by_cert = exists(
        select(Certification.id)
        .join(Deployment, Deployment.id == Certification.deployment_id)
        .join(Provider)
        .where(Certification.job_id == Job.id, *conditions)
    )
    return by_run | by_cert


def _named(text: str) -> Any:
    """Deployments whose shown name (`provider/model-id`) contains `text`: `sim/haze`
    finds what the dashboard calls sim/haze-empty, `haze` too."""
    shown = Provider.slug + "/" + Deployment.provider_model_id
    return shown.contains(text, autoescape=True)


def job_page(
    session: Session, filters: JobFilters, paging: queries.Paging
) -> tuple[list[Job], int]:
    """Jobs matching the filters, newest first: one page and the number of matches."""
    query = select(Job)
    if filters.q:
        query = query.where(
            Job.id.startswith(filters.q, autoescape=True)
            | Job.created_by.contains(filters.q, autoescape=True)
            | _touches(_named(filters.q))
        )
    if filters.provider:
        query = query.where(_touches(Provider.slug == filters.provider))
    if filters.model:
        query = query.where(_touches(_named(filters.model)))
    if filters.region:
        region = filters.region
        query = query.where(
            exists(
                select(CertificationRun.id).where(
                    CertificationRun.job_id == Job.id, CertificationRun.region == region
                )
            )
            | exists(
                select(Certification.id).where(
                    Certification.job_id == Job.id, Certification.region == region
                )
            )
        )
    if filters.status:
        query = query.where(Job.status == filters.status)
    if filters.requester:
        query = query.where(Job.created_by == filters.requester)
    if filters.date_from:
        query = query.where(Job.created_at >= _midnight(filters.date_from))
    if filters.date_to:
        query = query.where(Job.created_at < _midnight(filters.date_to + timedelta(days=1)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Job.created_at.desc(), Job.id).offset(paging.offset).limit(paging.page_size)
    )
    return list(rows), total


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def filter_choices(session: Session) -> dict[str, list[str]]:
    """Values offered by the Jobs page's filter menus."""
    return {
        "providers": list(session.scalars(select(Provider.slug).order_by(Provider.slug))),
        "regions": sorted({r for p in session.scalars(select(Provider)) for r in p.regions}),
        "requesters": [
            r
            for r in session.scalars(select(Job.created_by).distinct().order_by(Job.created_by))
            if r
        ],
    }


def job_state(job: Job) -> str:
    """What a job's status says on the dashboard: a job that finished with failed
    certifications is COMPLETED_WITH_FAILURES, not a green COMPLETED."""
    if job.status == "COMPLETED" and job.failed:
        return "COMPLETED_WITH_FAILURES"
    return job.status


@dataclass
class JobRun:
    run: CertificationRun
    deployment: Deployment


def job_runs(session: Session, job_id: str) -> list[JobRun]:
    rows = session.execute(
        select(CertificationRun, Deployment)
        .join(Deployment, Deployment.id == CertificationRun.deployment_id)
        .where(CertificationRun.job_id == job_id)
        .order_by(CertificationRun.id)
    )
    return [JobRun(run, deployment) for run, deployment in rows]


def timeline(job: Job, runs: list[JobRun]) -> list[tuple[datetime, str]]:
    """What happened to a job, in order."""
    events: list[tuple[datetime, str]] = [(job.created_at, f"queued by {job.created_by or '?'}")]
    if job.started_at:
        events.append((job.started_at, "first certification started"))
    for item in runs:
        name = f"{label(item.deployment)} in {item.run.region}"
        if item.run.started_at:
            worker = f" on {item.run.executor_id}" if item.run.executor_id else ""
            events.append((item.run.started_at, f"{name} started{worker}"))
        if item.run.completed_at:
            events.append((item.run.completed_at, f"{name}: {item.run.status}"))
    if job.completed_at:
        events.append((job.completed_at, f"job {job.status.lower()}"))
    return sorted(events, key=lambda e: e[0])
