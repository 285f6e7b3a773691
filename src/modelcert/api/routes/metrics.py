"""GET /metrics: Prometheus metrics computed from the database at scrape time.

The workers export what happens inside them (tests, retries, latency). What alerting needs
most, though, is durable state that must be visible even when no worker is: how deep the
queue is, which workers still write heartbeats, how many certifications are about to
expire. The API reads it from the database on each scrape with a custom collector (a few
aggregate queries, no per-row work) instead of keeping gauges up to date in memory, so
several API replicas all report the same truth and a restart loses nothing.

Like the workers' /metrics it needs no API key: the numbers are aggregates with
low-cardinality labels (region, state, status, executor id) and no secrets. Every replica
exports the same numbers: aggregate them with max(), not sum().
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
from modelcert.settings import Settings
from modelcert.store.models import Certification, utcnow
from modelcert.store.worker_models import WorkerHeartbeat

log = logging.getLogger(__name__)
router = APIRouter(tags=["system"])

# The `within` windows of modelcert_certifications_expiring: a day to act, a week to plan
# (a certification is valid for 7 days, so "within 7d" is every valid one).
EXPIRY_WINDOWS: dict[str, timedelta] = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
WORKER_STATES = ("alive", "dead", "stopped")


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
        )
    }


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
