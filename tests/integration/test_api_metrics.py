"""The API's /metrics: durable state read from the database at scrape time, over the real
HTTP stack, on SQLite and PostgreSQL. Work is queued through the API itself (no worker
runs, so it stays waiting); verdicts and heartbeats are rows written as the workers do.
The per deployment × region families (`modelcert_deployment_*`) are scraped over runs with
known latencies (tests/support/trend_seed.py), seeded relative to the clock the API reads
(an hour apart or more: no timing involved)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.api.routes.metrics import TREND_FAMILIES, TREND_PAIRS, exported_names
from modelcert.settings import Settings
from modelcert.store import api_keys, db, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import Certification, utcnow
from modelcert.store.worker_models import WorkerHeartbeat
from tests.support.trend_seed import seed_fleet, seed_trend_runs

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
DEPLOYMENTS = ("queued-a", "queued-b", "done-c", "done-d", "done-e")
# The families with a sample per deployment × region that ran (none without runs).
PER_PAIR = TREND_FAMILIES - {TREND_PAIRS}


@pytest.fixture
def catalog(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1", "eu-west-1"])
        for name in DEPLOYMENTS:
            repo.add_deployment(session, provider_slug="lab", provider_model_id=name)
    return factory


@pytest.fixture
def client(settings: Settings, catalog: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, session_factory=catalog)) as test_client:
        yield test_client


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")  # no Authorization header: Prometheus sends none
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_an_empty_database_exports_zero_workers_and_no_work(client: TestClient) -> None:
    samples = scrape(client)
    assert value(samples, "modelcert_database_up") == 1
    for state in ("alive", "dead", "stopped"):
        assert value(samples, "modelcert_workers", state=state) == 0
    # Families with no rows behind them have no samples (Prometheus sees them absent); the
    # failed-authentication counter is the API's own, every surface and reason from 0.
    assert names(samples) == {
        "modelcert_database_up",
        "modelcert_workers",
        TREND_PAIRS,
        "modelcert_api_auth_failures_total",
    }
    assert value(samples, TREND_PAIRS, state="exported") == 0
    assert value(samples, TREND_PAIRS, state="omitted") == 0
    assert value(samples, "modelcert_api_auth_failures_total", surface="api", reason="invalid") == 0


def test_queue_workers_and_certifications_come_from_the_database(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    with transaction(catalog) as session:
        _, plain = api_keys.create_api_key(session, "ops", Role.operator)
    queued = client.post(
        "/api/certification-queue/certify-multiple",
        json={"modelIds": ["lab/queued-a", "lab/queued-b"], "regions": ["us-east-1"]},
        headers={"Authorization": f"Bearer {plain}"},
    )
    assert queued.status_code == 201, queued.text
    queued = client.post(
        "/api/certification-queue/certify-model",
        json={"modelId": "lab/queued-a", "region": "eu-west-1"},
        headers={"Authorization": f"Bearer {plain}"},
    )
    assert queued.status_code == 201, queued.text

    now = utcnow()
    with transaction(catalog) as session:
        ids = {name: repo.find_deployment(session, f"lab/{name}").id for name in DEPLOYMENTS}
        for name, region, status, expires_in in (
            ("done-c", "us-east-1", "CERTIFIED", timedelta(hours=3)),
            ("done-d", "us-east-1", "CERTIFIED", timedelta(days=3)),
            # An invalid verdict has no expiry (the store clears it): not expiring.
            ("done-e", "us-east-1", "FAILED", None),
            ("done-c", "eu-west-1", "QUALITY_WARNING", timedelta(hours=23)),
            ("done-d", "eu-west-1", "CERTIFIED", -timedelta(hours=1)),
            ("done-e", "eu-west-1", "CERTIFIED", timedelta(days=8)),
        ):
            session.add(
                Certification(
                    deployment_id=ids[name],
                    region=region,
                    status=status,
                    certified_at=now - timedelta(days=1),
                    expires_at=now + expires_in if expires_in is not None else None,
                )
            )
        for executor_id, silent_for, stopped in (
            ("worker-0", timedelta(seconds=5), False),
            ("worker-1", timedelta(seconds=300), False),  # past MODELCERT_WORKER_DEAD_AFTER_S
            ("worker-2", timedelta(seconds=400), True),  # stopped cleanly: not stale
        ):
            session.add(
                WorkerHeartbeat(
                    executor_id=executor_id,
                    hostname="host",
                    pid=1,
                    regions=["us-east-1"],
                    heartbeat_at=now - silent_for,
                    stopped_at=now if stopped else None,
                )
            )

    samples = scrape(client)

    assert value(samples, "modelcert_database_up") == 1
    assert value(samples, "modelcert_queue_depth", region="us-east-1", state="waiting") == 2
    assert value(samples, "modelcert_queue_depth", region="eu-west-1", state="waiting") == 1
    assert {labels for name, labels in samples if name == "modelcert_queue_depth"} == {
        frozenset({("region", "us-east-1"), ("state", "waiting")}),
        frozenset({("region", "eu-west-1"), ("state", "waiting")}),
    }

    assert value(samples, "modelcert_workers", state="alive") == 1
    assert value(samples, "modelcert_workers", state="dead") == 1
    assert value(samples, "modelcert_workers", state="stopped") == 1
    alive_age = value(samples, "modelcert_executor_heartbeat_age_seconds", executor_id="worker-0")
    dead_age = value(samples, "modelcert_executor_heartbeat_age_seconds", executor_id="worker-1")
    assert alive_age is not None and 5 <= alive_age < 60
    assert dead_age is not None and 300 <= dead_age < 360
    assert (
        value(samples, "modelcert_executor_heartbeat_age_seconds", executor_id="worker-2") is None
    )

    # Enqueueing marked the queued pairs QUEUED; the rest are the verdicts written above.
    verdicts = {
        (dict(labels)["region"], dict(labels)["status"]): count
        for (name, labels), count in samples.items()
        if name == "modelcert_certification_verdicts"
    }
    assert verdicts == {
        ("us-east-1", "QUEUED"): 2,
        ("us-east-1", "CERTIFIED"): 2,
        ("us-east-1", "FAILED"): 1,
        ("eu-west-1", "QUEUED"): 1,
        ("eu-west-1", "QUALITY_WARNING"): 1,
        ("eu-west-1", "CERTIFIED"): 2,
    }

    expiring = "modelcert_certifications_expiring"
    assert value(samples, expiring, region="us-east-1", within="24h") == 1
    assert value(samples, expiring, region="us-east-1", within="7d") == 2
    assert value(samples, expiring, region="eu-west-1", within="24h") == 1
    assert value(samples, expiring, region="eu-west-1", within="7d") == 1  # 8 days: not yet
    assert value(samples, "modelcert_certifications_expired", region="us-east-1") == 0
    assert value(samples, "modelcert_certifications_expired", region="eu-west-1") == 1

    # Everything scraped is a family exported_names() declares, and vice versa (but for
    # the per-pair families: nothing ran here; see test_deployment_trends_of_known_runs).
    assert names(samples) == exported_names() - PER_PAIR


# --- per deployment × region ----------------------------------------------------------


@contextmanager
def serving(
    settings: Settings, factory: sessionmaker[Session], **changes: Any
) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update=changes), session_factory=factory)
    with TestClient(app) as test_client:
        yield test_client


def pair_values(samples: Samples, name: str) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["deployment"], dict(labels)["region"]): found
        for (sample, labels), found in samples.items()
        if sample == name
    }


def test_deployment_trends_of_known_runs(
    settings: Settings, factory: sessionmaker[Session]
) -> None:
    now = utcnow()
    seed_trend_runs(factory, now)
    # Pairs that ran but have nothing to measure: no sample in those families, not NaN.
    seed_fleet(
        factory, now, provider="skips", models=["all"], regions=["us-east-1"],
        tests=[("SKIPPED", None, None), ("NOT_RUN", None, None)],
    )  # fmt: skip
    seed_fleet(
        factory, now, provider="blind", models=["m"], regions=["us-east-1"],
        tests=[("PASSED", None, None)],
    )  # fmt: skip
    seed_fleet(factory, now, provider="bare", models=["m"], regions=["us-east-1"], tests=[])
    with serving(settings, factory) as client:
        samples = scrape(client)

    # lab/quick in us-east-1 over 24 h: latencies 100, 200, 300 and 400 ms, 3 of 4 passed
    # (its runs before the window and after now are left out); the noise 9,999 ms, failed.
    quick = ("lab/quick", "us-east-1")
    noise = dict.fromkeys([("lab/quick", "eu-west-1"), ("lab/other", "us-east-1")])
    assert pair_values(samples, "modelcert_deployment_latency_p50_seconds") == {
        quick: 0.25,
        **dict.fromkeys(noise, 9.999),
    }
    assert pair_values(samples, "modelcert_deployment_latency_p95_seconds") == {
        quick: 0.385,
        **dict.fromkeys(noise, 9.999),
    }
    assert pair_values(samples, "modelcert_deployment_pass_ratio") == {
        quick: 0.75,
        **dict.fromkeys(noise, 0.0),
        ("blind/m", "us-east-1"): 1.0,
    }
    idle = [("skips/all", "us-east-1"), ("blind/m", "us-east-1"), ("bare/m", "us-east-1")]
    assert pair_values(samples, "modelcert_deployment_runs") == dict.fromkeys(
        [quick, *noise, *idle], 1
    )
    assert value(samples, TREND_PAIRS, state="exported") == 6
    assert value(samples, TREND_PAIRS, state="omitted") == 0
    assert names(samples) >= TREND_FAMILIES


def scrape_seeded_trends(
    settings: Settings, factory: sessionmaker[Session], max_pairs: int
) -> Samples:
    seed_trend_runs(factory, utcnow())
    with serving(settings, factory, trend_metrics_max_pairs=max_pairs) as client:
        return scrape(client)


def test_the_bound_keeps_the_most_recently_run_pairs(
    settings: Settings, factory: sessionmaker[Session]
) -> None:
    samples = scrape_seeded_trends(settings, factory, max_pairs=2)
    # lab/quick in us-east-1 ran 2 h ago, the other two 1 h ago: the bound cuts it.
    kept = {("lab/quick", "eu-west-1"), ("lab/other", "us-east-1")}
    for name in PER_PAIR:
        assert set(pair_values(samples, name)) == kept, name
    assert value(samples, TREND_PAIRS, state="exported") == 2
    assert value(samples, TREND_PAIRS, state="omitted") == 1


def test_a_bound_of_zero_turns_the_trend_families_off(
    settings: Settings, factory: sessionmaker[Session]
) -> None:
    samples = scrape_seeded_trends(settings, factory, max_pairs=0)
    assert value(samples, "modelcert_database_up") == 1
    assert not names(samples) & TREND_FAMILIES
    assert value(samples, "modelcert_workers", state="alive") == 0


def test_a_scrape_is_as_many_statements_for_3_pairs_as_for_30(
    settings: Settings, engine: Engine, factory: sessionmaker[Session]
) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    def statements_per_scrape(client: TestClient) -> tuple[int, Samples]:
        statements.clear()
        samples = scrape(client)
        return len(statements), samples

    tests = [("PASSED", 120.0, 12.0), ("FAILED", 480.0, None), ("SKIPPED", None, None)]
    now = utcnow()
    seed_fleet(factory, now, provider="few", models=["a", "b", "c"], regions=["r1"], tests=tests)
    event.listen(engine, "before_cursor_execute", count)
    try:
        with (
            serving(settings, factory) as client,
            serving(settings, factory, trend_metrics_max_pairs=0) as without,
        ):
            few, samples = statements_per_scrape(client)
            assert value(samples, TREND_PAIRS, state="exported") == 3
            models = [f"m{i}" for i in range(9)]
            regions = ["r1", "r2", "r3"]
            seed_fleet(factory, now, provider="many", models=models, regions=regions, tests=tests)
            many, samples = statements_per_scrape(client)
            assert value(samples, TREND_PAIRS, state="exported") == 30
            off, _ = statements_per_scrape(without)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert few == many, statements
    assert many == off + 1  # the trend families: one statement


def test_an_unreachable_database_is_reported_not_a_server_error() -> None:
    # A real refused connection: nothing listens on port 1 of the loopback interface.
    url = "postgresql+psycopg://postgres:pw@127.0.0.1:1/x"
    engine = db.make_engine(url, connect_args={"connect_timeout": 1})
    try:
        app = create_app(
            Settings(database_url=url), session_factory=db.make_session_factory(engine)
        )
        with TestClient(app) as client:
            samples = scrape(client)
    finally:
        engine.dispose()
    # The failed-authentication counter is the API's own, not the database's: it stays.
    database = {k: v for k, v in samples.items() if k[0] != "modelcert_api_auth_failures_total"}
    assert database == {("modelcert_database_up", frozenset()): 0}
