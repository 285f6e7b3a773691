"""What the CLI's commands share: the console, the database, JSON options.

Light on purpose: `modelcert --help` imports this module, so SQLAlchemy, the settings
(pydantic) and the store are imported inside the functions that use them
(tests/unit/test_cli_startup.py checks what `--help` imports)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from modelcert.errors import NotFoundError, UserError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from modelcert.domain import CertifyOptions
    from modelcert.settings import Settings

# Wide enough for the matrix when output is piped (rich falls back to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 160)
T = TypeVar("T")

# How long an in-process certification (`modelcert certify`, the in-process demo) waits
# out an unreachable database before it gives up with one line (a worker waits until
# the database returns).
CLI_DATABASE_PATIENCE_S = 30.0


def open_engine(settings: Settings, *, migrate: bool = False) -> Engine:
    """The database of `settings`, migrated first when `migrate`; otherwise refused (one
    line, exit 2) when it does not exist (never created here) or has no schema yet."""
    from modelcert.store import db

    engine = db.make_engine(settings.database_url, must_exist=not migrate)
    if migrate:
        db.upgrade(engine)
        return engine
    problem = schema_problem(engine, settings.database_url)
    if problem is not None:
        engine.dispose()
        raise UserError(problem)
    return engine


def schema_problem(engine: Engine, url: str) -> str | None:
    """Why the CLI or the API cannot use this database's schema as it is: none yet, or an
    older one than this modelcert's (it was upgraded, the database not yet: a command
    reading a table the old schema lacks would end in a traceback). A newer schema is
    served: migrations add, so this code finds what it reads."""
    from modelcert.store import db
    from modelcert.store.outage import hide_password

    where = f"database {hide_password(url)}"
    revision = db.schema_revision(engine)
    if revision is None:
        return f"{where} has no schema yet: run `modelcert db upgrade`"
    head = db.head_revision()
    if revision < head:
        return (
            f"{where} has schema revision {revision}, this modelcert needs {head}: run "
            "`modelcert db upgrade` (a worker upgrades it when it starts)"
        )
    return None


def check_can_listen(host: str, port: int, hint: str) -> None:
    """Refused (`UserError`, one line) unless a server could listen on `host:port` now: a
    port in use or out of range, or a host that is no address of this machine. Checked
    before a server starts, so that it does not fail half-way through its start-up."""
    if not 0 <= port <= 65535:  # getaddrinfo takes 65536 for 0: any port
        raise UserError(f"cannot listen on {host}:{port} (ports are 0 to 65535); {hint}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            # As the servers themselves do: connections in TIME_WAIT don't make a port busy.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"cannot listen on {host}:{port} ({reason}); {hint}", field="port") from exc


def database_unavailable_message(
    exc: BaseException,
    url: str | None = None,
    then: str = "check MODELCERT_DATABASE_URL and that the database is up",
) -> str:
    """One line for a database out of reach: which one (password hidden), the driver's
    reason, and `then` (what to check, or what happens next)."""
    from modelcert.settings import get_settings
    from modelcert.store.outage import describe_outage, hide_password

    if url is None:
        url = get_settings().database_url
    return f"database {hide_password(url)} is unavailable ({describe_outage(exc)}); {then}"


def session_factory(*, migrate: bool = False) -> sessionmaker[Session]:
    from modelcert.settings import get_settings
    from modelcert.store import db

    return db.make_session_factory(open_engine(get_settings(), migrate=migrate))


def run(coroutine_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(coroutine_fn())


def validated(kind: Any, value: str, option: str) -> str:
    """`value` as the shared validated type `kind` (modelcert.validation: the API's and
    the dashboard's too) accepts it; otherwise `UserError` naming the option."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return str(TypeAdapter(kind).validate_python(value))
    except ValidationError as exc:
        problem = exc.errors(include_url=False, include_input=False)[0]["msg"]
        shown = value if len(value) <= 60 else f"{value[:60]}…"
        raise UserError(
            f"{option} {shown!r}: {problem.removeprefix('Value error, ')}",
            field=option.lstrip("-"),
        ) from None


def deployment_ref(value: str, option: str = "--deployment") -> str:
    """A deployment as `--deployment` takes it (numeric id, provider/model-id, model id);
    digits that cannot be an id (beyond the column's range, or not ASCII: `²`) name no
    deployment, and are refused before any lookup."""
    from modelcert.validation import DeploymentRef, id_in_range, is_digit_id

    ref = validated(DeploymentRef, value, option)
    if ref.isdigit() and not (is_digit_id(ref) and id_in_range(int(ref))):
        raise NotFoundError(f"unknown deployment {ref!r}", field=option.lstrip("-"))
    return ref


def region_name(value: str, option: str = "--region") -> str:
    from modelcert.validation import RegionName

    return validated(RegionName, value, option)


def json_option(value: str | None, field: str) -> dict[str, Any]:
    """A JSON-object option; `UserError` naming the option when it is not one."""
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise UserError(f"{field}: invalid JSON ({exc.msg})", field=field) from exc
    if not isinstance(parsed, dict):
        raise UserError(f"{field}: expected a JSON object", field=field)
    return parsed


# Exit codes (README "Exit codes"): every verdict asked for is valid (CERTIFIED or
# QUALITY_WARNING); some are not (failed, errored, incomplete, cancelled, or not finished
# within --timeout); a usage or input error, or a database out of reach (`main`).
EXIT_CERTIFIED = 0
EXIT_NOT_CERTIFIED = 1
EXIT_USAGE = 2

# The 8 characters the dashboard shows are enough; fewer than 4 would match too much.
MIN_JOB_PREFIX = 4
_UUID_SHAPE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"


def job_id_prefix(value: str, option: str = "JOB_ID") -> str:
    """A job id, or the start of one (at least 4 characters, as the dashboard shows them),
    lower-cased; `UserError` for anything that cannot start a job id (a UUID)."""
    import uuid

    text = value.strip().lower()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    shaped = len(text) <= len(_UUID_SHAPE) and all(
        (char == "-") if shape == "-" else (char in "0123456789abcdef")
        for char, shape in zip(text, _UUID_SHAPE, strict=False)
    )
    if not shaped or len(text) < MIN_JOB_PREFIX:
        shown = value if len(value) <= 40 else f"{value[:40]}…"
        raise UserError(
            f"{shown!r} is not a job id (a UUID, or its first {MIN_JOB_PREFIX} or more characters)",
            field=option.lower().lstrip("-"),
        )
    return text


def resolve_job(session: Session, value: str, option: str = "JOB_ID") -> str:
    """The id of the one job whose id is `value` or starts with it; `NotFoundError` when
    none does, `UserError` (one line, the candidates) when several do."""
    from sqlalchemy import select

    from modelcert.store.models import Job

    prefix = job_id_prefix(value, option)
    field = option.lower().lstrip("-")
    # Hex digits and dashes only (checked above): nothing LIKE would read as a wildcard.
    found = list(
        session.scalars(select(Job.id).where(Job.id.like(f"{prefix}%")).order_by(Job.id).limit(4))
    )
    if not found:
        raise NotFoundError(f"unknown job {prefix!r}", field=field)
    if len(found) > 1:
        shown = ", ".join(found[:3]) + (", …" if len(found) > 3 else "")
        raise UserError(
            f"job id prefix {prefix!r} is ambiguous: {shown}; give more characters", field=field
        )
    return found[0]


def cli_actor() -> str:
    """Who runs this command, for the audit log: the operating-system user."""
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container, say)
        return f"uid {os.getuid()}"


