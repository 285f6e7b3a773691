"""How a deployment has behaved in a region over time: latency and TTFT percentiles, pass
rate and verdicts, per time bucket, from the stored runs and their test results.

The range is one of `RANGES` (24h, 7d, 30d, 90d); each has a bucket width chosen so that a
series has at most 30 points whatever the range (a 90 d range is 30 buckets of 3 days), so
an answer stays small however often the pair is re-certified. A run belongs to the bucket
its `started_at` falls in; the range ends at `now` (given, so that tests inject time).

Percentiles are computed here, in Python, from the latencies the query streams
(`percentile`: linear interpolation between the closest ranks, numpy's default), so that
SQLite and PostgreSQL give the same numbers: SQLite has no percentile function, and
PostgreSQL's `percentile_cont` would be a second implementation to keep equal.

Pass rate is what the verdict uses: passed / (passed + failed) tests; skipped and not-run
tests are not executed and count for neither. Latency and TTFT are of every test that has
one (a failed test that answered slowly is still a slow answer).

`cell_series` is the matrix's cheap variant: per deployment × region, a pass rate per
bucket from the runs' summary columns only (no test rows), for sparklines. `recent_pairs`
is the API /metrics' one: per deployment × region over one window, no buckets, at most a
given number of pairs, in one statement."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, Integer, and_, cast, func, literal, select
from sqlalchemy.orm import Session

from modelcert.domain import TestOutcome
from modelcert.errors import UserError
from modelcert.store.models import CertificationRun, Deployment, Provider, TestResultRow

SCHEMA = "modelcert.trends/1"


@dataclass(frozen=True)
class Range:
    span: timedelta
    bucket: timedelta

    @property
    def buckets(self) -> int:
        return math.ceil(self.span / self.bucket)


RANGES: dict[str, Range] = {
    "24h": Range(timedelta(hours=24), timedelta(hours=1)),
    "7d": Range(timedelta(days=7), timedelta(hours=6)),
    "30d": Range(timedelta(days=30), timedelta(days=1)),
    "90d": Range(timedelta(days=90), timedelta(days=3)),
}
DEFAULT_RANGE = "7d"


def parse_range(text: str, field_name: str = "range") -> Range:
    """The `Range` named `text`; a `UserError` naming `field_name` otherwise."""
    found = RANGES.get(text.strip().lower())
    if found is None:
        raise UserError(
            f"{field_name} {text!r} is not one of {', '.join(RANGES)}", field=field_name
        )
    return found


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) of `values`, by linear interpolation between the closest
    ranks (numpy's default, "linear"); None when there is no value."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return round(value, 3)


@dataclass
class _Acc:
    """What one bucket (or the whole range) has seen."""

    runs: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    passed: int = 0
    failed: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    last_status: str | None = None
    last_at: datetime | None = None

    def add_run(self, status: str, started_at: datetime) -> None:
        self.runs += 1
        self.verdicts[status] = self.verdicts.get(status, 0) + 1
        if self.last_at is None or started_at >= self.last_at:
            self.last_at, self.last_status = started_at, status

    def add_test(self, outcome: str | None, latency: float | None, ttft: float | None) -> None:
        if outcome == TestOutcome.PASSED:
            self.passed += 1
        elif outcome == TestOutcome.FAILED:
            self.failed += 1
        if latency is not None:
            self.latencies.append(latency)
        if ttft is not None:
            self.ttfts.append(ttft)

    @property
    def pass_ratio(self) -> float | None:
        """passed / (passed + failed), 0..1; None when no test was executed."""
        executed = self.passed + self.failed
        return self.passed / executed if executed else None

    def view(self) -> dict[str, Any]:
        ratio = self.pass_ratio
        return {
            "runs": self.runs,
            "latencyP50Ms": percentile(self.latencies, 50),
            "latencyP95Ms": percentile(self.latencies, 95),
            "ttftP50Ms": percentile(self.ttfts, 50),
            "ttftP95Ms": percentile(self.ttfts, 95),
            "testsPassed": self.passed,
            "testsFailed": self.failed,
            "passRate": round(ratio * 100, 2) if ratio is not None else None,
            "verdicts": dict(sorted(self.verdicts.items())),
            "lastStatus": self.last_status,
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def bucket_starts(window: Range, now: datetime) -> list[datetime]:
    """The start of every bucket of the range ending at `now`, oldest first."""
    start = now - window.span
    return [start + window.bucket * i for i in range(window.buckets)]


def _bucket_index(window: Range, start: datetime, at: datetime) -> int:
    index = int((at - start) / window.bucket)
    return min(max(index, 0), window.buckets - 1)


def series(
    session: Session, deployment_id: int, region: str, range_name: str, *, now: datetime
) -> dict[str, Any]:
    """The trend of one deployment in one region over `range_name`, ending at `now`."""
    window = parse_range(range_name)
    start = now - window.span
    deployment = session.get(Deployment, deployment_id)
    label = (
        f"{deployment.provider.slug}/{deployment.provider_model_id}"
        if deployment is not None
        else None
    )
    buckets = [_Acc() for _ in range(window.buckets)]
    total = _Acc()
    seen: set[int] = set()
    rows = session.execute(
        select(
            CertificationRun.id,
            CertificationRun.started_at,
            CertificationRun.status,
            TestResultRow.outcome,
            TestResultRow.latency_ms,
            TestResultRow.ttft_ms,
        )
        .outerjoin(TestResultRow, TestResultRow.run_id == CertificationRun.id)
        .where(
            CertificationRun.deployment_id == deployment_id,
            CertificationRun.region == region,
            CertificationRun.started_at >= start,
            CertificationRun.started_at < now,
        )
        .execution_options(yield_per=2_000)
    )
    for run_id, started_at, status, outcome, latency, ttft in rows:
        if started_at is None:  # never, by the WHERE; for the type checker
            continue
        acc = buckets[_bucket_index(window, start, started_at)]
        if run_id not in seen:
            seen.add(run_id)
            acc.add_run(status, started_at)
            total.add_run(status, started_at)
        acc.add_test(outcome, latency, ttft)
        total.add_test(outcome, latency, ttft)
    return {
        "schema": SCHEMA,
        "deploymentId": deployment_id,
        "deployment": label,
        "region": region,
        "range": range_name.strip().lower(),
        "since": _iso(start),
        "until": _iso(now),
        "bucketSeconds": int(window.bucket.total_seconds()),
        "summary": total.view(),
        "buckets": [
            {"start": _iso(at), **acc.view()}
            for at, acc in zip(bucket_starts(window, now), buckets, strict=True)
        ],
    }


# --- the matrix's sparklines ------------------------------------------------------------


def _bucket_column(session: Session, window: Range, start: datetime) -> Any:
    """The bucket index of a run, computed by the database: whole bucket widths between
    `start` and the run's `started_at` (never negative, by the range's WHERE)."""
    width = window.bucket.total_seconds()
    if session.get_bind().dialect.name == "sqlite":
        # Timestamps are text there; julianday reads them (to about 0.1 ms), and CAST
        # truncates, which is floor for what is not negative.
        since = func.julianday(CertificationRun.started_at) - func.julianday(
            literal(start, CertificationRun.started_at.type)
        )
        return cast(since * 86400.0 / width, Integer)
    # extract() gives numeric since PostgreSQL 14: float arithmetic is enough here.
    since = cast(func.extract("epoch", CertificationRun.started_at - start), Float)
    return cast(func.floor(since / width), Integer)


def cell_series(
    session: Session,
    range_name: str,
    *,
    now: datetime,
    deployment_ids: Iterable[int] | None = None,
    regions: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Per deployment × region (key `"<id>@<region>"`): the pass rate of each bucket (None
    where no run executed a test) and the last verdict, from the runs' summary columns.

    Summed per bucket by the database (two grouped queries), not run by run in Python: the
    matrix asks for a thousand cells on every refresh, and a week of 6-hourly runs is
    28,000 rows (200 ms to read one by one on SQLite, 10× less grouped)."""
    window = parse_range(range_name)
    start = now - window.span
    size = window.buckets
    in_range = [CertificationRun.started_at >= start, CertificationRun.started_at < now]
    if deployment_ids is not None:
        in_range.append(CertificationRun.deployment_id.in_(list(deployment_ids)))
    if regions is not None:
        in_range.append(CertificationRun.region.in_(list(regions)))
    pair = (CertificationRun.deployment_id, CertificationRun.region)
    bucket = _bucket_column(session, window, start).label("bucket")
    # key -> [passed per bucket, failed per bucket, runs]
    cells: dict[str, list[Any]] = {}
    for deployment_id, region, index, passed, failed, runs in session.execute(
        select(
            *pair,
            bucket,
            func.coalesce(func.sum(CertificationRun.tests_passed), 0),
            func.coalesce(func.sum(CertificationRun.tests_failed), 0),
            func.count(),
        )
        .where(*in_range)
        .group_by(*pair, bucket)
    ):
        cell = cells.setdefault(f"{deployment_id}@{region}", [[0] * size, [0] * size, 0])
        at = min(max(int(index), 0), size - 1)
        cell[0][at] += int(passed)
        cell[1][at] += int(failed)
        cell[2] += int(runs)
    latest = (
        select(*pair, func.max(CertificationRun.started_at).label("at"))
        .where(*in_range)
        .group_by(*pair)
        .subquery()
    )
    last_status: dict[str, str] = {}
    for deployment_id, region, status in session.execute(
        select(*pair, CertificationRun.status).join(
            latest,
            (CertificationRun.deployment_id == latest.c.deployment_id)
            & (CertificationRun.region == latest.c.region)
            & (CertificationRun.started_at == latest.c.at),
        )
    ):
        last_status[f"{deployment_id}@{region}"] = status
    return {
        "schema": SCHEMA,
        "range": range_name.strip().lower(),
        "since": _iso(start),
        "until": _iso(now),
        "bucketSeconds": int(window.bucket.total_seconds()),
        "cells": {
            key: {
                "passRate": [
                    round(p / (p + f) * 100, 2) if p + f else None
                    for p, f in zip(passed, failed, strict=True)
                ],
                "runs": runs,
                "lastStatus": last_status.get(key),
            }
            for key, (passed, failed, runs) in sorted(cells.items())
        },
    }


