"""Prometheus metrics exported by the workers.

Everything lives in the module's own `REGISTRY` (not prometheus_client's global default) so
tests and embedders can read it in isolation. Callers use the `record_*`/`set_*` functions
and never touch the metric objects, which keeps label names and values in one place.

Labels are low-cardinality only: region, provider, status, outcome, error category, worker
event, queue state. Never a deployment id, job id or workflow id: each distinct value is a
new time series that Prometheus keeps for weeks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

WORKER_EVENTS = frozenset({"active", "completed", "failed", "stalled", "error"})

# A certification runs the whole battery: seconds for a fast endpoint, minutes with
# retries and Retry-After waits; the old CERTIFICATION_TIMEOUT default is 5 min, and
# operators raise it, hence the tail up to 15 min.
CERTIFICATION_BUCKETS = (1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600, 900)
# One chat call: tens of ms (local/sim) up to the per-test timeouts (tens of seconds).
TEST_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60)


class _Registry(CollectorRegistry):
    """A registry that leaves out the `*_created` series of counters and histograms.

    prometheus_client adds a `<name>_created` gauge per labelled child; nothing here
    queries it and it doubles the series count. `disable_created_metrics()` would do the
    same but for every registry in the process, which is not this module's call.
    """

    def collect(self) -> Iterable[Metric]:
        for metric in super().collect():
            if metric.type in ("counter", "histogram"):
                samples = [s for s in metric.samples if not s.name.endswith("_created")]
                if len(samples) != len(metric.samples):
                    trimmed = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                    trimmed.samples = samples
                    metric = trimmed
            yield metric


REGISTRY: CollectorRegistry = _Registry()

_certifications = Counter(
    "modelcert_certifications_total",
    "Certifications finished, by final status (CERTIFIED, FAILED, ERROR, CANCELLED…).",
    ["region", "provider", "status"],
    registry=REGISTRY,
)
_certification_duration = Histogram(
    "modelcert_certification_duration_seconds",
    "Wall time of one certification (one deployment in one region).",
    ["region", "provider"],
    buckets=CERTIFICATION_BUCKETS,
    registry=REGISTRY,
)
_in_flight = Gauge(
    "modelcert_certifications_in_flight",
    "Certifications running in this worker now.",
    ["region"],
    registry=REGISTRY,
)
_tests = Counter(
    "modelcert_tests_total",
    'Battery tests run, by outcome and error category ("" when none).',
    ["region", "provider", "outcome", "category"],
    registry=REGISTRY,
)
_test_retries = Counter(
    "modelcert_test_retries_total",
    'Provider call retries, by the test\'s final error category ("" when it passed).',
    ["region", "provider", "category"],
    registry=REGISTRY,
)
_throttling_wait = Counter(
    "modelcert_throttling_wait_seconds_total",
    "Seconds spent waiting before RATE_LIMIT retries.",
    ["region", "provider"],
    registry=REGISTRY,
)
_test_latency = Histogram(
    "modelcert_test_latency_seconds",
    "Latency of the answer that decided a test.",
    ["region", "provider"],
    buckets=TEST_LATENCY_BUCKETS,
    registry=REGISTRY,
)
_cost = Counter(
    "modelcert_certification_cost_usd_total",
    "US dollars certification calls cost at the deployments' prices (judges included); "
    "calls with no known price are not counted.",
    ["region", "provider"],
    registry=REGISTRY,
)
_worker_events = Counter(
    "modelcert_worker_events_total",
    "Worker job events: active, completed, failed, stalled, error.",
    ["event"],
    registry=REGISTRY,
)
_heartbeat_age = Gauge(
    "modelcert_worker_heartbeat_age_seconds",
    "Seconds since the worker last wrote its heartbeat (since start if never).",
    registry=REGISTRY,
)
_worker_up = Gauge(
    "modelcert_worker_up",
    "1 while the worker process serves metrics.",
    registry=REGISTRY,
)
# Reasons a certification is due: expiring (still valid), expired, failed (FAILED/ERROR).
RECERTIFY_REASONS = frozenset({"expiring", "expired", "failed"})
_recertifications = Counter(
    "modelcert_recertifications_total",
    "Certifications the re-certification schedule found due, by reason and outcome "
    "(queued, or refused as already queued or running).",
    ["reason", "outcome"],
    registry=REGISTRY,
)


class _QueueCollector(Collector):
    """`modelcert_queue_jobs{region,state}` from the last snapshot given.

    A collector over a whole-dict snapshot rather than a labelled Gauge: replacing the
    dict is atomic, so a scrape never sees a half-cleared label set, and states or
    regions that disappeared from the queue disappear from the metric too. Every worker
    exports the same queue-wide numbers: aggregate with max(), not sum().
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}

    def set(self, counts: Mapping[tuple[str, str], int]) -> None:
        self._counts = dict(counts)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "modelcert_queue_jobs",
            "Jobs in the certification queue, by region and state (waiting, active…).",
            labels=["region", "state"],
        )
        for (region, state), count in sorted(self._counts.items()):
            family.add_metric([region, state], count)
        yield family


_queue = _QueueCollector()
REGISTRY.register(_queue)

# Every metric family as written in PromQL: counters with their `_total`, histograms
# without the `_bucket`/`_sum`/`_count` series suffixes (see `family_of`).
METRIC_NAMES: frozenset[str] = frozenset(
    {
        "modelcert_certifications_total",
        "modelcert_certification_duration_seconds",
        "modelcert_certifications_in_flight",
        "modelcert_tests_total",
        "modelcert_test_retries_total",
        "modelcert_throttling_wait_seconds_total",
        "modelcert_test_latency_seconds",
        "modelcert_certification_cost_usd_total",
        "modelcert_worker_events_total",
        "modelcert_worker_heartbeat_age_seconds",
        "modelcert_worker_up",
        "modelcert_queue_jobs",
        "modelcert_recertifications_total",
    }
)

_HISTOGRAMS = frozenset(
    {"modelcert_certification_duration_seconds", "modelcert_test_latency_seconds"}
)
_HISTOGRAM_SERIES = re.compile(r"^(?P<family>.+)_(?:bucket|sum|count)$")


def family_of(series: str) -> str | None:
    """The METRIC_NAMES family a PromQL series name belongs to, or None if it is not ours."""
    if series in METRIC_NAMES:
        return series
    match = _HISTOGRAM_SERIES.match(series)
    if match and match["family"] in _HISTOGRAMS:
        return match["family"]
    return None


def record_certification_started(region: str, provider: str) -> None:
    """Count one certification as running in `region` (provider is kept for symmetry)."""
    del provider  # in-flight is per region only: a gauge per provider adds little
    _in_flight.labels(region=region).inc()


def record_certification_finished(
    region: str, provider: str, status: str, duration_s: float
) -> None:
    """Record a certification's final status and duration; it is no longer in flight."""
    _certifications.labels(region=region, provider=provider, status=str(status)).inc()
    _certification_duration.labels(region=region, provider=provider).observe(max(0.0, duration_s))
    _in_flight.labels(region=region).dec()


def record_test_result(
    region: str,
    provider: str,
    test_id: str,
    outcome: str,
    category: str | None,
    retries: int,
    throttled_s: float,
    latency_s: float | None,
) -> None:
    """Record one battery test's outcome, retries, throttling wait and latency.

    `test_id` is accepted so callers can pass a TestResult's identity as is, but it is not
    a label: the per-test breakdown lives in the database, the metrics stay aggregate.
    """
    del test_id
    cat = str(category) if category else ""
    _tests.labels(region=region, provider=provider, outcome=str(outcome), category=cat).inc()
    if retries > 0:
        _test_retries.labels(region=region, provider=provider, category=cat).inc(retries)
    if throttled_s > 0:
        _throttling_wait.labels(region=region, provider=provider).inc(throttled_s)
    if latency_s is not None and latency_s >= 0:
        _test_latency.labels(region=region, provider=provider).observe(latency_s)


def record_cost(region: str, provider_kind: str, usd: float) -> None:
    """Add what a test's calls cost (USD) to `modelcert_certification_cost_usd_total`."""
    if usd > 0:  # a counter only grows; NaN compares false and is left out too
        _cost.labels(region=region, provider=provider_kind).inc(usd)


def record_worker_event(event: str) -> None:
    """Count a worker job event (active, completed, failed, stalled, error)."""
    if event not in WORKER_EVENTS:
        # Free text here would be an unbounded label; a typo must fail loudly in tests.
        raise ValueError(f"unknown worker event {event!r}; expected one of {sorted(WORKER_EVENTS)}")
    _worker_events.labels(event=event).inc()


def set_heartbeat_age(seconds: float) -> None:
    """Seconds since the last heartbeat write (the health server sets it on each scrape)."""
    _heartbeat_age.set(max(0.0, seconds))


def set_worker_up(up: bool = True) -> None:
    """`modelcert_worker_up`: 1 while the worker process serves (the health server sets it)."""
    _worker_up.set(1 if up else 0)


def set_queue_counts(counts: Mapping[tuple[str, str], int]) -> None:
    """Replace the whole `modelcert_queue_jobs` label set with `{(region, state): count}`."""
    _queue.set(counts)


def record_recertification(reason: str, outcome: str) -> None:
    """Count one due certification the schedule queued or saw refused."""
    if reason not in RECERTIFY_REASONS or outcome not in ("queued", "refused"):
        raise ValueError(f"unknown re-certification reason/outcome {reason!r}/{outcome!r}")
    _recertifications.labels(reason=reason, outcome=outcome).inc()


def render_metrics() -> tuple[bytes, str]:
    """The Prometheus text exposition of REGISTRY and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
