"""The certification queue API through the real HTTP stack (FastAPI, bearer keys, the
durable queue in the database, a real worker), on SQLite and PostgreSQL.

The worker runs inside the test process (`start_worker`: `modelcert.worker.main.Worker`
with DBOS launched here), started only when a test wants its work done."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api import sse
from modelcert.api.app import create_app
from modelcert.jobs.job_summary import job_summary
from modelcert.settings import Settings
from modelcert.store import api_keys, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, utcnow
from tests.support.inprocess import StartWorker

API = "/api/certification-queue"
LAB_REGIONS = ("us-east-1", "eu-west-1")
ALL_REGIONS = (*LAB_REGIONS, "ap-southeast-1")
Headers = dict[str, str]


@pytest.fixture
def catalog(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Two sim providers: `lab` (quick, steady, denied) in two regions, `edge` in a third."""
    with transaction(factory) as session:
        repo.add_provider(
            session, slug="lab", kind="sim", regions=list(LAB_REGIONS), config={"seed": 7}
        )
        repo.add_provider(session, slug="edge", kind="sim", regions=["ap-southeast-1"])
        for slug, name, profile, latency in (
            ("lab", "quick", "healthy-fast", 20),
            ("lab", "steady", "healthy-fast", 150),
            ("lab", "denied", "access-denied", 20),
            ("edge", "tiny", "healthy-fast", 20),
        ):
            repo.add_deployment(
                session,
                provider_slug=slug,
                provider_model_id=name,
                options={"profile": profile, "latency_ms": latency},
            )
    return factory


@pytest.fixture
def client(settings: Settings, catalog: sessionmaker[Session]) -> Iterator[TestClient]:
    """The API, with the worker's settings (the queues it registers are the worker's)."""
    with TestClient(create_app(settings, session_factory=catalog)) as test_client:
        yield test_client


def new_key(factory: sessionmaker[Session], name: str, role: Role) -> Headers:
    with transaction(factory) as session:
        _, plain = api_keys.create_api_key(session, name, role)
    return {"Authorization": f"Bearer {plain}"}


@pytest.fixture
def operator(catalog: sessionmaker[Session]) -> Headers:
    return new_key(catalog, "ops", Role.operator)


@pytest.fixture
def viewer(catalog: sessionmaker[Session]) -> Headers:
    return new_key(catalog, "dashboard", Role.viewer)


