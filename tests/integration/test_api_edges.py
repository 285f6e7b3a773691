"""The API's edges through the real app (api/edges.py), on SQLite and PostgreSQL: the key
checked before any body is read, the body-size limit, the failed-auth counter and
per-client limit, the dashboard's security headers and login Origin check, a non-ASCII
CSRF token, the last admin key, and the per-key cap and lifetime of progress streams."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api import edges
from modelcert.api.app import create_app
from modelcert.domain import JobKind
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import Job
from tests.support.keys import bearer, new_key

D = "/dashboard"
Q = "/api/certification-queue"


@pytest.fixture
def app(settings: Settings, factory: sessionmaker[Session]) -> FastAPI:
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1"])
        repo.add_deployment(session, provider_slug="lab", provider_model_id="quick")
    return create_app(settings, session_factory=factory)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def new_job(factory: sessionmaker[Session]) -> str:
    with transaction(factory) as session:
        job = Job(kind=JobKind.SINGLE.value)
        session.add(job)
        session.flush()
        return job.id


def call_asgi(app: FastAPI, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bool]:
    """POST `body` straight to the ASGI app; its status, and whether the body was read."""
    read = False
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("192.0.2.7", 5000),
        "server": ("testserver", 80),
        "app": app,
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    start = next(m for m in messages if m["type"] == "http.response.start")
    return start["status"], read


def test_the_key_is_checked_before_the_body_is_read(app: FastAPI) -> None:
    big = b'{"modelId": "' + b"x" * (2 * edges.MAX_BODY_BYTES) + b'"}'
    for headers in ({}, {"Authorization": "Bearer mc_" + "A" * 43}):
        status, read = call_asgi(
            app, f"{Q}/certify-model", {"content-type": "application/json", **headers}, big
        )
        assert (status, read) == (401, False), headers


def test_a_body_over_the_limit_is_413(
    client: TestClient, factory: sessionmaker[Session], app: FastAPI
) -> None:
    key = new_key(factory, "ops", Role.operator)
    big = '{"modelId": "' + "x" * edges.MAX_BODY_BYTES + '", "region": "us-east-1"}'
    response = client.post(
        f"{Q}/certify-model",
        content=big,
        headers={**bearer(key), "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["field"] == "body"
    # Without a Content-Length (a streamed body), refused once past the limit.
    chunks = (b"x" * 65536 for _ in range(edges.MAX_BODY_BYTES // 65536 + 2))
    response = client.post(
        f"{Q}/certify-model",
        content=chunks,
        headers={**bearer(key), "content-type": "application/json"},
    )
    assert response.status_code == 413


def test_failed_authentications_are_counted_and_limited_per_client(
    client: TestClient, factory: sessionmaker[Session], app: FastAPI
) -> None:
    app.state.auth_limiter = edges.FailedAuthLimiter(limit=3, window_s=60)
    good = new_key(factory, "viewer", Role.viewer)
    assert client.get("/api/whoami").status_code == 401  # missing: not a guess, not limited
    for _ in range(3):
        response = client.get("/api/whoami", headers=bearer("mc_" + "B" * 43))
        assert response.status_code == 401
    refused = client.get("/api/whoami", headers=bearer(good))  # even a good key, now
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["field"] == "Authorization"
    # The dashboard's login shares the limit.
    login = client.post(f"{D}/login", data={"api_key": good})
    assert login.status_code == 429 and "Retry-After" in login.headers
    metrics = app.state.auth_metrics
    assert metrics.count("api", "missing") == 1
    assert metrics.count("api", "invalid") == 3
    assert metrics.count("api", "rate_limited") == 1
    assert metrics.count("dashboard", "rate_limited") == 1
    scraped = client.get("/metrics").text
    assert 'modelcert_api_auth_failures_total{reason="invalid",surface="api"} 3.0' in scraped
    # Another client is not limited.
    app.state.auth_limiter = edges.FailedAuthLimiter(limit=3, window_s=60)
    assert client.get("/api/whoami", headers=bearer(good)).status_code == 200


def test_dashboard_pages_carry_security_headers(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    key = new_key(factory, "viewer", Role.viewer)
    login_page = client.get(f"{D}/login")
    assert "frame-ancestors 'none'" in login_page.headers["content-security-policy"]
    assert client.post(f"{D}/login", data={"api_key": key}).status_code == 303
    for path in ("/", "/matrix", "/jobs", "/jobs?date_from=&date_to=&status=", "/runs/99"):
        response = client.get(D + path)
        assert response.status_code in (200, 404), path
        headers = response.headers
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["cache-control"] == "no-store", path
    static = client.get(f"{D}/static/dashboard.css")
    assert static.headers["cache-control"] == "max-age=300"
    assert client.get("/api/health").headers["x-content-type-options"] == "nosniff"


def test_the_jobs_filter_treats_empty_dates_as_absent_and_bounds_them(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    key = new_key(factory, "viewer", Role.viewer)
    client.post(f"{D}/login", data={"api_key": key})
    assert client.get(f"{D}/jobs", params={"date_from": "", "date_to": ""}).status_code == 200
    for date in ("0001-01-01", "9999-12-31"):
        response = client.get(f"{D}/jobs", params={"date_to": date})
        assert response.status_code == 422
        assert response.json()["field"] == "date_to"


def test_login_from_another_site_is_refused(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    key = new_key(factory, "viewer", Role.viewer)
    for headers in (
        {"Origin": "https://evil.test"},
        {"Referer": "https://evil.test/page"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
    ):
        response = client.post(f"{D}/login", data={"api_key": key}, headers=headers)
        assert response.status_code == 403, headers
        assert "another site" in response.text
    same = client.post(f"{D}/login", data={"api_key": key}, headers={"Origin": "http://testserver"})
    assert same.status_code == 303


def test_a_non_ascii_csrf_token_is_a_403(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    client.post(f"{D}/login", data={"api_key": new_key(factory, "ops", Role.operator)})
    for token in ("é" * 43, "\x00", "☃"):
        response = client.post(f"{D}/regions/us-east-1/pause", data={"csrf_token": token})
        assert response.status_code == 403, token
        assert "CSRF" in response.text


def test_the_last_active_admin_key_cannot_be_revoked(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    root = new_key(factory, "root", Role.admin)
    response = client.delete("/api/keys/root", headers=bearer(root))
    assert response.status_code == 409
    assert response.json() == {
        "detail": "API key 'root' is the last active admin key: create another admin key "
        "before revoking it",
        "field": "name",
    }
    new_key(factory, "root-2", Role.admin)
    assert client.delete("/api/keys/root", headers=bearer(root)).status_code == 200
    second = new_key(factory, "root-3", Role.admin)
    assert client.delete("/api/keys/root-2", headers=bearer(second)).status_code == 200
    assert client.delete("/api/keys/root-3", headers=bearer(second)).status_code == 409


def test_progress_streams_are_capped_per_key_and_end_after_their_lifetime(
    client: TestClient, factory: sessionmaker[Session], app: FastAPI
) -> None:
    app.state.stream_slots = edges.StreamSlots(limit=1)
    app.state.stream_max_s = 1.0
    key, other = new_key(factory, "viewer", Role.viewer), new_key(factory, "v2", Role.viewer)
    job = new_job(factory)
    url = f"{Q}/jobs/{job}/events"
    with client.stream("GET", url, headers=bearer(key)) as first:
        assert first.status_code == 200
        second = client.get(url, headers=bearer(key))
        assert second.status_code == 429
        assert second.headers["Retry-After"] == str(edges.STREAM_RETRY_AFTER_S)
        with client.stream("GET", url, headers=bearer(other)) as theirs:
            assert theirs.status_code == 200  # another key has its own slots
            theirs.close()
        text = "".join(first.iter_text())  # the job never finishes: the lifetime ends it
    assert re.search(r'"type":"timeout"', text)
    assert app.state.stream_slots.open_count("viewer") == 0
    with client.stream("GET", url, headers=bearer(key)) as again:
        assert again.status_code == 200


def test_a_query_parameter_a_route_does_not_take_is_refused_naming_it(
    settings: Settings, factory: sessionmaker[Session]
) -> None:
    """As an unknown body field is: `?regoin=` silently ignored would answer for every
    region. Routes' own parameters (and their dependencies') still pass."""
    app = create_app(settings, session_factory=factory)
    client = TestClient(app)
    assert client.get("/api/health").status_code == 200
    refused = client.get("/api/health", params={"verbose": "1"})
    assert refused.status_code == 422 and refused.json()["field"] == "verbose"
    headers = bearer(new_key(factory, "q", Role.viewer))
    kept = client.get("/api/suites", params={"includeRemoved": "true"}, headers=headers)
    assert kept.status_code == 200
    typo = client.get("/api/cost", params={"regoin": "eu-west-1"}, headers=headers)
    assert typo.status_code == 422 and typo.json()["field"] == "regoin"
    assert "region" in typo.json()["detail"]
