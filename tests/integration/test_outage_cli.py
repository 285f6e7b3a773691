"""`modelcert` while its database cannot be reached. A command that needs the database
prints one line on stderr naming it (password hidden) and exits 2, never a traceback;
`modelcert api` starts anyway, answers 503 and is ready by itself once the database is
back. Real processes, on SQLite and PostgreSQL URLs nothing answers at, and databases
that go away or come back while a process runs (tests/support/outage.py)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.errors import RETRY_AFTER_S
from modelcert.store import api_keys, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from tests.support.outage import UNREACHABLE_PASSWORD, DatabaseOutage, unreachable_url
from tests.support.workers import free_port

# One command of each way into the database: the shared session factory (`catalog list`;
# apikey, certify, matrix, report use it too), an engine of its own (`enqueue`; jobs and
# recertify-due too), the migrations (`db upgrade`), and `up` (migrates before it starts
# anything). Each is a process of its own, most of this test's time: one of each kind.
COMMANDS = [
    ["db", "upgrade"],
    ["catalog", "list"],
    ["enqueue", "--deployment", "sim/aurora-fast", "--region", "us-east-1"],
]


def command_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "MODELCERT_DATABASE_URL": url,
        "NO_COLOR": "1",
        "PYTHONUNBUFFERED": "1",
        "WORKER_HEALTH_PORT": str(free_port()),
    }


def modelcert(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelcert", *args]


def shown(url: str) -> str:
    """The URL as the message must show it: password hidden."""
    return make_url(url).render_as_string(hide_password=True)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])  # no server needed: none answers
def test_commands_that_need_the_database_say_so_in_one_line_and_exit_2(
    backend: str, tmp_path: Path
) -> None:
    url = unreachable_url(backend, tmp_path)
    commands = [*COMMANDS, ["up", "--workers", "1", "--port", str(free_port())]]
    # All at once: each is mostly the interpreter starting.
    running = [
        (
            command,
            subprocess.Popen(
                modelcert(*command),
                env=command_env(url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for command in commands
    ]
    expected_start = f"error: database {shown(url)} is unavailable ("
    for command, process in running:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 2, (command, stdout, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (command, stderr)
        if backend == "sqlite" and command[0] in ("catalog", "enqueue"):
            # A SQLite file that is not there is no outage for a command that only uses
            # an existing database: it says so before connecting (tests/integration/
            # test_cli_errors.py); the migrations (`db upgrade`, `up`) meet the outage.
            assert lines[0].startswith(f"error: database {url.removeprefix('sqlite:///')} ")
            assert "does not exist" in lines[0], lines[0]
            continue
        assert lines[0].startswith(expected_start), (command, lines[0])
        if backend == "postgres":
            assert "Connection refused" in lines[0], lines[0]
            assert "***" in lines[0]
        else:
            assert "unable to open database file" in lines[0], lines[0]
        assert UNREACHABLE_PASSWORD not in stdout + stderr
        assert "Traceback" not in stdout + stderr


# PostgreSQL only: an open SQLite file does not go away under the process that has it
# open (it goes on with the unlinked file); a lock held elsewhere is what an outage of
# SQLite looks like, and a command waits its busy timeout, 30 s, before it gives up: the
# API's tests cover that case, with the timeout shortened in-process.
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_command_waiting_on_a_job_stops_in_one_line_when_the_database_goes_away(
    request: pytest.FixtureRequest, database_url: str, factory: sessionmaker[Session]
) -> None:
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1"])
        repo.add_deployment(session, provider_slug="lab", provider_model_id="healthy-fast")
    process = subprocess.Popen(
        modelcert("enqueue", "--deployment", "lab/healthy-fast", "--region", "us-east-1", "--wait"),
        env=command_env(database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    outage = DatabaseOutage(request, database_url)
    try:
        assert process.stdout is not None
        queued = [process.stdout.readline() for _ in range(2)]  # no worker: it waits
        assert queued[1].startswith("job "), queued
        started = time.monotonic()
        outage.begin()
        stdout, stderr = process.communicate(timeout=60)
        gave_up_after = time.monotonic() - started
    finally:
        outage.end()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: database {shown(database_url)} is unavailable ("), lines
    # Refused at its next connection, or cut in the middle of a query (a race: both real).
    reasons = ("not currently accepting connections", "terminating connection", "server closed")
    assert any(reason in lines[0] for reason in reasons), lines[0]
    assert "Traceback" not in stdout + stderr
    assert gave_up_after < 10  # its next poll, not a timeout


def _get(url: str, key: str | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            headers = {name.lower(): value for name, value in response.headers.items()}
            return response.status, headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        headers = {name.lower(): value for name, value in error.headers.items()}
        return error.code, headers, json.loads(error.read())


def _wait_until(
    check: Callable[[], Any], server: subprocess.Popen[str], log: Path, timeout: float
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:  # not listening yet
            pass
        assert server.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def test_the_api_process_starts_during_an_outage_and_is_ready_when_the_database_returns(
    database_url: str,
    engine: Engine,
    factory: sessionmaker[Session],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    with transaction(factory) as session:
        _, key = api_keys.create_api_key(session, "ci-bot", Role.viewer)
    outage = DatabaseOutage(request, database_url)
    if database_url.startswith("sqlite"):
        # The file is not there yet (its directory neither): "unable to open database file".
        serving = tmp_path / "later" / "modelcert.db"
        api_url = f"sqlite:///{serving}"
    else:
        api_url = database_url
        outage.begin()
    port = free_port()
    log = tmp_path / "api.log"
    env = {**os.environ, "MODELCERT_DATABASE_URL": api_url, "MODELCERT_LOG_LEVEL": "WARNING"}
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "modelcert", "api", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        status, headers, body = _wait_until(
            lambda: _get(f"{base}/api/health"), server, log, timeout=60
        )
        assert status == 503
        assert headers["retry-after"] == str(RETRY_AFTER_S)
        assert body["status"] == "unavailable"
        assert "database unavailable" in body["detail"]
        status, headers, body = _get(f"{base}/api/whoami", key)
        assert (status, headers["retry-after"]) == (503, str(RETRY_AFTER_S))
        assert "database unavailable" in body["detail"]

        if database_url.startswith("sqlite"):  # the database arrives where it was expected
            engine.dispose()
            path = make_url(database_url).database
            assert path
            with sqlite3.connect(path) as connection:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            serving.parent.mkdir()
            shutil.copyfile(path, serving)
        else:
            outage.end()
        _wait_until(lambda: _get(f"{base}/api/health")[0] == 200, server, log, timeout=10)
        assert _get(f"{base}/api/whoami", key)[0] == 200
    finally:
        outage.end()
        server.terminate()
        server.wait(timeout=30)
    output_text = log.read_text()
    assert "Traceback" not in output_text
    first = output_text.splitlines()[0]
    assert first.startswith("warning: database ") and "is unavailable (" in first, first
    assert first.endswith("serving anyway: every route answers 503 until it is back"), first
    assert key not in output_text


def test_the_api_process_still_refuses_a_database_without_a_schema(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    env = {**os.environ, "MODELCERT_DATABASE_URL": f"sqlite:///{empty}"}
    result = subprocess.run(
        [sys.executable, "-m", "modelcert", "api", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: database sqlite:///{empty} has no schema yet: run `modelcert db upgrade`"
    ]
