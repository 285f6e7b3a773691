"""The API's /metrics: durable state read from the database at scrape time, over the real
HTTP stack, on SQLite and PostgreSQL. Work is queued through the API itself (no worker
runs, so it stays waiting); verdicts and heartbeats are rows written as the workers do."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.api.routes.metrics import exported_names
from modelcert.settings import Settings
from modelcert.store import api_keys, db, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import Certification, utcnow
from modelcert.store.worker_models import WorkerHeartbeat

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
DEPLOYMENTS = ("queued-a", "queued-b", "done-c", "done-d", "done-e")


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
        "modelcert_api_auth_failures_total",
    }
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

    # Everything scraped is a family exported_names() declares, and vice versa.
    assert names(samples) == exported_names()


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
