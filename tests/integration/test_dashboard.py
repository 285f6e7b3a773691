"""The web dashboard through FastAPI's TestClient, on SQLite and PostgreSQL: login with an
API key, roles, CSRF, filters, and the operator actions against the real durable queue
(and a real worker, inside the test process, where a run is needed)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from html import unescape

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api import sse
from modelcert.api.app import create_app
from modelcert.domain import JobKind, Priority
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.queues import dbos_table, queue_name
from modelcert.settings import Settings
from modelcert.store import api_keys, audit, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import Certification, Job
from modelcert.store.worker_models import RegionPause
from modelcert.worker.main import Worker
from tests.support.inprocess import StartWorker
from tests.support.keys import new_key

D = "/dashboard"
REGIONS = ("us-east-1", "eu-west-1")


@pytest.fixture
def queue_settings(settings: Settings) -> Settings:
    """What the API, the enqueuers and the in-process worker share (the queues' polling)."""
    return settings


@pytest.fixture
def catalog(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """A sim provider `lab` in two regions: one quick healthy model, one access-denied."""
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=list(REGIONS))
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
                options={"profile": profile, "latency_ms": 20},
            )
    return factory


@pytest.fixture
def client(queue_settings: Settings, catalog: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(queue_settings, session_factory=catalog)
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def log_in(client: TestClient, key: str) -> None:
    response = client.post(f"{D}/login", data={"api_key": key, "next": f"{D}/"})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"{D}/"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


@pytest.fixture
def operator(client: TestClient, catalog: sessionmaker[Session]) -> str:
    """Logs the client in as an operator; returns the session's CSRF token."""
    log_in(client, new_key(catalog, "ops", Role.operator))
    return csrf_of(client.get(f"{D}/").text)


def audited(factory: sessionmaker[Session]) -> list[tuple[str, str, str, str]]:
    """The audit log, oldest first: (action, target, actor, interface)."""
    with factory() as session:
        found = audit.entries(session)
    return [(e.action, e.target, e.actor, e.interface) for e in reversed(found)]


def enqueue(
    settings: Settings,
    factory: sessionmaker[Session],
    targets: list[tuple[str | int, str]],
    by: str,
    priority: Priority = Priority.NORMAL,
) -> str:
    enqueuer = Enqueuer(factory.kw["bind"], settings)
    try:
        result = enqueuer.enqueue(
            factory, targets, kind=JobKind.MULTIPLE, priority=priority, created_by=by
        )
    finally:
        enqueuer.close()
    assert result.job_id is not None
    return result.job_id


# Login, sessions, roles


def test_every_page_needs_a_login_and_no_default_credentials_exist(client: TestClient) -> None:
    for path in ("/", "/matrix", "/jobs", "/jobs/x", "/runs/1", "/jobs/x/events"):
        response = client.get(D + path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith(f"{D}/login?next=")
    assert client.get(f"{D}/login").status_code == 200
    for guess in ("", "admin", "admin:admin", "mc_" + "A" * 43):
        refused = client.post(f"{D}/login", data={"api_key": guess})
        assert refused.status_code == 401
        assert "Invalid or revoked API key" in refused.text
    assert client.post(f"{D}/regions/us-east-1/pause", data={}).status_code == 303


def test_login_sets_a_safe_cookie_that_never_holds_the_key(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    key = new_key(catalog, "viewer-1", Role.viewer)
    response = client.post(f"{D}/login", data={"api_key": key, "next": "https://evil.test/"})
    assert response.status_code == 303
    assert response.headers["location"] == f"{D}/"  # never an open redirect
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Path=/dashboard" in cookie
    assert key not in cookie and key[3:20] not in cookie
    with catalog() as session:
        stored = session.execute(text("SELECT token_hash, csrf_token FROM dashboard_sessions"))
        assert all(key not in value for row in stored for value in row)
    page = client.get(f"{D}/")
    assert page.status_code == 200 and "viewer-1" in page.text

    # Over https (here: a proxy saying so) the cookie is also Secure.
    https = client.post(f"{D}/login", data={"api_key": key}, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in https.headers["set-cookie"]

    client.post(f"{D}/logout")
    assert client.get(f"{D}/").status_code == 303


def test_revoking_the_key_ends_its_dashboard_sessions(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    log_in(client, new_key(catalog, "temp", Role.operator))
    assert client.get(f"{D}/matrix").status_code == 200
    with transaction(catalog) as session:
        api_keys.revoke_api_key(session, "temp")
    assert client.get(f"{D}/matrix").status_code == 303


def test_a_viewer_reads_everything_and_can_do_nothing(
    client: TestClient, catalog: sessionmaker[Session], queue_settings: Settings
) -> None:
    job_id = enqueue(queue_settings, catalog, [("lab/quick", "us-east-1")], by="someone")
    log_in(client, new_key(catalog, "viewer-1", Role.viewer))
    for path in ("/", "/matrix", "/jobs", f"/jobs/{job_id}"):
        page = client.get(D + path)
        assert page.status_code == 200, path
        assert "csrf_token" not in page.text and 'class="action' not in page.text, path
    # A viewer has a CSRF token for its session all the same: the role decides.
    with catalog() as session:
        token = session.scalars(text("SELECT csrf_token FROM dashboard_sessions")).one()
    for action in (
        f"/jobs/{job_id}/cancel",
        f"/jobs/{job_id}/retry",
        f"/jobs/{job_id}/priority",
        "/regions/us-east-1/pause",
        "/certifications/1/us-east-1/recertify",
    ):
        refused = client.post(D + action, data={"csrf_token": token, "priority": "high"})
        assert refused.status_code == 403, action
        assert "operator role" in refused.text
    with catalog() as session:
        assert session.get(Job, job_id).status == "QUEUED"  # type: ignore[union-attr]


def test_operator_actions_need_the_session_csrf_token(
    client: TestClient, operator: str, catalog: sessionmaker[Session]
) -> None:
    for token in (None, "", "forged"):
        data = {} if token is None else {"csrf_token": token}
        refused = client.post(f"{D}/regions/us-east-1/pause", data=data)
        assert refused.status_code == 403
        assert "CSRF" in refused.text
    with catalog() as session:
        assert session.scalars(select(RegionPause)).all() == []


# Operator actions on the real queue


def test_pause_and_resume_a_region_durably(
    client: TestClient, operator: str, catalog: sessionmaker[Session], queue_settings: Settings
) -> None:
    done = client.post(f"{D}/regions/eu-west-1/pause", data={"csrf_token": operator})
    assert done.status_code == 303
    page = client.get(done.headers["location"])
    assert "Region eu-west-1 paused" in page.text
    assert re.search(r'id="region-eu-west-1">.*?PAUSED', page.text, re.S)
    assert not re.search(r'id="region-us-east-1">.*?PAUSED.*?</tr>', page.text.split("</tr>")[1])
    # Durable: the pause row and the queue's limits in the database (what workers poll).
    name = queue_name(queue_settings, "eu-west-1")
    with catalog() as session:
        assert session.get(RegionPause, "eu-west-1") is not None
        table = dbos_table(session.get_bind().dialect.name, "queues")
        limits = session.execute(
            text(f"SELECT concurrency, worker_concurrency FROM {table} WHERE name = :n"),
            {"n": name},
        ).one()
    assert tuple(limits) == (0, 0)

    again = client.post(f"{D}/regions/eu-west-1/pause", data={"csrf_token": operator})
    assert "already paused" in client.get(again.headers["location"]).text
    unknown = client.post(f"{D}/regions/mars-1/pause", data={"csrf_token": operator})
    assert "unknown region 'mars-1'" in unescape(client.get(unknown.headers["location"]).text)

    resumed = client.post(f"{D}/regions/eu-west-1/resume", data={"csrf_token": operator})
    assert "Region eu-west-1 resumed" in client.get(resumed.headers["location"]).text
    with catalog() as session:
        assert session.get(RegionPause, "eu-west-1") is None
        limits = session.execute(
            text(f"SELECT concurrency, worker_concurrency FROM {table} WHERE name = :n"),
            {"n": name},
        ).one()
    assert limits[0] == queue_settings.region_concurrency and limits[1] > 0
    # Audited as any interface's actions are: who, from the dashboard, what (changes only).
    assert audited(catalog) == [
        ("region.pause", "eu-west-1", "ops", "dashboard"),
        ("region.resume", "eu-west-1", "ops", "dashboard"),
    ]
    # The audit page, its form sent as a browser sends it (empty fields included).
    today = date.today()
    empty = {"actor": "", "action": "", "date_from": "", "date_to": ""}
    page = client.get(f"{D}/audit", params=empty)
    assert page.status_code == 200
    assert page.text.count("<td>region.") == 2 and "<td>dashboard</td>" in page.text
    narrowed = client.get(
        f"{D}/audit", params={**empty, "action": "region.pause", "date_from": str(today)}
    )
    assert narrowed.text.count("<td>region.") == 1
    before = client.get(f"{D}/audit", params={**empty, "date_to": str(today - timedelta(days=1))})
    assert "<td>region." not in before.text and "No action recorded matches" in before.text
    bad = client.get(f"{D}/audit", params={"date_from": "soon"})
    assert bad.status_code == 422 and bad.json()["field"] == "date_from"


def test_change_the_priority_of_a_queued_job_then_cancel_it(
    client: TestClient, operator: str, catalog: sessionmaker[Session], queue_settings: Settings
) -> None:
    job_id = enqueue(
        queue_settings,
        catalog,
        [("lab/quick", r) for r in REGIONS],
        by="ops",
        priority=Priority.LOW,
    )
    bad = client.post(
        f"{D}/jobs/{job_id}/priority", data={"csrf_token": operator, "priority": "urgent"}
    )
    assert "priority must be one of high, normal, low" in unescape(
        client.get(bad.headers["location"]).text
    )

    moved = client.post(
        f"{D}/jobs/{job_id}/priority", data={"csrf_token": operator, "priority": "high"}
    )
    assert (
        "2 queued certification(s) now have high priority"
        in client.get(moved.headers["location"]).text
    )
    with catalog() as session:
        table = dbos_table(session.get_bind().dialect.name, "workflow_status")
        priorities = session.scalars(
            text(f"SELECT priority FROM {table} WHERE workflow_uuid LIKE :p"),
            {"p": f"{job_id}:%"},
        ).all()
        assert priorities == [1, 1]
        assert session.get(Job, job_id).priority == "high"  # type: ignore[union-attr]

    cancelled = client.post(f"{D}/jobs/{job_id}/cancel", data={"csrf_token": operator})
    page = client.get(cancelled.headers["location"])
    assert f"Job {job_id} cancelled (2 unfinished" in page.text
    assert 'id="job-status"><span class="status status-cancelled">CANCELLED' in page.text
    again = client.post(f"{D}/jobs/{job_id}/cancel", data={"csrf_token": operator})
    assert "is already CANCELLED" in client.get(again.headers["location"]).text
    assert audited(catalog) == [
        ("job.priority", job_id, "ops", "dashboard"),
        ("job.cancel", job_id, "ops", "dashboard"),
    ]


def test_job_filters(
    client: TestClient, operator: str, catalog: sessionmaker[Session], queue_settings: Settings
) -> None:
    lab_east = enqueue(queue_settings, catalog, [("lab/quick", "us-east-1")], by="alice")
    lab_west = enqueue(queue_settings, catalog, [("lab/denied", "eu-west-1")], by="bob")
    edge = enqueue(queue_settings, catalog, [("edge/tiny", "ap-southeast-1")], by="alice")

    def listed(**params: str) -> set[str]:
        page = client.get(f"{D}/jobs", params=params)
        assert page.status_code == 200
        return set(re.findall(r'href="/dashboard/jobs/([0-9a-f-]{36})"', page.text))

    assert listed() == {lab_east, lab_west, edge}
    assert listed(requester="alice") == {lab_east, edge}
    assert listed(provider="lab") == {lab_east, lab_west}
    assert listed(region="eu-west-1") == {lab_west}
    assert listed(model="tiny") == {edge}
    assert listed(q="denied") == {lab_west}
    assert listed(q=lab_east[:8]) == {lab_east}
    assert listed(q="%") == set()  # a wildcard is a character here, not "anything"
    assert listed(status="QUEUED", provider="edge") == {edge}
    assert listed(status="COMPLETED") == set()
    assert listed(date_from="2000-01-01", date_to="2000-01-02") == set()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert listed(date_from=today, date_to=today) == {lab_east, lab_west, edge}
    assert client.get(f"{D}/jobs", params={"date_from": "yesterday"}).status_code == 422


# A failure explained, then retried (a real worker, in this process, runs the certifications)


@pytest.fixture
def worker(start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch) -> Callable[[], Worker]:
    """Starts the worker (in this process); the job pages' streams poll every 50 ms."""
    monkeypatch.setattr(sse, "POLL_S", 0.05)
    return lambda: start_worker(regions=REGIONS, executor_id="dash-worker")


def wait_for(client: TestClient, job_id: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = client.get(f"{D}/jobs/{job_id}").text
        if 'data-live="false"' in page:
            return page
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_failure_is_explained_and_retried(
    client: TestClient,
    operator: str,
    catalog: sessionmaker[Session],
    queue_settings: Settings,
    worker: Callable[[], Worker],
) -> None:
    job_id = enqueue(
        queue_settings, catalog, [("lab/quick", "us-east-1"), ("lab/denied", "us-east-1")], "ops"
    )
    worker().drain()
    page = wait_for(client, job_id)
    assert "Why it failed" in page
    assert "PERMISSION_ERROR" in page
    assert "SIMULATION" in page
    failures = page.split('id="failures"')[1].split("</section>")[0]
    assert "lab/denied in us-east-1" in failures and "lab/quick" not in failures
    # The provider's own words, not only our category.
    assert "have access to the model with the specified model ID" in unescape(failures)

    matrix = client.get(f"{D}/matrix").text
    assert 'data-cell="lab/denied@us-east-1"' in matrix and "CERTIFIED" in matrix

    retried = client.post(f"{D}/jobs/{job_id}/retry", data={"csrf_token": operator})
    location = retried.headers["location"]
    assert location != f"{D}/jobs/{job_id}"
    new_page = client.get(location).text
    assert "Queued 1 certification(s) retrying job" in new_page
    retry_id = location.rsplit("/", 1)[1]
    with catalog() as session:
        retry_job = session.get(Job, retry_id)
        assert retry_job is not None
        assert retry_job.scope["retryOf"] == job_id and retry_job.created_by == "ops"
    # Its live progress, through the dashboard's stream (the session cookie, no bearer key).
    events = []
    with client.stream("GET", f"{D}/jobs/{retry_id}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    assert events[-1]["type"] == "complete"
    assert any(e.get("errorCategory") == "PERMISSION_ERROR" for e in events[:-1])
    assert "PERMISSION_ERROR" in wait_for(client, retry_id)


def test_a_paused_region_stays_paused_when_a_worker_starts(
    client: TestClient,
    operator: str,
    catalog: sessionmaker[Session],
    queue_settings: Settings,
    worker: Callable[[], Worker],
) -> None:
    client.post(f"{D}/regions/eu-west-1/pause", data={"csrf_token": operator})
    started = worker()  # registers its queues on start
    # A new Enqueuer (another API or CLI process) registers the queues again too.
    job_id = enqueue(
        queue_settings, catalog, [("lab/quick", "us-east-1"), ("lab/quick", "eu-west-1")], "ops"
    )

    def statuses() -> dict[str, str]:
        with catalog() as session:
            return {
                c.region: c.status
                for c in session.query(Certification).filter(Certification.job_id == job_id)
            }

    deadline = time.monotonic() + 60
    while statuses().get("us-east-1") != "CERTIFIED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert statuses()["us-east-1"] == "CERTIFIED"
    # Were eu-west-1 served, the worker (polling its queues every 0.2 s) would have started
    # its certification within five polls.
    time.sleep(5 * queue_settings.queue_polling_interval_s)
    assert statuses()["eu-west-1"] == "QUEUED"

    client.post(f"{D}/regions/eu-west-1/resume", data={"csrf_token": operator})
    started.drain()
    assert statuses()["eu-west-1"] == "CERTIFIED"
    with catalog() as session:
        assert session.get(Job, job_id).status == "COMPLETED"  # type: ignore[union-attr]
