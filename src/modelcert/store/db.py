"""Engines, sessions and schema migrations. SQLite gets WAL, a busy timeout and foreign
keys on every connection; PostgreSQL URLs are routed to psycopg 3."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from modelcert.errors import UserError

if TYPE_CHECKING:  # Alembic is imported where migrations run: most commands never do
    from alembic.config import Config

SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 10
# A client cut off mid-transaction (its host partitioned) must not keep its row locks for
# TCP's timeout (hours): the reaper's lease, a claim, a fenced write would wait behind it
# and its work would never be handed over. The server ends a session idle in a
# transaction, or whose unacknowledged data has waited, this long; our transactions are
# short (no provider call happens inside one). The client learns of a dead link from
# keepalives as soon.
POSTGRES_STUCK_SESSION_S = 10
POSTGRES_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": POSTGRES_CONNECT_TIMEOUT_S,
    "options": (
        f"-c idle_in_transaction_session_timeout={POSTGRES_STUCK_SESSION_S * 1000} "
        f"-c tcp_user_timeout={POSTGRES_STUCK_SESSION_S * 1000}"
    ),
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 here (psycopg2 is not a dependency)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver must not open transactions on its own (its default begins lazily, before
    # the first write, so a read-then-write is not atomic: two worker processes both saw
    # a free queue slot and overspent a concurrency limit). SQLAlchemy's "begin" event
    # below opens every transaction with BEGIN IMMEDIATE instead, taking the write lock.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for other databases and in-memory ones."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(database)


def make_engine(url: str, *, must_exist: bool = False, **kwargs: Any) -> Engine:
    """An engine for `url`, with the SQLite pragmas this project relies on.

    `must_exist`: for whatever only uses a database that is there (everything but the
    migrations): a SQLite file that does not exist is refused (`UserError`) before
    anything connects, for SQLite creates the file it cannot find."""
    if must_exist:
        path = sqlite_file(url)
        if path is not None and path.is_dir():
            raise UserError(
                f"database {path} is a directory, not a SQLite file: check MODELCERT_DATABASE_URL"
            )
        if path is not None and not path.is_file():
            missing = "its directory does not exist" if not path.parent.is_dir() else "no such file"
            raise UserError(
                f"database {path} does not exist ({missing}): check MODELCERT_DATABASE_URL, "
                "or create it with `modelcert db upgrade`"
            )
    url = normalise_url(url)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # A host that drops packets (a partition, a failover in progress) must not hold a
    # connection attempt for the TCP timeout (minutes): the caller's retry loop, the
    # API's 503 and a stopping worker all wait on it.
    kwargs.setdefault("connect_args", dict(POSTGRES_CONNECT_ARGS))
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the application's and the queue's schema migrations (idempotent)."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)
    migrate_queue_tables(engine)


def migrate_queue_tables(engine: Engine) -> None:
    """DBOS keeps its queue and workflow tables beside ours (schema `dbos` on PostgreSQL).

    Run here, with DBOS's own engine, so that workers can use an engine that opens every
    transaction with BEGIN IMMEDIATE (DBOS's migrations manage their own transactions)."""
    from dbos import DBOS  # imported here: the CLI's other commands don't need it

    DBOS.migrate(engine.url.render_as_string(hide_password=False))


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def is_current(engine: Engine) -> bool:
    """True when the schema exists (the version table is there)."""
    return inspect(engine).has_table("alembic_version")


def schema_revision(engine: Engine) -> str | None:
    """The database's schema revision ("0009"), or None when it has no schema yet."""
    if not is_current(engine):
        return None
    with engine.connect() as connection:
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(found) if found is not None else None


def head_revision() -> str:
    """The newest revision this code ships. The revisions are numbered in sequence with
    their files (0001_…, 0002_…; a test holds it to Alembic's own head), so the CLI knows
    it without loading the migration scripts."""
    return max(path.name[:4] for path in (MIGRATIONS_DIR / "versions").glob("[0-9]" * 4 + "_*.py"))
