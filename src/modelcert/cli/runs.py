"""`modelcert runs export` and `modelcert runs diff`: run history (or its test results)
as CSV, JSON or JUnit XML over a date range, and two runs of one deployment compared test
by test."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from modelcert.cli.choices import ExportFormat
from modelcert.cli.common import console, deployment_ref, open_engine, region_name
from modelcert.errors import UserError

runs_app = typer.Typer(help="Run history: export it, compare two runs.", no_args_is_help=True)


@runs_app.command("export")
def runs_export(
    tests: Annotated[
        bool, typer.Option("--tests", help="A row per test result instead of per run.")
    ] = False,
    fmt: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.CSV,
    since: Annotated[
        str | None,
        typer.Option(help="Runs started from: 30m, 12h, 7d, 2w, or a date.", show_default=False),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Runs started before (a date).", show_default=False)
    ] = None,
    deployment: Annotated[
        str | None, typer.Option(help="Only this deployment.", show_default=False)
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Only this region.", show_default=False)
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=100_000, help="At most this many rows.")
    ] = 10_000,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
) -> None:
    """Every run (or, with --tests, every test of every run) started in a date range, as
    CSV or JSON, oldest first; --format junit: those runs as JUnit XML (a testcase per
    built-in test and per assertion of each suite test)."""
    from pathlib import Path

    from modelcert.cli.operator import audit_window
    from modelcert.reports import runs as history
    from modelcert.settings import get_settings
    from modelcert.store import db, repo

    start, end = audit_window(since, until)
    ref = deployment_ref(deployment) if deployment is not None else None
    where = region_name(region) if region is not None else None
    factory = db.make_session_factory(open_engine(get_settings()))
    with db.transaction(factory) as session:
        deployment_id = repo.find_deployment(session, ref).id if ref is not None else None
        filters = history.ExportFilter(start, end, deployment_id, where)
        found = history.export_rows(
            session,
            "tests" if tests else "runs",
            filters,
            limit=limit,
            with_tests=fmt is ExportFormat.JUNIT,
        )
    document = history.render(found, filters, fmt.value)
    if output is None:
        sys.stdout.write(document)
    else:
        try:
            Path(output).write_text(document, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--output: cannot write {output}: {exc.strerror}") from exc
        print(f"{len(found.rows)} {found.kind} written to {output}", file=sys.stderr)
    if found.truncated:
        print(
            f"warning: more than {limit} {found.kind} matched: the first {limit} only "
            "(raise --limit, or narrow --since/--until)",
            file=sys.stderr,
        )


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


@runs_app.command("diff")
def runs_diff(
    a: Annotated[int, typer.Argument(help="A run id (see `runs export` or the dashboard).")],
    b: Annotated[int, typer.Argument(help="A run of the same deployment (any region).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Two runs of one deployment compared test by test: outcome, latency, TTFT, retries,
    category and message, with what changed."""
    from rich.table import Table

    from modelcert.reports import runs as history
    from modelcert.settings import get_settings
    from modelcert.store import db
    from modelcert.validation import ID_MAX

    for name, value in (("A", a), ("B", b)):
        if not 1 <= value <= ID_MAX:
            raise UserError(f"{name}: {value} is not a run id", field=name.lower())
    factory = db.make_session_factory(open_engine(get_settings()))
    with db.transaction(factory) as session:
        found = history.diff_runs(session, a, b)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    run_a, run_b = found["a"], found["b"]
    console.print(
        f"{found['deployment']}: run {a} ({run_a['region']}, {run_a['started_at'] or '-'}) "
        f"{run_a['status']} vs run {b} ({run_b['region']}, {run_b['started_at'] or '-'}) "
        f"{run_b['status']}; {found['changedTests']} test(s) differ"
    )
    table = Table("test", "A", "B", "latency ms A→B", "TTFT ms A→B", "retries", "category A→B")
    for row in found["tests"]:
        ta, tb = row["a"] or {}, row["b"] or {}
        mark = "[bold]" if row["changed"] else ""
        table.add_row(
            f"{mark}{row['test_id']}",
            ta.get("outcome") or "-",
            tb.get("outcome") or "-",
            f"{_ms(ta.get('latency_ms'))} → {_ms(tb.get('latency_ms'))}",
            f"{_ms(ta.get('ttft_ms'))} → {_ms(tb.get('ttft_ms'))}",
            f"{ta.get('retries', '-')} → {tb.get('retries', '-')}",
            f"{ta.get('error_category') or '-'} → {tb.get('error_category') or '-'}",
        )
    console.print(table)
    for row in found["tests"]:
        ta, tb = row["a"] or {}, row["b"] or {}
        if "error_message" in row["changed"]:
            console.print(f"{row['test_id']}: A: {ta.get('error_message') or '-'}")
            console.print(f"{' ' * len(row['test_id'])}  B: {tb.get('error_message') or '-'}")