# --- the API's Prometheus series --------------------------------------------------------


@dataclass(frozen=True)
class PairTrend:
    """One deployment × region over the window: `deployment` is the
    `provider_slug/provider_model_id` label the dashboard shows."""

    deployment: str
    region: str
    runs: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    pass_ratio: float | None  # 0..1


@dataclass(frozen=True)
class RecentPairs:
    pairs: list[PairTrend]  # the kept ones, most recently run first
    ran: int  # every pair with a run in the window, kept or not

    @property
    def omitted(self) -> int:
        return self.ran - len(self.pairs)


def recent_pairs(session: Session, *, now: datetime, span: timedelta, limit: int) -> RecentPairs:
    """Latency p50/p95, pass ratio and runs over `span` ending at `now` of every deployment
    × region that ran in it, at most `limit` (>= 1) pairs: those run most recently (ties by
    deployment id, then region); and how many pairs ran.

    One statement whatever the number of pairs: a subquery ranks the pairs by their last
    run and keeps `limit` (counting them all with a window function), and the query joins
    the kept pairs to their labels, their runs in the window and those runs' test rows,
    streamed (percentiles need every latency; a run without test rows is still a run).
    Each row is only numbers and short strings, read without the ORM: a scrape over 1,000
    pairs streams some 50,000 of them."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    in_window = and_(CertificationRun.started_at >= now - span, CertificationRun.started_at < now)
    recency = func.row_number().over(
        order_by=(
            func.max(CertificationRun.started_at).desc(),
            CertificationRun.deployment_id,
            CertificationRun.region,
        )
    )
    kept = (
        select(
            CertificationRun.deployment_id,
            CertificationRun.region,
            recency.label("recency"),
            func.count(CertificationRun.id).label("runs"),
            func.count().over().label("ran"),  # the groups, counted before the LIMIT
        )
        .where(in_window)
        .group_by(CertificationRun.deployment_id, CertificationRun.region)
        .order_by(recency)
        .limit(limit)
        .subquery("kept")
    )
    query = (
        select(
            kept.c.recency,
            kept.c.region,
            kept.c.runs,
            kept.c.ran,
            Provider.slug,
            Deployment.provider_model_id,
            TestResultRow.outcome,
            TestResultRow.latency_ms,
        )
        .join(Deployment, Deployment.id == kept.c.deployment_id)
        .join(Provider, Provider.id == Deployment.provider_id)
        .join(
            CertificationRun,
            and_(
                CertificationRun.deployment_id == kept.c.deployment_id,
                CertificationRun.region == kept.c.region,
                in_window,
            ),
        )
        .outerjoin(TestResultRow, TestResultRow.run_id == CertificationRun.id)
    )
    ran = 0  # the same on every row; no row when no pair ran
    seen: dict[int, tuple[str, str, int, _Acc]] = {}
    rows = session.connection().execute(query.execution_options(yield_per=5_000))
    for recency_rank, region, runs, every, slug, model_id, outcome, latency in rows:
        if recency_rank not in seen:
            ran = every
            seen[recency_rank] = (f"{slug}/{model_id}", region, runs, _Acc())
        seen[recency_rank][3].add_test(outcome, latency, None)
    found = [
        PairTrend(
            deployment=label,
            region=region,
            runs=runs,
            latency_p50_ms=percentile(tests.latencies, 50),
            latency_p95_ms=percentile(tests.latencies, 95),
            pass_ratio=tests.pass_ratio,
        )
        # In the subquery's order (the join does not keep it).
        for _, (label, region, runs, tests) in sorted(seen.items())
    ]
    return RecentPairs(found, ran)
