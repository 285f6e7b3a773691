"""What certification cost, read from the runs: per job, and per day or month by provider
and region, with their totals.

A run's cost is its `cost_usd` (the sum of its tests' costs, judges included, set when it
closes). A run without one is never counted as free: a closed run that made calls with no
price known is *unpriced* and counted apart; a run still RUNNING is counted as running;
a run that made no call (refused by a budget, cancelled while queued) costs nothing to
count. Periods are UTC days (`2025-10-03`) or months (`2025-10`), bucketed in SQL on
SQLite and PostgreSQL alike, so that a month of runs is a few grouped rows, not every
run sent to Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, exists, func, select
from sqlalchemy.orm import Session

from modelcert.cost.estimate import HISTORY_RUNS, RunUsage, estimate_calls
from modelcert.domain import CertificationStatus, TestOutcome
from modelcert.store.models import CertificationRun, Deployment, Provider, TestResultRow

Period = Literal["day", "month"]
PERIODS: tuple[str, ...] = ("day", "month")
_NOT_CALLED = (TestOutcome.SKIPPED.value, TestOutcome.NOT_RUN.value)
# Runs whose verdict came from the whole planned battery: what an estimate learns from.
_COMPLETED = (
    CertificationStatus.CERTIFIED.value,
    CertificationStatus.QUALITY_WARNING.value,
    CertificationStatus.FAILED.value,
)


@dataclass(frozen=True)
class CostLine:
    """The runs of one period × provider × region (None: all of them) and their cost."""

    period: str | None
    provider: str | None
    region: str | None
    runs: int = 0
    priced_runs: int = 0
    unpriced_runs: int = 0  # closed, made calls, no price known: cost unknown
    running: int = 0
    cost_usd: float | None = None  # of the priced runs; None when none is

    def plus(self, other: CostLine) -> CostLine:
        cost = (
            None
            if self.cost_usd is None and other.cost_usd is None
            else round((self.cost_usd or 0.0) + (other.cost_usd or 0.0), 8)
        )
        return CostLine(
            self.period if self.period == other.period else None,
            self.provider if self.provider == other.provider else None,
            self.region if self.region == other.region else None,
            self.runs + other.runs,
            self.priced_runs + other.priced_runs,
            self.unpriced_runs + other.unpriced_runs,
            self.running + other.running,
            cost,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "provider": self.provider,
            "region": self.region,
            "runs": self.runs,
            "pricedRuns": self.priced_runs,
            "unpricedRuns": self.unpriced_runs,
            "running": self.running,
            "costUsd": self.cost_usd,
        }


@dataclass(frozen=True)
class CostReport:
    by: str
    since: datetime | None
    until: datetime | None
    lines: list[CostLine]  # period ascending, then provider, region
    periods: list[CostLine] = field(default_factory=list)  # each period's total
    total: CostLine = field(default_factory=lambda: CostLine(None, None, None))

    def as_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "lines": [line.as_json() for line in self.lines],
            "periods": [line.as_json() for line in self.periods],
            "total": self.total.as_json(),
        }


def _period(session: Session, by: str) -> ColumnElement[str]:
    """`started_at` as its UTC day or month, as text, on this session's database."""
    started = CertificationRun.started_at
    if session.get_bind().dialect.name == "postgresql":
        pattern = "YYYY-MM-DD" if by == "day" else "YYYY-MM"
        return func.to_char(func.timezone("UTC", started), pattern)
    # SQLite keeps UTC datetimes as ISO text: `YYYY-MM-DD HH:MM:SS…`.
    return func.substr(started, 1, 10 if by == "day" else 7)


def _unpriced() -> ColumnElement[bool]:
    """A closed run without a cost that made calls: what it cost is not known."""
    called = exists().where(
        TestResultRow.run_id == CertificationRun.id, TestResultRow.outcome.not_in(_NOT_CALLED)
    )
    return and_(
        CertificationRun.cost_usd.is_(None),
        CertificationRun.status != CertificationStatus.RUNNING.value,
        called,
    )


def _counts() -> list[Any]:
    running = CertificationRun.status == CertificationStatus.RUNNING.value
    return [
        func.count(CertificationRun.id),
        func.count(CertificationRun.cost_usd),
        func.sum(case((_unpriced(), 1), else_=0)),
        func.sum(case((running, 1), else_=0)),
        func.sum(CertificationRun.cost_usd),
    ]


def _line(period: str | None, provider: str | None, region: str | None, row: Any) -> CostLine:
    runs, priced, unpriced, running, cost = row
    return CostLine(
        period,
        provider,
        region,
        int(runs or 0),
        int(priced or 0),
        int(unpriced or 0),
        int(running or 0),
        round(float(cost), 8) if cost is not None and priced else None,
    )


