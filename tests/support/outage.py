"""Database outages for the tests, made with the real servers (no mock of a driver):

- `unreachable_url(backend, tmp_path)`: a URL nothing answers at: PostgreSQL on a closed
  local port (with a password in it, which no message may show), SQLite in a directory
  that does not exist ("unable to open database file");
- `DatabaseOutage`: the test's own database taken away and given back. PostgreSQL: the
  server refuses every new connection to it (`ALTER DATABASE … ALLOW_CONNECTIONS false`)
  and ends the open ones (`pg_terminate_backend`), as a server that went away does.
  SQLite: another connection holds the write lock; every transaction here begins with
  BEGIN IMMEDIATE, so each one fails with "database is locked" once its busy timeout
  has run out (`short_sqlite_busy_timeout` makes that a fraction of a second).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from modelcert.store import db
from tests.support.workers import free_port

# What a connection of the app under test waits for a lock during a SQLite "outage".
SQLITE_OUTAGE_BUSY_TIMEOUT_MS = 150
UNREACHABLE_PASSWORD = "s3cret-never-shown"


def unreachable_url(backend: str, tmp_path: Path) -> str:
    if backend == "postgres":
        return f"postgresql://modelcert:{UNREACHABLE_PASSWORD}@127.0.0.1:{free_port()}/modelcert"
    return f"sqlite:///{tmp_path / 'no-such-directory' / 'modelcert.db'}"


def short_sqlite_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines made after this wait SQLITE_OUTAGE_BUSY_TIMEOUT_MS for a lock, not 30 s."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", SQLITE_OUTAGE_BUSY_TIMEOUT_MS)


class DatabaseOutage:
    """`with DatabaseOutage(request, database_url):` the database is away inside the block
    (or between `begin()` and `end()`), back after it."""

    def __init__(self, request: pytest.FixtureRequest, database_url: str) -> None:
        self.database_url = database_url
        self.request = request
        self._lock: sqlite3.Connection | None = None
        self.active = False

    def begin(self) -> None:
        if self.database_url.startswith("sqlite"):
            path = make_url(self.database_url).database
            assert path
            self._lock = sqlite3.connect(path, isolation_level=None, timeout=10)
            self._lock.execute("BEGIN IMMEDIATE")
        else:
            self._postgres_allow_connections(False)
        self.active = True

    def end(self) -> None:
        if not self.active:
            return
        if self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None
        else:
            self._postgres_allow_connections(True)
        self.active = False

    def _postgres_allow_connections(self, allowed: bool) -> None:
        server = self.request.getfixturevalue("postgres_server")
        name = make_url(self.database_url).database
        with server.admin.connect() as connection:
            connection.execute(
                text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            )
            if not allowed:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )

    def __enter__(self) -> DatabaseOutage:
        self.begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end()