# `--suite`, `--smoke` and `--budget-usd`, as `modelcert certify` and `enqueue` take them.
SuiteOption = Annotated[
    list[str] | None,
    typer.Option(
        "--suite",
        help="Run this suite (repeat, or comma-separated; NAME@VERSION pins a version; "
        "`builtin` is the built-in battery). Default: the battery and the suites attached "
        "to the deployment.",
        show_default=False,
    ),
]
SmokeOption = Annotated[
    bool,
    typer.Option(
        "--smoke",
        help="Run the battery's cheapest meaningful subset (3 calls) instead of the whole "
        "battery, beside any --suite.",
    ),
]
BudgetOption = Annotated[
    float | None,
    typer.Option(
        "--budget-usd",
        help="Most this job may spend (USD at the deployments' prices); a certification "
        "that would exceed it is not started.",
        show_default="no limit",
    ),
]


def certify_options(
    suites: list[str] | None, smoke: bool, budget_usd: float | None
) -> CertifyOptions:
    """The options as the engine takes them; UserError (exit 2) for a bad one."""
    import math

    from modelcert.domain import CertifyOptions
    from modelcert.store.suite_selection import parse_suite_names

    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd >= 0):
        raise UserError(
            f"--budget-usd: expected a number of dollars ≥ 0, not {budget_usd:g}",
            field="budget_usd",
        )
    names = parse_suite_names(suites)
    return CertifyOptions(
        suites=tuple(names) if names is not None else None, smoke=smoke, budget_usd=budget_usd
    )
