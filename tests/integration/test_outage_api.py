"""While the database is out of reach the API answers 503 with Retry-After and one log
line, never a 500 or a traceback; /api/health says why; all is well again by itself once
the database is back; an API process started during an outage starts and becomes ready.
Genuine programming errors stay 500. Real SQLite and PostgreSQL databases, made
unreachable for real (tests/support/outage.py), no mock of a driver."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import BaseRoute

from modelcert.api import sse
from modelcert.api.app import create_app
from modelcert.api.dashboard.sessions import COOKIE_NAME
from modelcert.api.deps import SessionDep
from modelcert.api.errors import RETRY_AFTER_S
from modelcert.domain import JobKind
from modelcert.store import api_keys, db
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import Job
from modelcert.store.outage import is_database_unavailable
from tests.support.inprocess import fast_settings
from tests.support.keys import bearer
from tests.support.outage import (
    UNREACHABLE_PASSWORD,
    DatabaseOutage,
    short_sqlite_busy_timeout,
    unreachable_url,
)

# An unreachable database needs no server: both backends run everywhere.
BACKENDS = ["sqlite", "postgres"]
# The routes that answer without the database: the API's docs, the dashboard's static
# files, and /metrics (200 with `modelcert_database_up 0`: a scrape that says why).
NO_DATABASE = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/docs/static/{name}"),
    ("GET", "/dashboard/static/{name}"),
    ("GET", "/metrics"),
}
A_KEY = "mc_" + "k" * 43  # shaped like a key: the lookup itself needs the database


def all_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, included routers too (an
    included router's context holds the prefixes of the routers above it)."""

    def walk(routes: list[BaseRoute], prefix: str) -> Iterator[tuple[str, str]]:
        for route in routes:
            included = getattr(route, "original_router", None)
            if included is not None:
                yield from walk(included.routes, route.include_context.prefix)  # type: ignore[attr-defined]
                continue
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":
                    yield method, prefix + getattr(route, "path", "")

    return sorted(set(walk(app.routes, "")))


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def assert_outage_answer(response: Any, what: str) -> None:
    assert response.status_code == 503, (what, response.status_code, response.text)
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S), what
    assert "database unavailable" in response.json()["detail"], what


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert "Traceback" not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


def new_key(factory: sessionmaker[Session], role: Role = Role.viewer) -> str:
    with transaction(factory) as session:
        _, plain = api_keys.create_api_key(session, f"k{time.monotonic_ns()}", role)
    return plain


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_route_answers_503_with_retry_after_while_the_database_is_unreachable(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app = create_app(fast_settings(unreachable_url(backend, tmp_path)))
    routes = all_routes(app)
    assert len(routes) > 30  # the walk found the included routers' routes
    assert set(routes) >= NO_DATABASE
    answered: dict[tuple[str, str], int] = {}
    with TestClient(app, raise_server_exceptions=False) as client:
        client.cookies.set(COOKIE_NAME, "a-session-token")  # the dashboard's login lookup
        for method, path in routes:
            # A form with a key too: the dashboard's login looks it up.
            form = {"api_key": A_KEY} if method == "POST" else None
            response = client.request(method, concrete(path), headers=bearer(A_KEY), data=form)
            answered[(method, path)] = response.status_code
            assert UNREACHABLE_PASSWORD not in response.text
            if (method, path) in NO_DATABASE:
                assert response.status_code < 500, (method, path, response.text)
            else:
                assert_outage_answer(response, f"{method} {path}")
        health = client.get("/api/health")
    assert health.json()["status"] == "unavailable"
    assert "database unavailable" in health.json()["detail"]
    assert answered[("GET", "/metrics")] == 200
    assert_no_traceback(caplog)
    assert UNREACHABLE_PASSWORD not in caplog.text
    # One line per refused request (the health check logs its own, as ever).
    refused = [r for r in caplog.records if "503, database unavailable" in r.getMessage()]
    assert len(refused) == len(routes) - len(NO_DATABASE) - 1


@pytest.fixture
def outage_app(
    database_url: str, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FastAPI, sessionmaker[Session]]]:
    """The API on the test's (migrated) database through an engine of its own, whose
    SQLite connections give up on a lock after a fraction of a second."""
    short_sqlite_busy_timeout(monkeypatch)
    engine = db.make_engine(database_url)
    app_factory = db.make_session_factory(engine)
    yield create_app(fast_settings(database_url), app_factory), app_factory
    engine.dispose()


