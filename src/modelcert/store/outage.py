"""Is this exception the database being out of reach, or a bug?

One decision for every entry point: the API answers 503 with Retry-After for an outage
(and 500 for anything else), the CLI prints one line and exits 2, a worker waits and
retries. Only what says "no usable connection to the database right now" counts:

- SQLAlchemy: any DB-API error raised as a disconnect (`connection_invalidated`), a
  pool that could hand out no connection in time (`TimeoutError`), `DisconnectionError`;
- psycopg (PostgreSQL): an `OperationalError` from libpq itself (no SQLSTATE: the
  connection could not be made, was refused, timed out or was lost), or SQLSTATE class 08
  (connection exception), 53300 (too many connections), 57P01 / 57P02 / 57P03 (the server
  shutting down, crashed, or not accepting connections yet);
- sqlite3: SQLITE_CANTOPEN ("unable to open database file"), SQLITE_BUSY / SQLITE_LOCKED
  ("database is locked" once the busy timeout ran out), SQLITE_IOERR ("disk I/O error"),
  SQLITE_READONLY_DBMOVED (the file was moved or deleted under an open connection);
- an exception raised `from` one of these (a library that wraps the driver's error).

Not an outage, on purpose: SQL and schema errors ("no such table", undefined table or
column, syntax), constraint violations, psycopg's `InterfaceError` and sqlite3's (a value
that cannot be bound: the caller's bug), deadlocks and serialization failures (retry the
transaction), a cancelled statement (57014), disk full, out of memory. For a DB-API driver
this project does not use, SQLAlchemy's `OperationalError` and `InterfaceError` are taken
at their DB-API meaning (the database or the interface to it failed, not the program).

Imports only the standard library, SQLAlchemy and (when installed) psycopg.
"""

from __future__ import annotations

import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from modelcert.errors import StoreUnavailable

try:
    import psycopg
except ImportError:  # the `postgres` extra is not installed: no PostgreSQL errors to meet
    psycopg = None  # type: ignore[assignment]

__all__ = ["describe_outage", "hide_password", "is_database_unavailable", "wait_out_outage"]

T = TypeVar("T")

# sqlite3 result codes (https://www.sqlite.org/rescode.html); the primary code is the low byte.
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_IOERR = 10
_SQLITE_CANTOPEN = 14
_SQLITE_READONLY_DBMOVED = 1032
_SQLITE_PRIMARY = frozenset({_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_CANTOPEN})
_SQLITE_EXTENDED = frozenset({_SQLITE_READONLY_DBMOVED})
# Only when a sqlite3 error carries no code (Python < 3.11 never runs this project).
_SQLITE_MESSAGES = ("unable to open database file", "database is locked", "disk i/o error")

# PostgreSQL SQLSTATEs that mean "no connection", besides class 08 (connection exception).
_POSTGRES_STATES = frozenset({"53300", "57P01", "57P02", "57P03"})

# Wrapped errors are followed this many levels down their `__cause__` chain.
_MAX_CHAIN = 8


def is_database_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or an error it was raised from) says the database cannot be
    reached or used right now; False for anything else, programming errors included."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        if _unavailable(current):
            return True
        current = current.__cause__
    return False


def describe_outage(exc: BaseException) -> str:
    """The driver's own words for an outage, on one line ("connection failed: … Connection
    refused", "unable to open database file"), without SQL, parameters or links. For
    logs and the command line: it may name the host, never the password."""
    current: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if current is None:
            break
        if _unavailable(current):
            exc = current
            break
        current = current.__cause__
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else None
    text = str(orig if orig is not None else exc).strip()
    text = text.split(" (Background on this error at:", 1)[0]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = first or type(exc).__name__
    return first if len(first) <= 200 else first[:197] + "..."


def hide_password(url: str) -> str:
    """`url` as it may be shown: `postgresql://user:***@host/db`."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:  # not a URL SQLAlchemy reads: mask what looks like one
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        if _is_known_driver_error(orig):
            return _driver_unavailable(orig)
        return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    return _is_known_driver_error(exc) and _driver_unavailable(exc)


def _is_known_driver_error(exc: BaseException | None) -> bool:
    if isinstance(exc, sqlite3.Error):
        return True
    return psycopg is not None and isinstance(exc, psycopg.Error)


def _driver_unavailable(exc: BaseException | None) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return (code & 0xFF) in _SQLITE_PRIMARY or code in _SQLITE_EXTENDED
        return str(exc).lower().startswith(_SQLITE_MESSAGES)
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _POSTGRES_STATES
    return False


def wait_out_outage(
    work: Callable[[], T],
    *,
    stop: threading.Event,
    patience_s: float | None = None,
    first_s: float = 0.1,
    max_s: float = 5.0,
    sleep: Callable[[float], object] | None = None,
    on_first_outage: Callable[[BaseException], None] | None = None,
) -> T:
    """`work()`, again while the database is unreachable: a jittered backoff from
    `first_s` doubling to `max_s` (a restart takes a fraction of a second; then capped, so
    work resumes soon after the database returns), like DBOS's own writes. Gives up with
    `StoreUnavailable` once `stop` is set or `patience_s` (None: no limit) would run out;
    any other error propagates at once. `sleep` defaults to waiting on `stop`."""
    pause = sleep or stop.wait
    deadline = None if patience_s is None else time.monotonic() + patience_s
    delay, failed = first_s, False
    while True:
        try:
            return work()
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            if not failed and on_first_outage is not None:
                on_first_outage(exc)
            failed = True
            out_of_time = deadline is not None and time.monotonic() + delay > deadline
            if stop.is_set() or out_of_time:
                raise StoreUnavailable(f"database unavailable: {exc}") from exc
            pause(delay * (0.5 + random.random()))
            if stop.is_set():
                raise StoreUnavailable(f"database unavailable: {exc}") from exc
            delay = min(delay * 2, max_s)
