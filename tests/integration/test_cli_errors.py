"""The CLI never shows a traceback for anything a user can cause: a bad setting or
database URL, a database that is missing or has no schema, a bad option, id, date or
delay, a worker health port in use or out of range. Each is one `error:` line on stderr
and exit code 2; read-only commands never create a database.

In-process (`modelcert.cli.run_command`, what `main()` runs) wherever the process
boundary is not the point, on real SQLite and PostgreSQL databases; a real process for
the worker, whose start is the point."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from modelcert.cli import run_command
from modelcert.settings import get_settings
from modelcert.worker.process import free_port

SECRET = "s3cr3t-password"  # in URLs below: never shown


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def assert_one_error(self, *fragments: str) -> str:
        """Exit 2, exactly one stderr line, `error: …` holding every fragment."""
        output = self.stdout + self.stderr
        assert "Traceback" not in output, output
        assert self.code == 2, (self.code, output)
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("error: "), lines[0]
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
        assert SECRET not in output
        return lines[0]


Cli = Callable[..., Result]


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Iterator[Cli]:
    """`cli(url, *args, **env)`: one command line in this process, its settings read from
    the environment as `main()` reads them (working directory: an empty one, no .env)."""
    monkeypatch.chdir(tmp_path)

    def invoke(url: str, *args: str, **env: str) -> Result:
        with monkeypatch.context() as patch:
            patch.setenv("MODELCERT_DATABASE_URL", url)
            for name, value in env.items():
                patch.setenv(name, value)
            get_settings.cache_clear()
            capsys.readouterr()
            try:
                code = run_command(args)
            finally:
                get_settings.cache_clear()
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield invoke
    get_settings.cache_clear()


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# --- settings and database URLs: refused before anything connects ---------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nonsense", "not a database URL"),
        ("", "not a database URL"),
        (f"postgresql://me:{SECRET}@db:notaport/modelcert", "not a database URL"),
        (f"mysql://me:{SECRET}@db/modelcert", "unsupported database driver 'mysql'"),
        ("pigeon://coop/1", "unsupported database driver 'pigeon'"),
        ("postgresql+psycopg2://db/modelcert", "unsupported database driver"),
    ],
)
def test_a_bad_database_url_is_one_line_naming_the_variable(
    cli: Cli, tmp_path: Path, url: str, expected: str
) -> None:
    for args in (["catalog", "list"], ["db", "upgrade"], ["api", "--port", "1"]):
        cli(url, *args).assert_one_error("MODELCERT_DATABASE_URL: ", expected)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MODELCERT_LOG_LEVEL", "LOUD", "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("MODELCERT_LOG_LEVEL", "", "must be one of"),
        ("LOG_LEVEL", "verbose", "must be one of"),
        ("WORKER_HEALTH_PORT", "70000", "less than or equal to 65535"),
        ("WORKER_HEALTH_PORT", "-1", "greater than or equal to 0"),
        ("CERTIFICATION_CONCURRENCY", "many", "valid integer"),
        ("MODELCERT_REGION_START_RATE", "nan", "finite number"),
        ("MODELCERT_SHUTDOWN_GRACE_S", "inf", "finite number"),
        ("MODELCERT_RECERTIFY_SCHEDULE", "whenever", "cron expression"),
    ],
)
def test_a_bad_setting_is_refused_the_same_way_by_every_entry_point(
    cli: Cli, tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    url = f"sqlite:///{tmp_path / 'modelcert.db'}"
    # A command, the API and the worker (the latter two refuse it before they start).
    for args in (["catalog", "list"], ["api", "--port", "1"], ["worker"]):
        cli(url, *args, **{variable: value}).assert_one_error(f"{variable}: ", expected)
    assert files_in(tmp_path) == []


def test_every_bad_setting_is_named_on_the_one_line(cli: Cli, tmp_path: Path) -> None:
    line = cli("mysql://x/y", "matrix", MODELCERT_LOG_LEVEL="LOUD").assert_one_error()
    assert "MODELCERT_DATABASE_URL: " in line and "MODELCERT_LOG_LEVEL: " in line


def test_log_levels_are_accepted_in_any_case(tmp_path: Path) -> None:
    from modelcert.settings import Settings

    assert Settings(log_level=" debug ").log_level == "DEBUG"


# --- options: one line, not a usage box -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["worker", "--health-port", "70000"], "'--health-port'"),
        (["worker", "--health-port", "-5"], "'--health-port'"),
        (["api", "--port", "0"], "'--port'"),
        (["up", "--port", "70000"], "'--port'"),
        (["demo", "--port", "-1"], "'--port'"),
        (["enqueue", "--region", "us-east-1"], "Missing option '--deployment'"),
        (["enqueue", "--deployment", "a", "--region", "b", "--delay", "soon"], "'--delay'"),
        (["jobs", "show"], "Missing argument"),
        (["catalog", "lsit"], "No such command 'lsit'"),
    ],
)
def test_a_bad_option_is_one_line(cli: Cli, tmp_path: Path, args: list[str], expected: str) -> None:
    cli(f"sqlite:///{tmp_path / 'modelcert.db'}", *args).assert_one_error(expected, "--help")
    assert files_in(tmp_path) == []


# --- read-only commands never create a database ----------------------------------------

NEEDS_A_DATABASE = [
    ["catalog", "list"],
    ["jobs", "show", "123e4567-e89b-12d3-a456-426614174000"],
    ["report"],
    ["matrix"],
    ["apikey", "list"],
    ["recertify-due", "--dry-run"],
    ["enqueue", "--deployment", "sim/aurora-fast", "--region", "us-east-1"],
    ["certify", "--deployment", "sim/aurora-fast", "--region", "us-east-1"],
]


def test_a_sqlite_path_that_is_a_directory_is_said(cli: Cli, tmp_path: Path) -> None:
    for args in NEEDS_A_DATABASE[:3]:
        cli(f"sqlite:///{tmp_path}", *args).assert_one_error(
            f"database {tmp_path} is a directory, not a SQLite file"
        )
    assert files_in(tmp_path) == []


def test_the_api_refuses_a_sqlite_file_that_is_not_there_and_creates_none(
    cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "modelcert.db"
    cli(f"sqlite:///{path}", "api", "--port", "1").assert_one_error(
        f"database {path} does not exist"
    )
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("where", ["missing-file", "missing-directory"])
def test_a_missing_sqlite_database_is_said_and_never_created(
    cli: Cli, tmp_path: Path, where: str
) -> None:
    path = tmp_path / "modelcert.db" if where == "missing-file" else tmp_path / "no" / "x.db"
    for args in NEEDS_A_DATABASE:
        cli(f"sqlite:///{path}", *args).assert_one_error(
            f"database {path} does not exist", "MODELCERT_DATABASE_URL", "modelcert db upgrade"
        )
    assert files_in(tmp_path) == []


@pytest.fixture
def empty_database(database_url: str) -> str:
    """A database that answers and holds no table (`database_url` alone: not migrated)."""
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        sqlite3.connect(path).close()
        Path(path).touch()
    return database_url


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "show", "123e4567-e89b-12d3-a456-426614174000"],
        ["catalog", "list"],
        ["report", "--since", "1d"],
        ["enqueue", "--deployment", "sim/aurora-fast", "--region", "us-east-1"],
    ],
)
def test_a_database_without_a_schema_is_said(
    cli: Cli, empty_database: str, args: list[str]
) -> None:
    cli(empty_database, *args).assert_one_error("has no schema yet", "modelcert db upgrade")


def test_a_database_behind_this_modelcert_is_said_not_a_traceback(
    cli: Cli, database_url: str
) -> None:
    # modelcert upgraded, the database not yet: `notify list` read a table the old schema
    # lacks ("no such table: notification_subscriptions", a traceback).
    from modelcert.store import db

    engine = db.make_engine(database_url)
    db.upgrade(engine, "0009")
    engine.dispose()
    head = db.head_revision()
    for args in (["notify", "list"], ["catalog", "list"], ["audit"]):
        cli(database_url, *args).assert_one_error(
            "schema revision 0009", f"needs {head}", "modelcert db upgrade"
        )
    # The API refuses to serve it too (its routes would answer 500 on the missing tables).
    cli(database_url, "api", "--port", "65001").assert_one_error("schema revision 0009")
    assert cli(database_url, "db", "upgrade").code == 0
    assert cli(database_url, "notify", "list").code == 0


def test_the_head_revision_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from modelcert.store import db

    scripts = ScriptDirectory.from_config(db.alembic_config(db.make_engine("sqlite://")))
    assert db.head_revision() == scripts.get_current_head()


# --- ids, dates, delays, on a migrated database ------------------------------------------


@pytest.fixture
def migrated_url(database_url: str, engine: Engine) -> str:
    engine.dispose()
    return database_url


# Each test walks its cases on one database: a database per case costs more than the case.
JOB_IDS = [
    ("123e4567-e89b-12d3-a456-426614174000", "unknown job '123e4567-"),
    ("42", "'42' is not a job id"),
    ("²", "is not a job id"),
    ("x" * 5000, "is not a job id"),
    ("'; DROP TABLE jobs; --", "is not a job id"),
    ("", "is not a job id"),
]


def test_jobs_show_an_unknown_or_malformed_id(cli: Cli, migrated_url: str) -> None:
    for job_id, expected in JOB_IDS:
        line = cli(migrated_url, "jobs", "show", job_id).assert_one_error(expected)
        assert len(line) < 200


# What the API refuses (modelcert.validation.Since), and what would overflow.
SINCE = ["0001-01-01", "1969-12-31", "9999-12-31", "9999-12-31T23:59:59+00:00", "99999999999d"]
SINCE += ["999999999999999999999w", "2026-13-45", "2025-02-29", "yesterday", "", "1d\x00"]


def test_report_since_out_of_range_or_ill_formed(cli: Cli, migrated_url: str) -> None:
    for since in SINCE:
        line = cli(migrated_url, "report", "--since", since).assert_one_error("--since ")
        assert any(why in line for why in ("from 1970 to 8999", "1 character", "control")), line
    for since in ("1970-01-01", "8999-12-31", "2w", "2024-02-29T12:00:00Z"):
        result = cli(migrated_url, "report", "--since", since)
        assert result.code == 0, result.stderr


# Digits beyond any id column (int4 on PostgreSQL, 64-bit on SQLite), digits that are
# not ASCII, control characters (NUL reaches PostgreSQL only in-process: argv cannot
# hold one), white space around: refused before any lookup, as the API refuses them.
BAD_REFS = ["99999999999999999999", str(2**31), str(2**63), "²", "١٢", "lab/x\x00", " 1", "a\x1b"]
BAD_REGIONS = ["a/b", "x" * 100, "us-east-1\x00", "²"]


def test_bad_deployment_refs_and_regions_are_one_line(cli: Cli, migrated_url: str) -> None:
    for ref in BAD_REFS:
        for args in (
            ["certify", "--deployment", ref, "--region", "us-east-1"],
            ["enqueue", "--deployment", ref, "--region", "us-east-1"],
            ["report", "--model", ref],
            ["report", "--require", f"{ref}@us-east-1"],
        ):
            line = cli(migrated_url, *args).assert_one_error()
            reasons = ("unknown deployment", "must be a deployment id", "control characters")
            assert any(reason in line for reason in reasons), line
    for region in BAD_REGIONS:
        for args in (
            ["certify", "--deployment", "1", "--region", region],
            ["enqueue", "--deployment", "1", "--region", region],
            ["report", "--region", region],
        ):
            cli(migrated_url, *args).assert_one_error("--region ", "String should")
    cli(migrated_url, "report", "--provider", "No Such!").assert_one_error("--provider ")


def test_a_provider_is_refused_regions_it_cannot_serve(cli: Cli, migrated_url: str) -> None:
    add = ["catalog", "add-provider"]
    for region in [*BAD_REGIONS, "bad region"]:
        cli(migrated_url, *add, "p1", "--kind", "sim", "--region", region).assert_one_error(
            "not a region name"
        )
    # The Gemini API is one endpoint; Vertex AI's regions are locations of a project.
    cli(migrated_url, *add, "g1", "--kind", "gemini", "--region", "us-central1").assert_one_error(
        "one endpoint", "global", "Vertex AI"
    )
    vertex = ["--kind", "gemini", "--region", "us-central1", "--config", '{"vertexai": true}']
    cli(migrated_url, *add, "v1", *vertex).assert_one_error("project")
    assert cli(migrated_url, *add, "g2", "--kind", "gemini").code == 0  # global
    vertex[-1] = '{"vertexai": true, "project": "p"}'
    assert cli(migrated_url, *add, "v2", *vertex, "--region", "global").code == 0


def test_enqueue_delay_must_be_finite_and_at_most_seven_days(cli: Cli, migrated_url: str) -> None:
    args = ["enqueue", "--deployment", "sim/aurora-fast", "--region", "us-east-1"]
    for delay in ["nan", "inf", "-inf", "-1", "1e12", "604801"]:
        cli(migrated_url, *args, "--delay", delay).assert_one_error(
            "--delay: expected 0 to 604800 seconds (7 days)"
        )


def test_the_cli_and_the_api_share_the_delay_cap() -> None:
    import inspect

    from modelcert.api.schemas import MAX_DELAY_S
    from modelcert.cli import jobs

    assert MAX_DELAY_S == 7 * 24 * 3600
    assert "MAX_DELAY_S" in inspect.getsource(jobs.enqueue_command)


# --- ports: refused before a server starts ----------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


def test_the_api_and_up_refuse_a_port_in_use_or_a_host_that_is_not_here(
    cli: Cli, tmp_path: Path, busy_port: int
) -> None:
    url = f"sqlite:///{tmp_path / 'modelcert.db'}"
    assert cli(url, "db", "upgrade").code == 0
    cli(url, "api", "--port", str(busy_port)).assert_one_error(
        f"cannot listen on 127.0.0.1:{busy_port} (Address already in use)", "--port"
    )
    cli(url, "api", "--host", "256.1.1.1", "--port", "8000").assert_one_error(
        "cannot listen on 256.1.1.1:8000"
    )
    cli(url, "up", "--port", str(busy_port)).assert_one_error(
        f"cannot listen on 127.0.0.1:{busy_port} (Address already in use)"
    )
    api_port = str(free_port())
    cli(
        url, "up", "--workers", "2", "--port", api_port, WORKER_HEALTH_PORT="65535"
    ).assert_one_error(
        "cannot listen on 0.0.0.0:65536 (ports are 0 to 65535)", "WORKER_HEALTH_PORT"
    )


# --- the worker's health port: a real process, refused at start ---------------------------


def test_a_worker_whose_health_port_is_in_use_exits_2_in_one_line(
    tmp_path: Path, busy_port: int
) -> None:
    url = f"sqlite:///{tmp_path / 'modelcert.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "modelcert", "worker", "--health-port", str(busy_port)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "MODELCERT_DATABASE_URL": url,
            "MODELCERT_WORKER_HEALTH_HOST": "127.0.0.1",
        },
        cwd=tmp_path,
    )
    Result(result.returncode, result.stdout, result.stderr).assert_one_error(
        f"cannot listen on 127.0.0.1:{busy_port}", "--health-port or WORKER_HEALTH_PORT"
    )
    assert files_in(tmp_path) == []  # stopped before it touched the database


CLI_INPUTS = [
    ("jobs", "show", "{}"),
    ("report", "--since", "{}"),
    ("report", "--model", "{}"),
    ("report", "--region", "{}"),
    ("report", "--provider", "{}"),
    ("report", "--require", "{}"),
    ("enqueue", "--deployment", "{}", "--region", "us-east-1"),
    ("enqueue", "--deployment", "1", "--region", "{}"),
    ("enqueue", "--deployment", "1", "--region", "us-east-1", "--delay", "{}"),
    ("certify", "--deployment", "{}", "--region", "us-east-1"),
]


def test_arbitrary_values_on_the_command_line_are_never_a_traceback(
    cli: Cli, migrated_url: str
) -> None:
    """Property: any string or integer as any id, ref, region, date, filter or delay of the
    CLI exits 0 or 2 (one `error:` line), never a traceback."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    values = st.one_of(
        st.text(max_size=40),
        st.integers().map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.sampled_from(["²", "0001-01-01", "9999-12-31", "1e12", "-1", "sim/²", "a" * 300]),
    )

    @settings(max_examples=40, deadline=None, database=None)
    @given(template=st.sampled_from(CLI_INPUTS), value=values)
    def check(template: tuple[str, ...], value: str) -> None:
        args = [value if part == "{}" else part for part in template]
        result = cli(migrated_url, *args)
        output = result.stdout + result.stderr
        assert "Traceback" not in output, (args, output)
        assert result.code in (0, 2), (args, result.code, output)
        if result.code == 2:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)

    check()
