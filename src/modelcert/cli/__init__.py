"""The `modelcert` command line. Thin: parse, call one function, print. Errors a user
can cause, and a database that cannot be reached, print one line and exit with code 2.

One module per area: `catalog` (db, catalog), `certify` (certify, matrix, report),
`demo`, `keys` (apikey), `jobs` (enqueue, jobs, recertify-due, worker, api, up)."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError

from modelcert.cli import catalog, certify, demo, jobs, keys
from modelcert.cli.common import database_unavailable_message
from modelcert.errors import UserError
from modelcert.obs.logging import configure_logging
from modelcert.store.outage import is_database_unavailable

app = typer.Typer(
    help="Certify AI model deployments, per region, with live tests.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(catalog.db_app, name="db")
app.add_typer(catalog.catalog_app, name="catalog")
app.add_typer(keys.apikey_app, name="apikey")
app.command("certify")(certify.certify_command)
app.command("matrix")(certify.matrix)
app.command("report")(certify.report_command)
app.command("demo")(demo.demo_command)
app.command("api")(jobs.api_command)
app.command("enqueue")(jobs.enqueue_command)
app.command("worker")(jobs.worker_command)
app.command("up")(jobs.up_command)
app.command("recertify-due")(jobs.recertify_due_command)
app.add_typer(jobs.jobs_app, name="jobs")


def main() -> None:
    """Entry point: user errors, and a database out of reach, become one line on stderr
    and exit code 2."""
    # A command's output is its tables; the engine's event lines are for workers (`modelcert
    # worker` logs at MODELCERT_LOG_LEVEL), so the CLI shows only warnings and errors.
    configure_logging(json_lines=False, level="WARNING")
    try:
        app()
    except UserError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except ValidationError as exc:  # a bad setting (environment or .env): name it, no traceback
        for problem in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in problem["loc"]) or exc.title
            message = problem["msg"].removeprefix("Value error, ")
            print(f"error: {where}: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        # The database out of reach is not a bug: say which one, no traceback. Anything
        # else is one, and keeps its traceback.
        if not is_database_unavailable(exc):
            raise
        print(f"error: {database_unavailable_message(exc)}", file=sys.stderr)
        sys.exit(2)