def test_the_api_answers_503_while_its_database_is_away_and_recovers_by_itself(
    outage_app: tuple[FastAPI, sessionmaker[Session]],
    database_url: str,
    factory: sessionmaker[Session],
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    app, _ = outage_app
    key = new_key(factory, Role.operator)
    reads = [
        "/api/whoami",
        "/api/certification-queue/certifications",
        "/api/certification-queue/stats",
        "/dashboard/",
        "/dashboard/matrix",
    ]
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        login = client.post("/dashboard/login", data={"api_key": key, "next": "/dashboard/"})
        assert login.status_code == 303
        for path in reads:
            assert client.get(path, headers=bearer(key)).status_code == 200, path
        with DatabaseOutage(request, database_url):
            for path in reads:
                assert_outage_answer(client.get(path, headers=bearer(key)), path)
            queued = client.post(
                "/api/certification-queue/certify-model",
                headers=bearer(key),
                json={"modelId": "sim/aurora-fast", "region": "us-east-1"},
            )
            assert_outage_answer(queued, "certify-model")
            health = client.get("/api/health")
            assert health.status_code == 503
            assert health.headers["Retry-After"] == str(RETRY_AFTER_S)
            assert health.json()["status"] == "unavailable"
            assert "database unavailable" in health.json()["detail"]
        # Back: nothing to restart, the next request finds the database.
        assert client.get("/api/health").json()["status"] == "ok"
        for path in reads:
            assert client.get(path, headers=bearer(key)).status_code == 200, path
    assert_no_traceback(caplog)


def test_programming_errors_stay_500(
    outage_app: tuple[FastAPI, sessionmaker[Session]], caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = outage_app

    @app.get("/test/broken")
    def broken(session: SessionDep) -> None:  # a genuine bug: a table that does not exist
        session.execute(text("SELECT * FROM no_such_table"))

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/test/broken")
        assert response.status_code == 500
        assert client.get("/api/health").status_code == 200
    assert "503" not in caplog.text


def _raised(engine: Engine, sql: str, **params: object) -> BaseException:
    with pytest.raises(Exception) as raised, engine.connect() as connection:
        connection.execute(text(sql), params)
    return raised.value


def test_outages_are_told_from_bugs_on_real_errors(
    outage_app: tuple[FastAPI, sessionmaker[Session]],
    database_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    _, app_factory = outage_app
    engine = app_factory.kw["bind"]
    postgres = not database_url.startswith("sqlite")
    bugs = [
        _raised(engine, "SELECT * FROM no_such_table"),
        _raised(engine, "SELEC 1"),
        _raised(engine, "SELECT :value", value=object()),  # cannot be bound
        _raised(engine, "INSERT INTO alembic_version (version_num) VALUES (NULL)"),
    ]
    if postgres:  # a statement that ran out of time: cancelled (57014), not an outage
        with pytest.raises(Exception) as cancelled, engine.connect() as connection:
            connection.execute(text("SET LOCAL statement_timeout = 1"))
            connection.execute(text("SELECT pg_sleep(1)"))
        bugs.append(cancelled.value)
    for bug in bugs:
        assert not is_database_unavailable(bug), repr(bug)
    assert not is_database_unavailable(ValueError("database is locked"))

    unreachable = db.make_engine(unreachable_url("postgres" if postgres else "sqlite", tmp_path))
    outages = [_raised(unreachable, "SELECT 1")]
    unreachable.dispose()
    with engine.connect() as open_connection:
        open_connection.execute(text("SELECT 1"))
        open_connection.commit()  # open, in no transaction (on SQLite: holding no lock)
        with DatabaseOutage(request, database_url):
            outages.append(_raised(engine, "SELECT 1"))  # a new connection, or the pool's
            with pytest.raises(Exception) as cut:  # one that was open all along
                open_connection.execute(text("SELECT 1"))
            outages.append(cut.value)
    for outage in outages:
        assert is_database_unavailable(outage), repr(outage)
        assert is_database_unavailable(getattr(outage, "orig", None) or outage), repr(outage)
        try:
            raise RuntimeError("wrapped by a library") from outage
        except RuntimeError as wrapper:
            assert is_database_unavailable(wrapper)
        try:
            try:
                raise outage
            except Exception:
                raise KeyError("a bug while handling it") from None
        except KeyError as unrelated:
            assert not is_database_unavailable(unrelated)


async def test_a_progress_stream_cut_by_an_outage_ends_with_one_error_event(
    outage_app: tuple[FastAPI, sessionmaker[Session]],
    database_url: str,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, app_factory = outage_app
    with transaction(app_factory) as session:
        job = Job(kind=JobKind.SINGLE.value)
        session.add(job)
    progress = sse.JobProgress(app_factory, job.id)

    async def connected() -> bool:
        return False

    stream = sse.job_events(progress, connected, poll_s=0.01, heartbeat_s=60)
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)  # a few polls of a job with nothing to report yet
    assert not first.done()
    with DatabaseOutage(request, database_url):
        event = await asyncio.wait_for(first, timeout=10)
    assert json.loads(event.removeprefix("data: ")) == {
        "type": "error",
        "message": "progress unavailable: database unavailable",
    }
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert_no_traceback(caplog)
