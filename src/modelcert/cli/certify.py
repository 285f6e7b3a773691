"""`modelcert certify`, `matrix` and `report`: one certification in this process, the
current verdicts, and reports (with a CI gate)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from modelcert.cli.common import (
    CLI_DATABASE_PATIENCE_S,
    EXIT_NOT_CERTIFIED,
    BudgetOption,
    SmokeOption,
    SuiteOption,
    certify_options,
    console,
    deployment_ref,
    region_name,
    run,
    session_factory,
    validated,
)
from modelcert.errors import UserError

if TYPE_CHECKING:
    from modelcert.domain import TestResult


def _progress_printer(label: str, region: str) -> Callable[[int, int, TestResult], None]:
    def on_result(index: int, total: int, result: TestResult) -> None:
        console.print(
            f"[dim]{label} {region} [{index + 1}/{total}] {result.test_id}: "
            f"{result.outcome.value}[/]"
        )

    return on_result


def certify_command(
    deployment: Annotated[str, typer.Option(help="Deployment id or provider/model-id.")],
    region: Annotated[str, typer.Option(help="Region to certify in.")],
    suite: SuiteOption = None,
    smoke: SmokeOption = False,
    budget_usd: BudgetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run one certification in-process and print its tests and verdict. Exit code 0 when
    it is certified (CERTIFIED or QUALITY_WARNING), 1 when not, 2 for bad input."""
    # Imported here: `modelcert --help` and the other commands need none of the engine.
    from modelcert.api import operations
    from modelcert.certify.engine import (
        CertificationEngine,
        CertificationOutcome,
        CertificationRequest,
    )
    from modelcert.cli import render
    from modelcert.settings import get_settings
    from modelcert.store import db
    from modelcert.store.runs import RunStore
    from modelcert.store.suite_selection import check_suite_names

    deployment, region = deployment_ref(deployment), region_name(region)
    options = certify_options(suite, smoke, budget_usd)
    factory = session_factory()
    with db.transaction(factory) as session:
        operations.check_active(session, [(deployment, region)])
        check_suite_names(session, options.suites or ())
    settings = get_settings()
    engine = CertificationEngine(RunStore(factory, patience_s=CLI_DATABASE_PATIENCE_S), settings)
    callback = None if as_json else _progress_printer(deployment, region)

    async def go() -> CertificationOutcome:
        try:
            request = CertificationRequest(
                deployment,
                region,
                suites=options.suites,
                smoke=options.smoke,
                budget_usd=options.budget_usd,
            )
            return await engine.certify(request, on_result=callback)
        finally:
            await engine.aclose()

    outcome = run(go)
    if as_json:
        print(json.dumps(render.outcome_json(outcome), indent=2))
    else:
        render.print_outcome(console, outcome)
    if not outcome.score.status.is_valid_verdict:
        raise typer.Exit(EXIT_NOT_CERTIFIED)


def matrix(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the current certification of every deployment in every region."""
    from modelcert.cli import render
    from modelcert.store import db, repo

    with db.transaction(session_factory()) as session:
        rows = repo.certifications(session)
        if as_json:
            print(json.dumps([render.certification_json(c) for c in rows], indent=2))
            return
        console.print(render.matrix_table(rows))
        if any(c.simulated for c in rows):
            console.print(render.SIMULATION_NOTE)


def _check_since(since: str, parse: Callable[[str, datetime], datetime], now: datetime) -> None:
    """`--since` as the API takes it (modelcert.validation.Since: a window or a date from
    1970 to 8999), and one that date arithmetic can go back from (UserError otherwise)."""
    from modelcert.validation import Since

    validated(Since, since, "--since")
    try:
        parse(since, now)
    except OverflowError:
        raise UserError(f"--since {since!r}: out of range", field="since") from None


def report_command(
    fmt: Annotated[str, typer.Option("--format", help="json | markdown | junit")] = "markdown",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider (slug).")] = None,
    region: Annotated[str | None, typer.Option(help="Only this region.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this deployment.")] = None,
    since: Annotated[str, typer.Option(help="Changes since: 30m, 12h, 7d, 2w, a date.")] = "7d",
    require: Annotated[
        list[str] | None,
        typer.Option(help="MODEL@REGION that must be certified now (repeat); else exit 1."),
    ] = None,
) -> None:
    """Write the current certifications and recent changes as JSON, Markdown or JUnit XML;
    with --require, a CI gate."""
    from pathlib import Path

    from modelcert.reports import build as reports
    from modelcert.reports import formats
    from modelcert.store import db
    from modelcert.store.models import utcnow

    if fmt not in formats.FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {', '.join(formats.FORMATS)}")
    requirements = [reports.Requirement.parse(text) for text in require or []]
    for requirement in requirements:
        deployment_ref(requirement.model, "--require")
        region_name(requirement.region, "--require")
    if model is not None:
        model = deployment_ref(model, "--model")
    if region is not None:
        region = region_name(region)
    if provider is not None:
        from modelcert.validation import ProviderSlug

        provider = validated(ProviderSlug, provider, "--provider")
    now = utcnow()
    _check_since(since, reports.parse_since, now)
    filters = reports.ReportFilters(provider=provider, region=region, model=model, since=since)
    with db.transaction(session_factory()) as session:
        report = reports.build_report(session, filters, now)
        checked = reports.check_requirements(session, requirements, now)
    document = formats.render(report, fmt)
    if output is None:
        sys.stdout.write(document)
    else:
        try:
            Path(output).write_text(document, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--output: cannot write {output}: {exc.strerror}") from exc
        print(f"report written to {output}", file=sys.stderr)
    missing = [(requirement, entry) for requirement, entry in checked if not entry.valid]
    for requirement, entry in missing:
        print(f"not certified: {requirement}: {entry.reason}", file=sys.stderr)
    if missing:
        raise typer.Exit(1)
    if checked:
        print(f"certified: {', '.join(str(r) for r, _ in checked)}", file=sys.stderr)