@pytest.fixture(autouse=True)
def quick_event_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The event streams look for progress every 50 ms (0.5 s in production)."""
    monkeypatch.setattr(sse, "POLL_S", 0.05)


def wait_for_job(client: TestClient, headers: Headers, job_id: str, timeout: float = 90) -> Any:
    """The job's summary once COMPLETED or CANCELLED, read through the API."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"{API}/jobs/{job_id}", headers=headers).json()
        if body["status"] in ("COMPLETED", "CANCELLED"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def certify(client: TestClient, headers: Headers, model: str | int, region: str) -> Any:
    return client.post(
        f"{API}/certify-model", json={"modelId": model, "region": region}, headers=headers
    )


def deployment_id(factory: sessionmaker[Session], ref: str) -> int:
    with transaction(factory) as session:
        return repo.find_deployment(session, ref).id


# Authentication and roles


def test_keys_and_roles_are_required(client: TestClient, viewer: Headers) -> None:
    assert certify(client, {}, "lab/quick", "us-east-1").status_code == 401
    assert client.get(f"{API}/stats").status_code == 401
    assert client.get(f"{API}/jobs/x/events").status_code == 401

    refused = certify(client, viewer, "lab/quick", "us-east-1")
    assert refused.status_code == 403
    assert "operator role" in refused.json()["detail"]
    assert client.delete(f"{API}/jobs/x", headers=viewer).status_code == 403
    assert client.post(f"{API}/recertify", headers=viewer).status_code == 403
    assert client.get(f"{API}/stats", headers=viewer).status_code == 200


# Queue, worker, progress


def read_events(
    response: Any, on_first_progress: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """Every `data:` event of an SSE response until the server ends the stream."""
    events: list[dict[str, Any]] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: ") :]))
            if on_first_progress and events[-1]["type"] == "progress" and len(events) == 1:
                on_first_progress()
    return events


def test_a_queued_certification_waits_for_a_worker_and_streams_its_progress(
    client: TestClient,
    catalog: sessionmaker[Session],
    operator: Headers,
    viewer: Headers,
    start_worker: StartWorker,
) -> None:
    created = certify(client, operator, "lab/steady", "us-east-1")
    assert created.status_code == 201
    body = created.json()
    job_id = body["jobId"]
    assert body["modelId"] == "lab/steady" and body["region"] == "us-east-1"
    assert (body["status"], body["deployment"], body["priority"]) == (
        "QUEUED",
        "lab/steady",
        "normal",
    )

    time.sleep(0.2)  # no worker: nothing is lost, nothing runs
    job = client.get(f"{API}/jobs/{job_id}", headers=viewer).json()
    assert (job["status"], job["kind"], job["total"], job["createdBy"]) == (
        "QUEUED",
        "SINGLE",
        1,
        "ops",
    )
    assert [c["status"] for c in job["certifications"]] == ["QUEUED"]

    # The same deployment, by id this time, is already queued.
    again = certify(client, operator, deployment_id(catalog, "lab/steady"), "us-east-1")
    assert again.status_code == 409
    assert "already queued or running" in again.json()["detail"]
    assert again.json()["field"] == "modelId"

    status_at_first_event: list[str] = []

    def note_status() -> None:
        with transaction(catalog) as session:
            status_at_first_event.append(job_summary(session, job_id)["status"])

    with (
        ThreadPoolExecutor(1) as starter,
        client.stream("GET", f"{API}/jobs/{job_id}/events", headers=viewer) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        # Only now: the stream is open and waiting. The worker starts in a thread, so that
        # the events are read as they come while it does.
        started = starter.submit(start_worker, regions=ALL_REGIONS, executor_id="api-worker-1")
        events = read_events(stream, note_status)
        started.result()

    progress, final = events[:-1], events[-1]
    assert status_at_first_event and status_at_first_event[0] != "COMPLETED"  # live, not replayed
    assert {e["type"] for e in progress} == {"progress"}
    assert [e["current"] for e in progress] == list(range(1, len(progress) + 1))
    assert len({e["testName"] for e in progress}) == len(progress)  # each test once
    assert progress[-1]["total"] == len(progress)
    assert {(e["deployment"], e["region"]) for e in progress} == {("lab/steady", "us-east-1")}
    assert {"basic-prompt", "streaming", "availability"} <= {e["testName"] for e in progress}
    assert final["type"] == "complete"
    assert final["job"]["status"] == "COMPLETED"
    assert final["certification"]["status"] == "CERTIFIED"

    done = client.get(f"{API}/jobs/{job_id}", headers=viewer).json()
    assert (done["status"], done["processed"], done["succeeded"], done["failed"]) == (
        "COMPLETED",
        1,
        1,
        0,
    )
    [row] = done["certifications"]
    assert (row["status"], row["deployment"], row["executorId"]) == (
        "CERTIFIED",
        "lab/steady",
        "api-worker-1",
    )
    passed = [e for e in progress if e["status"] == "PASSED"]
    assert row["runId"] and row["testsPassed"] == row["testsTotal"] == len(passed)
    assert {e["status"] for e in progress} <= {"PASSED", "SKIPPED"}  # skipped: not declared


def test_event_stream_sends_heartbeats_and_stops_when_the_client_leaves(
    client: TestClient, operator: Headers, viewer: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(sse, "POLL_S", 0.05)
    job_id = certify(client, operator, "lab/quick", "eu-west-1").json()["jobId"]
    with client.stream("GET", f"{API}/jobs/{job_id}/events", headers=viewer) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line) == ": heartbeat"
    # Leaving the block disconnected the client; the server-side stream was cancelled
    # (a stream that ignored it would hang here) and the app still answers.
    assert client.get(f"{API}/jobs/{job_id}", headers=viewer).json()["status"] == "QUEUED"
    missing = client.get(f"{API}/jobs/no-such-job/events", headers=viewer)
    assert missing.status_code == 404 and missing.json()["field"] == "jobId"


def test_certify_multiple_queues_the_new_and_refuses_the_duplicates(
    client: TestClient, operator: Headers, viewer: Headers
) -> None:
    assert certify(client, operator, "lab/quick", "us-east-1").status_code == 201
    payload = {"modelIds": ["lab/quick", "lab/steady"], "regions": ["us-east-1"]}
    partial = client.post(f"{API}/certify-multiple", json=payload, headers=operator)
    assert partial.status_code == 201
    body = partial.json()
    assert (body["kind"], body["priority"]) == ("MULTIPLE", "normal")
    assert [(q["deployment"], q["region"]) for q in body["queued"]] == [("lab/steady", "us-east-1")]
    assert [r["deployment"] for r in body["refused"]] == ["lab/quick"]
    assert "already queued or running" in body["refused"][0]["reason"]
    job = client.get(f"{API}/jobs/{body['jobId']}", headers=viewer).json()
    assert (job["total"], job["status"]) == (1, "QUEUED")

    all_refused = client.post(f"{API}/certify-multiple", json=payload, headers=operator)
    assert all_refused.status_code == 409
    assert len(all_refused.json()["refused"]) == 2
    assert "all 2 requested certifications are already" in all_refused.json()["detail"]


def test_a_cancelled_job_never_runs(
    client: TestClient,
    catalog: sessionmaker[Session],
    operator: Headers,
    viewer: Headers,
    start_worker: StartWorker,
) -> None:
    payload = {"modelIds": ["lab/quick"], "regions": list(LAB_REGIONS), "priority": "high"}
    job_id = client.post(f"{API}/certify-multiple", json=payload, headers=operator).json()["jobId"]
    assert client.delete(f"{API}/jobs/{job_id}", headers=viewer).status_code == 403
    cancelled = client.delete(f"{API}/jobs/{job_id}", headers=operator)
    assert cancelled.status_code == 200
    assert cancelled.json() == {"jobId": job_id, "cancelled": 2, "status": "CANCELLED"}
    job = client.get(f"{API}/jobs/{job_id}", headers=viewer).json()
    assert job["status"] == "CANCELLED"
    assert {c["status"] for c in job["certifications"]} == {"CANCELLED"}
    twice = client.delete(f"{API}/jobs/{job_id}", headers=operator)
    assert twice.status_code == 409 and "already CANCELLED" in twice.json()["detail"]
    assert client.delete(f"{API}/jobs/nope", headers=operator).status_code == 404

    worker = start_worker(regions=ALL_REGIONS, executor_id="api-worker-1")
    later = certify(client, operator, "lab/steady", "us-east-1").json()["jobId"]
    worker.drain()
    assert wait_for_job(client, viewer, later)["status"] == "COMPLETED"
    # The worker served the queue, and the cancelled job's work was never started.
    assert client.get(f"{API}/jobs/{job_id}", headers=viewer).json()["status"] == "CANCELLED"
    with transaction(catalog) as session:
        runs = session.scalars(select(CertificationRun).where(CertificationRun.job_id == job_id))
        assert list(runs) == []
    history = client.get(f"{API}/history", params={"modelId": "lab/quick"}, headers=viewer)
    assert history.json()["total"] == 0


# Reading: history, certifications, runs, stats


def page(client: TestClient, headers: Headers, path: str, **params: Any) -> Any:
    response = client.get(f"{API}/{path}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_after_a_batch_the_verdicts_can_be_read_page_by_page(
    client: TestClient,
    operator: Headers,
    viewer: Headers,
    start_worker: StartWorker,
) -> None:
    worker = start_worker(regions=ALL_REGIONS, executor_id="api-worker-1")
    batch = client.post(f"{API}/certify-all", json={"provider": "lab"}, headers=operator)
    assert batch.status_code == 201
    assert len(batch.json()["queued"]) == 6  # 3 deployments × 2 regions
    worker.drain()
    done = wait_for_job(client, viewer, batch.json()["jobId"])
    assert (done["kind"], done["processed"], done["succeeded"], done["failed"]) == (
        "ALL",
        6,
        4,
        2,
    )

    executors = {row["executorId"] for row in done["certifications"]}
    assert executors == {"api-worker-1"}

    first = page(client, viewer, "history", pageSize=4)
    assert (first["total"], first["page"], first["pageSize"], len(first["items"])) == (6, 1, 4, 4)
    second = page(client, viewer, "history", pageSize=4, page=2)
    run_ids = [r["runId"] for r in first["items"] + second["items"]]
    assert run_ids == sorted(run_ids, reverse=True) and len(set(run_ids)) == 6
    assert page(client, viewer, "history", pageSize=4, page=3)["items"] == []
    assert page(client, viewer, "history", status="FAILED")["total"] == 2
    assert page(client, viewer, "history", region="eu-west-1")["total"] == 3
    denied = page(client, viewer, "history", modelId="lab/denied")
    assert {r["errorCategory"] for r in denied["items"]} == {"PERMISSION_ERROR"}

    certs = page(client, viewer, "certifications", pageSize=2)
    assert (certs["total"], len(certs["items"])) == (6, 2)
    listed = [
        (c["deployment"], c["region"])
        for p in (1, 2, 3)
        for c in page(client, viewer, "certifications", pageSize=2, page=p)["items"]
    ]
    assert listed == sorted(listed)
    valid = page(client, viewer, "certifications", valid="true")
    assert valid["total"] == 4 and all(c["valid"] for c in valid["items"])
    invalid = page(client, viewer, "certifications", valid="false")
    assert {c["deployment"] for c in invalid["items"]} == {"lab/denied"}
    one = page(client, viewer, "certifications", modelId="lab/quick", region="us-east-1")
    assert [(c["status"], c["provider"], c["modelId"]) for c in one["items"]] == [
        ("CERTIFIED", "lab", "quick")
    ]
    assert page(client, viewer, "certifications", provider="edge")["total"] == 0
    assert page(client, viewer, "certifications", status="FAILED")["total"] == 2
    for params, field in (({"provider": "nope"}, "provider"), ({"modelId": "lab/x"}, "modelId")):
        missing = client.get(f"{API}/certifications", params=params, headers=viewer)
        assert (missing.status_code, missing.json()["field"]) == (404, field)

    # One certification with its history, and the failing run in detail.
    detail = page(client, viewer, f"certifications/{denied['items'][0]['deploymentId']}/us-east-1")
    assert detail["certification"]["status"] == "FAILED"
    assert detail["certification"]["errorCategory"] == "PERMISSION_ERROR"
    [history_run] = detail["runs"]
    run = page(client, viewer, f"runs/{history_run['runId']}")
    failing = run["tests"][0]
    assert (failing["outcome"], failing["errorCategory"], failing["errorSeverity"]) == (
        "FAILED",
        "PERMISSION_ERROR",
        "CRITICAL",
    )
    assert (failing["errorCode"], failing["httpStatus"]) == ("AccessDeniedException", 403)
    assert "You don't have access to the model" in failing["errorMessage"]
    assert {t["outcome"] for t in run["tests"][1:]} == {"SKIPPED"}

    good = page(client, viewer, "history", modelId="lab/quick", pageSize=1)["items"][0]
    passed = page(client, viewer, f"runs/{good['runId']}")["tests"][0]
    assert passed["outcome"] == "PASSED" and passed["latencyMs"] > 0
    assert passed["ttftMs"] is not None and passed["outputTokens"]
    assert set(passed) >= {"testId", "retries", "attempts", "inputTokens", "title", "detail"}
    assert client.get(f"{API}/runs/999999", headers=viewer).status_code == 404

    stats = page(client, viewer, "stats")
    assert (stats["completed"], stats["waiting"], stats["active"]) == (6, 0, 0)
    assert stats["byStatus"] == {"CERTIFIED": 4, "FAILED": 2}
    assert stats["validCertifications"] == 4
    assert set(stats["byRegion"]) == set(LAB_REGIONS)
    assert [r["runId"] for r in stats["recent"]] == sorted(run_ids, reverse=True)


def test_regions_recertify_and_delayed_work(
    client: TestClient, catalog: sessionmaker[Session], operator: Headers, viewer: Headers
) -> None:
    regions = page(client, viewer, "regions")
    assert regions["regions"] == sorted(ALL_REGIONS)
    assert {p["provider"]: p["regions"] for p in regions["providers"]} == {
        "edge": ["ap-southeast-1"],
        "lab": list(LAB_REGIONS),
    }

    nothing = client.post(f"{API}/recertify", headers=operator)
    assert nothing.status_code == 200 and nothing.json()["jobId"] is None
    with transaction(catalog) as session:
        session.add(
            Certification(
                deployment_id=repo.find_deployment(session, "edge/tiny").id,
                region="ap-southeast-1",
                status="FAILED",
                completed_at=utcnow(),
            )
        )
    again = client.post(f"{API}/recertify", headers=operator)
    assert again.status_code == 201
    assert (again.json()["kind"], again.json()["priority"]) == ("RECERTIFY", "low")
    assert [q["deployment"] for q in again.json()["queued"]] == ["edge/tiny"]

    delayed = client.post(
        f"{API}/certify-model",
        json={"modelId": "lab/quick", "region": "us-east-1", "delaySeconds": 3600},
        headers=operator,
    )
    assert delayed.status_code == 201
    stats = page(client, viewer, "stats")
    assert (stats["delayed"], stats["waiting"]) == (1, 1)
    assert stats["byStatus"] == {"QUEUED": 2}


# Validation: every bad input is a 4xx naming the field


ONE = {"modelId": "quick", "region": "us-east-1"}
BAD_BODIES: list[tuple[str, dict[str, Any], int, str]] = [
    ("certify-model", {"region": "us-east-1"}, 422, "modelId"),
    ("certify-model", {"modelId": "", "region": "us-east-1"}, 422, "modelId"),
    ("certify-model", {"modelId": "lab/quick", "region": "mars-1"}, 404, "region"),
    ("certify-model", {"modelId": "lab/nope", "region": "us-east-1"}, 404, "modelId"),
    ("certify-model", {**ONE, "priority": "now"}, 422, "priority"),
    ("certify-model", {**ONE, "delaySeconds": -1}, 422, "delaySeconds"),
    ("certify-model", {**ONE, "regoin": "x"}, 422, "regoin"),
    ("certify-multiple", {"modelIds": ["lab/quick"], "regions": []}, 422, "regions"),
    ("certify-multiple", {"modelIds": [], "regions": ["us-east-1"]}, 422, "modelIds"),
    ("certify-multiple", {"modelIds": ["quick"], "regions": ["mars-1"]}, 404, "regions"),
    ("certify-multiple", {"modelIds": ["nope"], "regions": ["us-east-1"]}, 404, "modelIds"),
    ("certify-all", {"regions": []}, 422, "regions"),
    ("certify-all", {"regions": ["mars-1"]}, 404, "regions"),
    ("certify-all", {"regions": ["ap-southeast-1"], "provider": "lab"}, 404, "regions"),
    ("certify-all", {"provider": "nope"}, 404, "provider"),
    ("recertify", {"priority": "urgent"}, 422, "priority"),
]


def test_bad_bodies_name_the_field(client: TestClient, operator: Headers) -> None:
    for path, payload, code, field in BAD_BODIES:
        response = client.post(f"{API}/{path}", json=payload, headers=operator)
        case = (path, payload, response.text)
        assert response.status_code == code, case
        assert response.json()["field"] == field, case
        if code == 422:
            assert response.json()["detail"].startswith(f"{field}: "), case
    malformed = client.post(
        f"{API}/certify-model",
        content=b'{"modelId": ',
        headers={**operator, "Content-Type": "application/json"},
    )
    assert malformed.status_code == 422


def test_bad_queries_and_paths_name_the_field(client: TestClient, viewer: Headers) -> None:
    cases = [
        ("history", {"pageSize": 0}, "pageSize"),
        ("history", {"pageSize": 201}, "pageSize"),
        ("history", {"page": 0}, "page"),
        ("history", {"status": "GREAT"}, "status"),
        ("certifications", {"valid": "maybe"}, "valid"),
        ("runs/abc", {}, "runId"),
        ("certifications/1/us-east-1", {"runs": 0}, "runs"),
    ]
    for path, params, field in cases:
        response = client.get(f"{API}/{path}", params=params, headers=viewer)
        assert response.status_code == 422, (path, params)
        assert response.json()["field"] == field
        assert response.json()["detail"].startswith(f"{field}: ")
    unknown = client.get(f"{API}/jobs/nope", headers=viewer)
    assert unknown.status_code == 404 and unknown.json()["field"] == "jobId"
    never = client.get(f"{API}/certifications/quick/us-east-1", headers=viewer)  # by name
    assert (never.status_code, never.json()["field"]) == (404, "region")
    assert "never been certified" in never.json()["detail"]


def test_openapi_documents_the_camel_case_contract(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("certify-model", "certify-multiple", "certify-all", "recertify", "history"):
        assert f"{API}/{path}" in paths
    body = schema["components"]["schemas"]["CertifyModelRequest"]["properties"]
    assert set(body) == {
        "modelId",
        "region",
        "priority",
        "delaySeconds",
        "suites",
        "smoke",
        "budgetUsd",
    }
    assert "409" in paths[f"{API}/certify-model"]["post"]["responses"]
    events = paths[f"{API}/jobs/{{jobId}}/events"]["get"]["responses"]["200"]["content"]
    assert "text/event-stream" in events
