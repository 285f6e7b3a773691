"""The `modelcert` command line. Thin: parse, call one function, print. Errors a user
can cause, and a database that cannot be reached, print one line and exit with code 2.

One module per area: `catalog` (db, catalog), `certify` (certify, matrix, report),
`demo`, `keys` (apikey), `jobs` (enqueue, jobs, recertify-due, worker, api, up),
`operator` (region, audit), `runs` (runs export, runs diff), `suite` (test suites).

Exit codes: 0 success (for `certify`, `enqueue --wait` and `report --require`: every
certification asked for is valid), 1 some certification is not (failed, errored,
incomplete, cancelled, or not done within `--timeout`), 2 a usage or input error or a
database out of reach (one `error:` line), 130 interrupted.

Fast to start: the command modules import only typer, rich and the standard library at
the top; SQLAlchemy, DBOS, FastAPI, pydantic and the engine are imported by the commands
that use them (`modelcert --help` takes a tenth of a second, not two)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer
from typer import Abort
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from modelcert.cli import catalog, certify, demo, jobs, keys, notify, operator, runs
from modelcert.cli import cost as cost_cli
from modelcert.cli.common import database_unavailable_message
from modelcert.cli.suite import suite_app
from modelcert.errors import UserError

app = typer.Typer(
    help="Certify AI model deployments, per region, with live tests. Exit codes: 0 done "
    "(every certification asked for is valid), 1 some is not, 2 a usage or input error.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _configure() -> None:
    """Before any command (not for `modelcert --help`): the CLI's logging."""
    from modelcert.obs.logging import configure_logging

    # A command's output is its tables; the engine's event lines are for workers
    # (`modelcert worker` logs at MODELCERT_LOG_LEVEL), so the CLI shows only warnings and
    # errors.
    configure_logging(json_lines=False, level="WARNING")


app.add_typer(catalog.db_app, name="db")
app.add_typer(catalog.catalog_app, name="catalog")
app.add_typer(keys.apikey_app, name="apikey")
app.command("certify")(certify.certify_command)
app.command("matrix")(certify.matrix)
app.command("report")(certify.report_command)
app.command("cost")(cost_cli.cost_command)
app.add_typer(cost_cli.price_app, name="price")
app.command("demo")(demo.demo_command)
app.command("api")(jobs.api_command)
app.command("enqueue")(jobs.enqueue_command)
app.command("worker")(jobs.worker_command)
app.command("up")(jobs.up_command)
app.command("recertify-due")(jobs.recertify_due_command)
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(operator.region_app, name="region")
app.command("audit")(operator.audit_command)
app.add_typer(notify.notify_app, name="notify")
app.add_typer(runs.runs_app, name="runs")
app.add_typer(suite_app, name="suite")


def main() -> None:
    """Entry point: user errors, and a database out of reach, become one line on stderr
    and exit code 2."""
    sys.exit(run_command(sys.argv[1:]))


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _is_nul_refused(exc: BaseException) -> bool:
    """PostgreSQL's (psycopg's) refusal of a NUL character in a text parameter."""
    from sqlalchemy.exc import DataError

    return isinstance(exc, DataError) and "NUL (0x00)" in str(exc.orig)


def run_command(args: Sequence[str]) -> int:
    """Run one command line; its exit code. Anything a user can cause (a bad option, a bad
    setting, bad input, a database that is missing or out of reach) is one `error:` line
    on stderr and exit code 2; anything else is a bug, and keeps its traceback."""
    try:
        result = app(args=list(args), prog_name="modelcert", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `modelcert` or a group alone: its help
        exc.show()
        return exc.exit_code
    except UsageError as exc:  # a missing or bad option: one line, not a box
        command = exc.ctx.command_path if exc.ctx is not None else "modelcert"
        return _error(f"{exc.format_message()} (see `{command} --help`)")
    except ClickException as exc:
        return _error(exc.format_message())
    except Abort:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as exc:
        return _error(exc.message)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Imported here: a command that raised one has imported them already.
        from pydantic import ValidationError

        from modelcert.store.outage import is_database_unavailable

        if isinstance(exc, ValidationError):  # a bad setting (environment or .env): name it
            problems = []
            for problem in exc.errors(include_url=False, include_input=False):
                where = ".".join(str(part) for part in problem["loc"]) or exc.title
                problems.append(f"{where}: {problem['msg'].removeprefix('Value error, ')}")
            return _error("; ".join(problems))
        # The options' own validation refuses control characters with a message naming
        # the option; this is the net under it for one that reaches PostgreSQL unchecked
        # (it refuses NUL in text), so that it stays a user's error, not a traceback.
        if _is_nul_refused(exc):
            return _error("an argument holds a NUL character, which text cannot contain")
        # The database out of reach is not a bug: say which one, no traceback. Anything
        # else is one, and keeps its traceback.
        if not is_database_unavailable(exc):
            raise
        return _error(database_unavailable_message(exc))
    # Not standalone: a command's `typer.Exit(code)` comes back as its code.
    return result if isinstance(result, int) else 0