def cost_report(
    session: Session,
    *,
    by: str = "day",
    since: datetime | None = None,
    until: datetime | None = None,
    provider: str | None = None,
    region: str | None = None,
    job_id: str | None = None,
) -> CostReport:
    """The cost of the runs started from `since` (inclusive) to `until` (exclusive), per
    UTC day or month (`by`) × provider slug × region, with each period's and the whole
    total; only one provider's, region's or job's runs when given."""
    if by not in PERIODS:
        raise ValueError(f"by must be one of {PERIODS}, not {by!r}")
    period = _period(session, by).label("period")
    query = (
        select(period, Provider.slug, CertificationRun.region, *_counts())
        .join(Deployment, Deployment.id == CertificationRun.deployment_id)
        .join(Provider, Provider.id == Deployment.provider_id)
        .where(CertificationRun.started_at.is_not(None))
        .group_by(period, Provider.slug, CertificationRun.region)
        .order_by(period, Provider.slug, CertificationRun.region)
    )
    if since is not None:
        query = query.where(CertificationRun.started_at >= since)
    if until is not None:
        query = query.where(CertificationRun.started_at < until)
    if provider is not None:
        query = query.where(Provider.slug == provider)
    if region is not None:
        query = query.where(CertificationRun.region == region)
    if job_id is not None:
        query = query.where(CertificationRun.job_id == job_id)
    lines = [_line(row[0], row[1], row[2], row[3:]) for row in session.execute(query)]
    periods: dict[str, CostLine] = {}
    total = CostLine(None, None, None)
    for line in lines:
        assert line.period is not None
        blank = CostLine(line.period, None, None)
        periods[line.period] = periods.get(line.period, blank).plus(
            CostLine(line.period, None, None, *_figures(line))
        )
        total = total.plus(CostLine(None, None, None, *_figures(line)))
    return CostReport(by, since, until, lines, list(periods.values()), total)


def _figures(line: CostLine) -> tuple[int, int, int, int, float | None]:
    return line.runs, line.priced_runs, line.unpriced_runs, line.running, line.cost_usd


def job_cost(session: Session, job_id: str) -> CostLine:
    """What a job's runs cost: its total (period, provider and region None)."""
    query = select(*_counts()).where(CertificationRun.job_id == job_id)
    return _line(None, None, None, session.execute(query).one())


@dataclass(frozen=True)
class RunCost:
    run_id: int
    deployment: str
    region: str
    status: str
    started_at: datetime | None
    cost_usd: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "deployment": self.deployment,
            "region": self.region,
            "status": self.status,
            "startedAt": self.started_at.isoformat() if self.started_at else None,
            "costUsd": self.cost_usd,
        }


def job_run_costs(session: Session, job_id: str) -> list[RunCost]:
    """Each run of a job with its cost, in the order they started."""
    query = (
        select(
            CertificationRun.id,
            Provider.slug,
            Deployment.provider_model_id,
            CertificationRun.region,
            CertificationRun.status,
            CertificationRun.started_at,
            CertificationRun.cost_usd,
        )
        .join(Deployment, Deployment.id == CertificationRun.deployment_id)
        .join(Provider, Provider.id == Deployment.provider_id)
        .where(CertificationRun.job_id == job_id)
        .order_by(CertificationRun.started_at, CertificationRun.id)
    )
    return [
        RunCost(run_id, f"{slug}/{model}", region, status, started, cost)
        for run_id, slug, model, region, status, started, cost in session.execute(query)
    ]


def recent_usage(
    session: Session,
    deployment_id: int,
    region: str | None = None,
    limit: int = HISTORY_RUNS,
) -> list[RunUsage]:
    """The tokens and calls of a deployment's latest completed runs (in `region` when
    given), newest first: what `cost.estimate.estimate_certification_cost` learns from."""
    runs = (
        select(CertificationRun.id)
        .where(
            CertificationRun.deployment_id == deployment_id,
            CertificationRun.status.in_(_COMPLETED),
            CertificationRun.started_at.is_not(None),
        )
        .order_by(CertificationRun.started_at.desc(), CertificationRun.id.desc())
        .limit(limit)
    )
    if region is not None:
        runs = runs.where(CertificationRun.region == region)
    run_ids: Sequence[int] = list(session.scalars(runs))
    if not run_ids:
        return []
    rows = session.execute(
        select(
            TestResultRow.run_id,
            TestResultRow.test_id,
            TestResultRow.input_tokens,
            TestResultRow.output_tokens,
        ).where(TestResultRow.run_id.in_(run_ids), TestResultRow.outcome.not_in(_NOT_CALLED))
    )
    tokens: dict[int, list[int]] = {}
    tests: dict[int, list[str]] = {}
    for run_id, test_id, tokens_in, tokens_out in rows:
        counted = tokens.setdefault(run_id, [0, 0])
        counted[0] += tokens_in or 0
        counted[1] += tokens_out or 0
        tests.setdefault(run_id, []).append(test_id)
    return [
        RunUsage(tokens[run_id][0], tokens[run_id][1], estimate_calls(tests[run_id]))
        for run_id in run_ids
        if run_id in tokens
    ]
