"""Operator controls over HTTP (`/api/regions`, `/api/jobs/{id}/…`, `/api/catalog/…`) and
the audit log that records them (`GET /api/audit`), through the real HTTP stack and the
durable queue, on SQLite and PostgreSQL. A real in-process worker where work must run.

Every change needs the operator role and is recorded with the API key's name; bad input
is a 4xx naming the field; a change the state does not allow is a 409."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.settings import Settings
from modelcert.store import api_keys, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import CertificationRun, Deployment, Job
from tests.support.inprocess import StartWorker

QUEUE = "/api/certification-queue"
REGION = "us-east-1"
Headers = dict[str, str]


@pytest.fixture
def catalog(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """`lab` (quick: certified, denied: FAILED) in two regions; `edge` (tiny) in a third."""
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=[REGION, "eu-west-1"])
        repo.add_provider(session, slug="edge", kind="sim", regions=["ap-southeast-1"])
        for slug, name, profile in (
            ("lab", "quick", "healthy-fast"),
            ("lab", "denied", "access-denied"),
            ("edge", "tiny", "healthy-fast"),
        ):
            repo.add_deployment(
                session,
                provider_slug=slug,
                provider_model_id=name,
                options={"profile": profile, "latency_ms": 5},
            )
    return factory


@pytest.fixture
def client(settings: Settings, catalog: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, session_factory=catalog)) as test_client:
        yield test_client


def new_key(factory: sessionmaker[Session], name: str, role: Role) -> Headers:
    with transaction(factory) as session:
        _, plain = api_keys.create_api_key(session, name, role)
    return {"Authorization": f"Bearer {plain}"}


@pytest.fixture
def operator(catalog: sessionmaker[Session]) -> Headers:
    return new_key(catalog, "ops-alice", Role.operator)


@pytest.fixture
def viewer(catalog: sessionmaker[Session]) -> Headers:
    return new_key(catalog, "wallboard", Role.viewer)


def ids(factory: sessionmaker[Session]) -> dict[str, int]:
    with transaction(factory) as session:
        return {d.provider_model_id: d.id for d in session.scalars(select(Deployment))}


def queue(client: TestClient, headers: Headers, model: str, region: str = REGION) -> Any:
    return client.post(
        f"{QUEUE}/certify-model", json={"modelId": model, "region": region}, headers=headers
    )


def wait_done(client: TestClient, headers: Headers, job_id: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"{QUEUE}/jobs/{job_id}", headers=headers).json()
        if body["status"] in ("COMPLETED", "CANCELLED"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def test_changes_need_the_operator_role_and_reads_any_key(
    client: TestClient, viewer: Headers, catalog: sessionmaker[Session]
) -> None:
    quick = ids(catalog)["quick"]
    job = "123e4567-e89b-12d3-a456-426614174000"
    for method, path in (
        ("post", f"/api/regions/{REGION}/pause"),
        ("post", f"/api/regions/{REGION}/resume"),
        ("post", f"/api/jobs/{job}/cancel"),
        ("post", f"/api/jobs/{job}/retry-failed"),
        ("post", f"/api/catalog/deployments/{quick}/deactivate"),
        ("post", f"/api/catalog/deployments/{quick}/activate"),
        ("delete", f"/api/catalog/deployments/{quick}"),
        ("post", "/api/catalog/providers/lab/deactivate"),
    ):
        assert getattr(client, method)(path).status_code == 401, path
        refused = getattr(client, method)(path, headers=viewer)
        assert refused.status_code == 403, path
        assert "operator role" in refused.json()["detail"]
    refused = client.post(f"/api/jobs/{job}/priority", json={"priority": "high"}, headers=viewer)
    assert refused.status_code == 403
    assert client.get("/api/audit", headers=viewer).json() == []
    assert client.get("/api/audit").status_code == 401
    regions = client.get("/api/regions", headers=viewer).json()
    assert [r["region"] for r in regions] == ["ap-southeast-1", "eu-west-1", REGION]
    assert not any(r["paused"] for r in regions)


def test_bad_input_is_a_4xx_naming_the_field(
    client: TestClient, operator: Headers, catalog: sessionmaker[Session]
) -> None:
    job = "123e4567-e89b-12d3-a456-426614174000"
    cases = [
        (client.post("/api/regions/mars-1/pause", headers=operator), 404, "region"),
        (client.post("/api/regions/Bad Region!/pause", headers=operator), 422, "region"),
        (client.post(f"/api/jobs/{job}/cancel", headers=operator), 404, "jobId"),
        (client.post("/api/jobs/;drop/cancel", headers=operator), 422, "jobId"),
        (
            client.post(f"/api/jobs/{job}/priority", json={"priority": "urgent"}, headers=operator),
            422,
            "priority",
        ),
        (
            client.post(f"/api/jobs/{job}/priority", json={"prio": "high"}, headers=operator),
            422,
            "priority",
        ),
        (
            client.post("/api/catalog/deployments/0/deactivate", headers=operator),
            422,
            "deploymentId",
        ),
        (
            client.post("/api/catalog/deployments/999/deactivate", headers=operator),
            404,
            "deployment",
        ),
        (client.delete("/api/catalog/deployments/abc", headers=operator), 422, "deploymentId"),
        (client.post("/api/catalog/providers/nope/deactivate", headers=operator), 404, "provider"),
        (client.get("/api/audit?since=yesterday", headers=operator), 422, "since"),
        (client.get("/api/audit?limit=0", headers=operator), 422, "limit"),
        (client.get("/api/audit?action=region.explode", headers=operator), 400, "action"),
        (client.get("/api/audit?action=DROP TABLE", headers=operator), 422, "action"),
    ]
    for response, code, field in cases:
        assert response.status_code == code, (response.request.url, response.text)
        assert response.json()["field"] == field, (response.request.url, response.json())
    with transaction(catalog) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_every_control_over_http_is_audited_with_the_key_name(
    client: TestClient,
    operator: Headers,
    catalog: sessionmaker[Session],
    start_worker: StartWorker,
) -> None:
    deployment = ids(catalog)

    # Pause: queued work waits; resume lets it run.
    paused = client.post(f"/api/regions/{REGION}/pause", headers=operator)
    assert paused.status_code == 200 and paused.json() == {
        "region": REGION,
        "paused": True,
        "changed": True,
    }
    assert client.post(f"/api/regions/{REGION}/pause", headers=operator).json()["changed"] is False
    regions = {r["region"]: r for r in client.get("/api/regions", headers=operator).json()}
    assert regions[REGION]["paused"] and regions[REGION]["pausedBy"] == "ops-alice"

    job_id = queue(client, operator, "lab/quick").json()["jobId"]
    priority = client.post(
        f"/api/jobs/{job_id}/priority", json={"priority": "high"}, headers=operator
    )
    assert priority.status_code == 200, priority.text
    assert priority.json() == {"jobId": job_id, "priority": "high", "changed": 1}
    cancelled = client.post(f"/api/jobs/{job_id}/cancel", headers=operator)
    assert cancelled.json() == {"jobId": job_id, "cancelled": 1, "status": "CANCELLED"}
    again = client.post(f"/api/jobs/{job_id}/cancel", headers=operator)
    assert again.status_code == 409 and again.json()["field"] == "jobId"
    late = client.post(f"/api/jobs/{job_id}/priority", json={"priority": "low"}, headers=operator)
    assert late.status_code == 409 and "already CANCELLED" in late.json()["detail"]
    assert client.post(f"/api/regions/{REGION}/resume", headers=operator).json()["changed"]

    # Retry the failures of a finished job, as a new job.
    start_worker(regions=[REGION], executor_id="w-api-ops")
    failed_job = queue(client, operator, "lab/denied").json()["jobId"]
    assert wait_done(client, operator, failed_job)["failed"] == 1
    retried = client.post(
        f"/api/jobs/{failed_job}/retry-failed", json={"priority": "low"}, headers=operator
    )
    assert retried.status_code == 201, retried.text
    body = retried.json()
    assert body["retryOf"] == failed_job and body["jobId"] and body["priority"] == "low"
    assert [q["deployment"] for q in body["queued"]] == ["lab/denied"]
    wait_done(client, operator, body["jobId"])
    ok_job = queue(client, operator, "lab/quick").json()["jobId"]
    wait_done(client, operator, ok_job)
    none = client.post(f"/api/jobs/{ok_job}/retry-failed", headers=operator)
    assert none.status_code == 409 and "no failed certification" in none.json()["detail"]

    # Deactivated: refused by the enqueue paths that check it, and listed as such.
    off = client.post(
        f"/api/catalog/deployments/{deployment['quick']}/deactivate", headers=operator
    )
    assert off.json() == {
        "deploymentId": deployment["quick"],
        "deployment": "lab/quick",
        "active": False,
        "changed": True,
    }
    every = client.post(
        f"{QUEUE}/certify-all", json={"provider": "lab", "regions": [REGION]}, headers=operator
    ).json()
    assert {q["deployment"] for q in every["queued"]} == {"lab/denied"}  # not lab/quick
    wait_done(client, operator, every["jobId"])
    assert client.post("/api/catalog/providers/edge/deactivate", headers=operator).json() == {
        "provider": "edge",
        "active": False,
        "changed": True,
    }
    refused = client.post(
        f"{QUEUE}/certify-all", json={"regions": ["ap-southeast-1"]}, headers=operator
    )
    assert refused.status_code in (400, 404), refused.text  # no active provider serves it
    assert client.post("/api/catalog/providers/edge/activate", headers=operator).json()["changed"]
    on = client.post(f"/api/catalog/deployments/{deployment['quick']}/activate", headers=operator)
    assert on.json()["active"] is True

    # Removed, with its history; refused while it has work in a queue.
    assert client.post(f"/api/regions/{REGION}/pause", headers=operator).json()["changed"]
    pending = queue(client, operator, "lab/denied").json()["jobId"]
    busy = client.delete(f"/api/catalog/deployments/{deployment['denied']}", headers=operator)
    assert busy.status_code == 409 and "queued or running" in busy.json()["detail"]
    client.post(f"/api/jobs/{pending}/cancel", headers=operator)
    client.post(f"/api/regions/{REGION}/resume", headers=operator)
    removed = client.delete(f"/api/catalog/deployments/{deployment['denied']}", headers=operator)
    assert removed.status_code == 200, removed.text
    assert removed.json() == {
        "deploymentId": deployment["denied"],
        "deployment": "lab/denied",
        "removed": True,
    }
    with transaction(catalog) as session:
        assert session.get(Deployment, deployment["denied"]) is None
        runs = select(func.count()).select_from(CertificationRun)
        assert (
            session.scalar(runs.where(CertificationRun.deployment_id == deployment["denied"])) == 0
        )

    entries = client.get("/api/audit", headers=operator).json()
    assert [(e["action"], e["target"]) for e in entries] == [
        ("deployment.remove", "lab/denied"),
        ("region.resume", REGION),
        ("job.cancel", pending),
        ("region.pause", REGION),
        ("deployment.activate", "lab/quick"),
        ("provider.activate", "edge"),
        ("provider.deactivate", "edge"),
        ("deployment.deactivate", "lab/quick"),
        ("job.retry_failed", failed_job),
        ("region.resume", REGION),
        ("job.cancel", job_id),
        ("job.priority", job_id),
        ("region.pause", REGION),
    ]
    assert {(e["actor"], e["interface"]) for e in entries} == {("ops-alice", "api")}
    assert entries[8]["details"]["newJobId"] == body["jobId"]
    assert all(e["at"].endswith(("Z", "+00:00")) for e in entries)  # UTC
    jobs_only = client.get("/api/audit?action=job&limit=2", headers=operator).json()
    assert [e["action"] for e in jobs_only] == ["job.cancel", "job.retry_failed"]
    assert client.get("/api/audit?actor=someone&since=1h", headers=operator).json() == []
    assert len(client.get("/api/audit?since=1h", headers=operator).json()) == len(entries)
    assert client.get("/api/audit?until=1h", headers=operator).json() == []


def test_a_provider_is_removed_with_its_deployments_unless_work_is_pending(
    client: TestClient, operator: Headers, catalog: sessionmaker[Session]
) -> None:
    assert client.post("/api/regions/ap-southeast-1/pause", headers=operator).status_code == 200
    pending = queue(client, operator, "edge/tiny", "ap-southeast-1").json()["jobId"]
    busy = client.delete("/api/catalog/providers/edge", headers=operator)
    assert busy.status_code == 409 and busy.json()["field"] == "provider"
    assert "queued or running" in busy.json()["detail"]
    client.post(f"/api/jobs/{pending}/cancel", headers=operator)

    removed = client.delete("/api/catalog/providers/edge", headers=operator)
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"provider": "edge", "deployments": 1, "removed": True}
    assert set(ids(catalog)) == {"quick", "denied"}
    gone = client.delete("/api/catalog/providers/edge", headers=operator)
    assert gone.status_code == 404 and gone.json()["field"] == "provider"
    entry = client.get("/api/audit?action=provider", headers=operator).json()
    assert [(e["action"], e["target"], e["details"]) for e in entry] == [
        ("provider.remove", "edge", {"deployments": 1})
    ]
