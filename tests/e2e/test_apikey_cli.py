"""`modelcert apikey …` and `modelcert api` as a user runs them: real processes on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from modelcert.store import api_keys

KEY = re.compile(r"mc_[A-Za-z0-9_-]{43}")


def run(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELCERT_DATABASE_URL": db_url, "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "modelcert", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def db_url(database_url: str, factory: sessionmaker[Session]) -> str:
    """A migrated database; `factory` (same database) reads what the CLI wrote."""
    return database_url


def create(db_url: str, name: str, role: str) -> str:
    result = run(db_url, "apikey", "create", name, "--role", role)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert KEY.fullmatch(key), f"stdout should hold only the key: {result.stdout!r}"
    return key


def test_create_prints_the_key_once(db_url: str, factory: sessionmaker[Session]) -> None:
    result = run(db_url, "apikey", "create", "ci-bot", "--role", "operator")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert KEY.fullmatch(key), "stdout holds the key and nothing else"
    assert (result.stdout + result.stderr).count(key) == 1
    assert "shown only this once" in result.stderr
    with factory() as session:
        found = api_keys.authenticate(session, key)
        assert found is not None
        assert (found.name, found.role) == ("ci-bot", "operator")


def test_user_errors_are_one_line_and_exit_2(db_url: str) -> None:
    create(db_url, "ci-bot", "viewer")
    cases = [
        (("apikey", "create", "ci-bot", "--role", "admin"), "already exists"),
        (("apikey", "create", "other", "--role", "root"), "unknown role 'root'"),
        (("apikey", "revoke", "nobody"), "no API key named 'nobody'"),
    ]
    for args, message in cases:
        result = run(db_url, *args)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
        assert message in result.stderr
        assert result.stdout == ""


def test_list_shows_no_secret(db_url: str, factory: sessionmaker[Session]) -> None:
    keys = [create(db_url, "alice", "admin"), create(db_url, "dashboard", "viewer")]
    with factory() as session:
        hashes = [k.key_hash for k in api_keys.list_api_keys(session)]
    table = run(db_url, "apikey", "list")
    as_json = run(db_url, "apikey", "list", "--json")
    assert table.returncode == 0, table.stderr
    assert as_json.returncode == 0, as_json.stderr
    for output in (table.stdout, as_json.stdout):
        assert "alice" in output and "dashboard" in output
        for secret in (*keys, *(k[11:] for k in keys), *hashes):
            assert secret not in output
    rows = {row["name"]: row for row in json.loads(as_json.stdout)}
    assert rows["dashboard"]["prefix"] == keys[1][:11]
    assert rows["alice"]["role"] == "admin"


def test_revoke_stops_the_key(db_url: str, factory: sessionmaker[Session]) -> None:
    key = create(db_url, "leaked", "admin")
    result = run(db_url, "apikey", "revoke", "leaked")
    assert result.returncode == 0, result.stderr
    assert "revoked" in result.stdout
    rows = json.loads(run(db_url, "apikey", "list", "--json").stdout)
    assert rows[0]["revoked_at"] is not None
    with factory() as session:
        assert api_keys.authenticate(session, key) is None


def test_commands_refuse_a_database_without_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    for args in (("apikey", "list"), ("api", "--port", "9")):
        result = run(url, *args)
        assert result.returncode == 2
        assert "modelcert db upgrade" in result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _get(url: str, key: str | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_api_serves_with_keys(db_url: str) -> None:
    key = create(db_url, "ci-bot", "viewer")
    port = _free_port()
    env = {**os.environ, "MODELCERT_DATABASE_URL": db_url, "MODELCERT_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [sys.executable, "-m", "modelcert", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _get(f"{base}/api/health")
                break
            except OSError:
                assert server.poll() is None, server.communicate()[0]
                assert time.monotonic() < deadline, "the API did not start within 30 s"
                time.sleep(0.2)
        assert (status, body["status"]) == (200, "ok")
        assert _get(f"{base}/api/whoami", key) == (200, {"name": "ci-bot", "role": "viewer"})
        assert _get(f"{base}/api/whoami")[0] == 401
        assert _get(f"{base}/api/keys", key)[0] == 403
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert key not in output  # the server's log never shows a key
