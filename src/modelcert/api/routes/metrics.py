"""GET /metrics: Prometheus metrics computed from the database at scrape time.

The workers export what happens inside them (tests, retries, latency). What alerting needs
most, though, is durable state that must be visible even when no worker is: how deep the
queue is, which workers still write heartbeats, how many certifications are about to
expire. The API reads it from the database on each scrape with a custom collector (a
constant number of queries, whatever the size of the fleet) instead of keeping gauges up
to date in memory, so several API replicas all report the same truth and a restart loses
nothing.

Like the workers' /metrics it needs no API key: the numbers are aggregates with
low-cardinality labels (region, state, status, executor id) and no secrets. Every replica
exports the same numbers: aggregate them with max(), not sum().

The exception, bounded: the `modelcert_deployment_*` families are per deployment × region
(labels `deployment`, the `provider_slug/provider_model_id` the dashboard shows, and
`region`), over the runs of the last 24 h: latency p50 and p95 in seconds, pass ratio,
runs (reports/trends.py `recent_pairs`). Their series grow with the fleet (deployments ×
regions), and every series costs Prometheus memory and index for as long as it is kept,
so at most MODELCERT_TREND_METRICS_MAX_PAIRS pairs are exported (default 1000: 50
deployments × 20 regions), the most recently run ones (the others are the stale ones).
That is 4 series a pair, at most max_pairs × 4 + 2 series in all (below max_pairs × 5),
with `modelcert_deployment_trend_pairs{state="exported"|"omitted"}` saying when the bound
cut some; 0 turns the five families off. A pair with no value for a family (no test with
a latency, none passed or failed) has no sample in it, never NaN. They cost the scrape one
statement, streaming the window's test rows of the kept pairs (a percentile needs every
latency), not one per pair.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, not_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.edges import AUTH_FAILURES_METRIC
from modelcert.jobs.queue_stats import queue_counts
from modelcert.reports.trends import recent_pairs
from modelcert.settings import Settings
from modelcert.store.models import Certification, utcnow
from modelcert.store.worker_models import WorkerHeartbeat

log = logging.getLogger(__name__)
router = APIRouter(tags=["system"])

# The `within` windows of modelcert_certifications_expiring: a day to act, a week to plan
# (a certification is valid for 7 days, so "within 7d" is every valid one).
EXPIRY_WINDOWS: dict[str, timedelta] = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
WORKER_STATES = ("alive", "dead", "stopped")
# The window of the per deployment × region families (modelcert_deployment_*).
TREND_WINDOW = timedelta(hours=24)
PAIR_LABELS = ["deployment", "region"]
TREND_PAIRS = "modelcert_deployment_trend_pairs"


def _families() -> dict[str, GaugeMetricFamily]:
    """Every family the collector exports, empty; `collect` fills them in."""
    return {
        family.name: family
        for family in (
            GaugeMetricFamily(
                "modelcert_database_up",
                "1 when the API could read the database for this scrape, else 0 "
                "(the other modelcert_* API series are then missing).",
            ),
            GaugeMetricFamily(
                "modelcert_queue_depth",
                "Certification workflows in the durable queue, by region and state "
                "(waiting, delayed, active, completed, failed, cancelled).",
                labels=["region", "state"],
            ),
            GaugeMetricFamily(
                "modelcert_workers",
                "Workers known from their heartbeat rows: alive (heartbeat younger than "
                "MODELCERT_WORKER_DEAD_AFTER_S), dead (silent longer, not stopped), stopped.",
                labels=["state"],
            ),
            GaugeMetricFamily(
                "modelcert_executor_heartbeat_age_seconds",
                "Seconds since each worker that has not stopped last wrote its heartbeat.",
                labels=["executor_id"],
            ),
            GaugeMetricFamily(
                "modelcert_certification_verdicts",
                "Current certifications (one per deployment × region), by region and status.",
                labels=["region", "status"],
            ),
            GaugeMetricFamily(
                "modelcert_certifications_expiring",
                "Valid certifications (CERTIFIED, QUALITY_WARNING) that expire within the "
                "window: 24h or 7d (cumulative: 7d includes 24h).",
                labels=["region", "within"],
            ),
            GaugeMetricFamily(
                "modelcert_certifications_expired",
                "Certifications whose verdict was valid but whose badge has expired.",
                labels=["region"],
            ),
            *_trend_families(),
        )
    }


def _trend_families() -> tuple[GaugeMetricFamily, ...]:
    """The per deployment × region families (bounded: see the module docstring)."""
    window = "over the runs of the last 24 h, per deployment × region"
    return (
        GaugeMetricFamily(
            "modelcert_deployment_latency_p50_seconds",
            f"Median latency of the tests that have one, {window}.",
            labels=PAIR_LABELS,
        ),
        GaugeMetricFamily(
            "modelcert_deployment_latency_p95_seconds",
            f"95th percentile latency of the tests that have one, {window}.",
            labels=PAIR_LABELS,
        ),
        GaugeMetricFamily(
            "modelcert_deployment_pass_ratio",
            f"Passed / (passed + failed) tests (0..1; skipped and not run count for neither), "
            f"{window}.",
            labels=PAIR_LABELS,
        ),
        GaugeMetricFamily(
            "modelcert_deployment_runs", f"Certification runs {window}.", labels=PAIR_LABELS
        ),
        GaugeMetricFamily(
            TREND_PAIRS,
            "Deployment × region pairs that ran in the last 24 h: exported in the "
            "modelcert_deployment_* families, or omitted (past "
            "MODELCERT_TREND_METRICS_MAX_PAIRS, the least recently run ones).",
            labels=["state"],
        ),
    )


TREND_FAMILIES = frozenset(family.name for family in _trend_families())


class DatabaseCollector(Collector):
    """The durable-state metrics, read with one session per scrape."""

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings) -> None:
        self._session_factory = session_factory
        self._settings = settings

    def describe(self) -> Iterable[Metric]:
        """The exported families without samples (no database access)."""
        return list(_families().values())

    def collect(self) -> Iterable[Metric]:
        families = _families()
        up = families.pop("modelcert_database_up")
        if self._settings.trend_metrics_max_pairs == 0:
            for name in TREND_FAMILIES:
                del families[name]
        try:
            with self._session_factory() as session:
                self._fill(session, families, utcnow())
        except SQLAlchemyError as exc:
            # A 500 would only say "scrape failed"; database_up=0 says why, and the
            # half-filled families are dropped rather than exported as if complete.
            log.warning("metrics scrape: database unavailable: %s", type(exc).__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families.values()]

    def _fill(
        self, session: Session, families: dict[str, GaugeMetricFamily], now: datetime
    ) -> None:
        queue = families["modelcert_queue_depth"]
        for (region, state), count in sorted(queue_counts(session, self._settings).items()):
            queue.add_metric([region, state], count)

        workers = dict.fromkeys(WORKER_STATES, 0)
        ages = families["modelcert_executor_heartbeat_age_seconds"]
        for executor_id, heartbeat_at, stopped_at in session.execute(
            select(
                WorkerHeartbeat.executor_id,
                WorkerHeartbeat.heartbeat_at,
                WorkerHeartbeat.stopped_at,
            ).order_by(WorkerHeartbeat.executor_id)
        ):
            if stopped_at is not None:
                # Stopped on purpose (or taken over by the reaper): not a stale worker.
                workers["stopped"] += 1
                continue
            age = max(0.0, (now - heartbeat_at).total_seconds())
            ages.add_metric([executor_id], age)
            workers["alive" if age <= self._settings.worker_dead_after_s else "dead"] += 1
        for state, count in workers.items():
            families["modelcert_workers"].add_metric([state], count)

        verdicts = families["modelcert_certification_verdicts"]
        for region, status, count in session.execute(
            select(Certification.region, Certification.status, func.count())
            .group_by(Certification.region, Certification.status)
            .order_by(Certification.region, Certification.status)
        ):
            verdicts.add_metric([region, status], count)

        # One pass counts every window and the expired ones, by the validity rule
        # (Certification.valid_clause): a verdict that lapsed keeps its expires_at.
        valid_now = Certification.valid_clause(now)
        windows = [
            func.sum(
                case((and_(valid_now, not_(Certification.valid_clause(now + span))), 1), else_=0)
            )
            for span in EXPIRY_WINDOWS.values()
        ]
        expired = func.sum(case((not_(valid_now), 1), else_=0))
        for region, expired_count, *window_counts in session.execute(
            select(Certification.region, expired, *windows)
            .where(Certification.expires_at.is_not(None))
            .group_by(Certification.region)
            .order_by(Certification.region)
        ):
            families["modelcert_certifications_expired"].add_metric(
                [region], int(expired_count or 0)
            )
            for within, count in zip(EXPIRY_WINDOWS, window_counts, strict=True):
                # "Expiring" means still valid now: the expired ones are counted apart.
                families["modelcert_certifications_expiring"].add_metric(
                    [region, within], int(count or 0)
                )

        if TREND_PAIRS in families:
            self._fill_trends(session, families, now)

    def _fill_trends(
        self, session: Session, families: dict[str, GaugeMetricFamily], now: datetime
    ) -> None:
        found = recent_pairs(
            session, now=now, span=TREND_WINDOW, limit=self._settings.trend_metrics_max_pairs
        )
        for pair in sorted(found.pairs, key=lambda pair: (pair.deployment, pair.region)):
            labels = [pair.deployment, pair.region]
            for name, sample in (
                ("modelcert_deployment_latency_p50_seconds", _seconds(pair.latency_p50_ms)),
                ("modelcert_deployment_latency_p95_seconds", _seconds(pair.latency_p95_ms)),
                ("modelcert_deployment_pass_ratio", pair.pass_ratio),
                ("modelcert_deployment_runs", pair.runs),
            ):
                if sample is not None:
                    families[name].add_metric(labels, sample)
        families[TREND_PAIRS].add_metric(["exported"], len(found.pairs))
        families[TREND_PAIRS].add_metric(["omitted"], found.omitted)


def _seconds(milliseconds: float | None) -> float | None:
    return milliseconds / 1000 if milliseconds is not None else None


def exported_names() -> frozenset[str]:
    """The metric names this endpoint exports, as written in PromQL: the gauges read from
    the database, and the API's failed-authentication counter."""
    return frozenset(_families()) | {AUTH_FAILURES_METRIC}


@router.get("/metrics", response_class=Response, include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format; no API key (aggregates only, like the workers' /metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        DatabaseCollector(request.app.state.session_factory, request.app.state.settings)
    )
    return Response(
        generate_latest(registry) + generate_latest(request.app.state.auth_metrics.registry),
        media_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )
