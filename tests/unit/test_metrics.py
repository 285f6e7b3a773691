"""The workers' Prometheus metrics: recording functions, label sets, exported names."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelcert.domain import CertificationStatus, ErrorCategory, TestOutcome
from modelcert.obs import metrics
from modelcert.obs.metrics import METRIC_NAMES, REGISTRY


def value(name: str, **labels: str) -> float:
    """A sample's current value in the module registry (0 when the series does not exist)."""
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


@pytest.fixture
def region() -> str:
    # The registry is module-wide: a fresh region per test keeps tests independent.
    return f"test-{uuid.uuid4().hex[:8]}"


def test_certification_start_and_finish(region: str) -> None:
    metrics.record_certification_started(region, "sim")
    metrics.record_certification_started(region, "sim")
    assert value("modelcert_certifications_in_flight", region=region) == 2

    metrics.record_certification_finished(region, "sim", CertificationStatus.CERTIFIED, 12.5)
    metrics.record_certification_finished(region, "sim", "FAILED", 700)

    assert value("modelcert_certifications_in_flight", region=region) == 0
    labels = {"region": region, "provider": "sim"}
    assert value("modelcert_certifications_total", **labels, status="CERTIFIED") == 1
    assert value("modelcert_certifications_total", **labels, status="FAILED") == 1
    assert value("modelcert_certification_duration_seconds_count", **labels) == 2
    assert value("modelcert_certification_duration_seconds_sum", **labels) == 712.5
    # Buckets reach 15 minutes: 700 s lands below 900, not only in +Inf.
    assert value("modelcert_certification_duration_seconds_bucket", **labels, le="900.0") == 2
    assert value("modelcert_certification_duration_seconds_bucket", **labels, le="10.0") == 0


def test_test_result_passed_after_retries(region: str) -> None:
    metrics.record_test_result(region, "sim", "basic-prompt", TestOutcome.PASSED, None, 2, 3.5, 0.8)
    labels = {"region": region, "provider": "sim"}
    # No category is the empty label value, never the string "None".
    assert value("modelcert_tests_total", **labels, outcome="PASSED", category="") == 1
    assert value("modelcert_test_retries_total", **labels, category="") == 2
    assert value("modelcert_throttling_wait_seconds_total", **labels) == 3.5
    assert value("modelcert_test_latency_seconds_count", **labels) == 1
    assert value("modelcert_test_latency_seconds_sum", **labels) == 0.8


def test_test_result_failed_without_retries_or_latency(region: str) -> None:
    metrics.record_test_result(
        region, "bedrock", "streaming", "FAILED", ErrorCategory.PERMISSION_ERROR, 0, 0.0, None
    )
    labels = {"region": region, "provider": "bedrock"}
    assert (
        value("modelcert_tests_total", **labels, outcome="FAILED", category="PERMISSION_ERROR") == 1
    )
    # Nothing to add: no zero-valued series are created for retries, waits or latency.
    retries = REGISTRY.get_sample_value(
        "modelcert_test_retries_total", {**labels, "category": "PERMISSION_ERROR"}
    )
    assert retries is None
    assert REGISTRY.get_sample_value("modelcert_throttling_wait_seconds_total", labels) is None
    assert REGISTRY.get_sample_value("modelcert_test_latency_seconds_count", labels) is None


def test_worker_events() -> None:
    before = {e: value("modelcert_worker_events_total", event=e) for e in metrics.WORKER_EVENTS}
    for event in ("active", "completed", "completed", "failed", "stalled", "error"):
        metrics.record_worker_event(event)
    after = {e: value("modelcert_worker_events_total", event=e) for e in metrics.WORKER_EVENTS}
    deltas = {e: after[e] - before[e] for e in metrics.WORKER_EVENTS}
    assert deltas == {"active": 1, "completed": 2, "failed": 1, "stalled": 1, "error": 1}


def test_unknown_worker_event_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown worker event"):
        metrics.record_worker_event("job-1234 exploded")


def test_queue_counts_replace_the_whole_label_set() -> None:
    metrics.set_queue_counts({("us-east-1", "waiting"): 3, ("eu-west-1", "active"): 1})
    assert value("modelcert_queue_jobs", region="us-east-1", state="waiting") == 3
    assert value("modelcert_queue_jobs", region="eu-west-1", state="active") == 1

    metrics.set_queue_counts({("us-east-1", "waiting"): 1})
    assert value("modelcert_queue_jobs", region="us-east-1", state="waiting") == 1
    gone = REGISTRY.get_sample_value(
        "modelcert_queue_jobs", {"region": "eu-west-1", "state": "active"}
    )
    assert gone is None

    metrics.set_queue_counts({})
    body, _ = metrics.render_metrics()
    assert "modelcert_queue_jobs{" not in body.decode()


def test_worker_gauges() -> None:
    metrics.set_heartbeat_age(4.25)
    metrics.set_worker_up()
    assert value("modelcert_worker_heartbeat_age_seconds") == 4.25
    assert value("modelcert_worker_up") == 1
    metrics.set_heartbeat_age(-3)  # a wall-clock step back is not a negative age
    assert value("modelcert_worker_heartbeat_age_seconds") == 0


def _exposed(region: str) -> str:
    """The rendered text after touching every labelled metric once."""
    metrics.record_certification_started(region, "sim")
    metrics.record_certification_finished(region, "sim", "ERROR", 1.0)
    metrics.record_test_result(region, "sim", "t", "FAILED", "RATE_LIMIT", 1, 2.0, 0.1)
    metrics.record_cost(region, "sim", 0.01)
    metrics.record_worker_event("active")
    metrics.set_queue_counts({(region, "waiting"): 1})
    metrics.set_heartbeat_age(1.0)
    metrics.set_worker_up()
    body, content_type = metrics.render_metrics()
    assert content_type.startswith("text/plain")
    return body.decode()


def test_metric_names_match_the_exposition(region: str) -> None:
    text = _exposed(region)
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert typed == METRIC_NAMES
    assert all(name.startswith("modelcert_") for name in METRIC_NAMES)
    # The parser names counter families without `_total`; every sample maps back to a name.
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} == {n.removesuffix("_total") for n in METRIC_NAMES}
    for family in families:
        for sample in family.samples:
            assert metrics.family_of(sample.name) in METRIC_NAMES, sample.name


def test_no_created_series(region: str) -> None:
    assert "_created" not in _exposed(region)


def test_label_sets_are_low_cardinality(region: str) -> None:
    expected = {
        "modelcert_certifications": {"region", "provider", "status"},
        "modelcert_certification_duration_seconds": {"region", "provider", "le"},
        "modelcert_certifications_in_flight": {"region"},
        "modelcert_tests": {"region", "provider", "outcome", "category"},
        "modelcert_test_retries": {"region", "provider", "category"},
        "modelcert_throttling_wait_seconds": {"region", "provider"},
        "modelcert_test_latency_seconds": {"region", "provider", "le"},
        "modelcert_certification_cost_usd": {"region", "provider"},
        "modelcert_worker_events": {"event"},
        "modelcert_worker_heartbeat_age_seconds": set(),
        "modelcert_worker_up": set(),
        "modelcert_queue_jobs": {"region", "state"},
    }
    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(_exposed(region)):
        for sample in family.samples:
            seen.setdefault(family.name, set()).update(sample.labels)
    assert seen == expected


def test_family_of() -> None:
    assert metrics.family_of("modelcert_tests_total") == "modelcert_tests_total"
    bucket = "modelcert_test_latency_seconds_bucket"
    assert metrics.family_of(bucket) == "modelcert_test_latency_seconds"
    assert metrics.family_of("modelcert_worker_up_count") is None
    assert metrics.family_of("process_cpu_seconds_total") is None
