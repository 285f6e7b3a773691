"""`modelcert cost` (what certification cost, per day or month by provider and region, or
one job's) and `modelcert price` (list, set, clear: each deployment's price and where it
comes from: its own, the seed table's list price, or none)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelcert.cli.common import cli_actor, console, deployment_ref, region_name, validated
from modelcert.cli.operator import audit_window
from modelcert.errors import UserError

if TYPE_CHECKING:
    from modelcert.store.cost_report import CostLine, CostReport
    from modelcert.store.deployment_prices import DeploymentPrice

price_app = typer.Typer(
    help="Deployments' prices (USD per 1M tokens): list, set, clear.", no_args_is_help=True
)

# Without --since: the last 30 days by day, the last 12 months by month.
DEFAULT_DAYS = 30
DEFAULT_MONTHS = 12


def checked_prices(
    input_per_mtok: float | None,
    output_per_mtok: float | None,
    per_request: float | None,
    *,
    names: tuple[str, str] = ("--input", "--output"),
    per_request_name: str = "--per-request",
) -> tuple[float | None, float | None, float | None]:
    """The three prices as given, each finite and ≥ 0; token prices both or neither.
    `UserError` naming the option otherwise."""
    from modelcert.store.deployment_prices import MAX_PER_MTOK, MAX_PER_REQUEST

    for name, value, limit in (
        (names[0], input_per_mtok, MAX_PER_MTOK),
        (names[1], output_per_mtok, MAX_PER_MTOK),
        (per_request_name, per_request, MAX_PER_REQUEST),
    ):
        if value is not None and not (math.isfinite(value) and 0 <= value <= limit):
            raise UserError(
                f"{name}: expected USD from 0 to {limit:g}, not {value:g}", field=name.lstrip("-")
            )
    if (input_per_mtok is None) != (output_per_mtok is None):
        raise UserError(
            f"{names[0]} and {names[1]} go together (a price per 1M input and output tokens)",
            field=names[0].lstrip("-"),
        )
    return input_per_mtok, output_per_mtok, per_request


def _window(by: str, since: str | None, until: str | None) -> tuple[datetime, datetime | None]:
    """--since and --until; without --since, the default window of `by`."""
    from modelcert.store.models import utcnow

    start, end = audit_window(since, until)
    if start is None:
        today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        if by == "day":
            start = today - timedelta(days=DEFAULT_DAYS - 1)
        else:
            month, year = today.month - (DEFAULT_MONTHS - 1), today.year
            while month < 1:
                month, year = month + 12, year - 1
            start = today.replace(year=year, month=month, day=1)
        if end is not None and end <= start:
            raise UserError("--until must be after --since", field="until")
    return start, end


def cost_command(
    by: Annotated[str, typer.Option(help="Group by UTC day or month: day, month.")] = "day",
    since: Annotated[
        str | None,
        typer.Option(
            help="From: 7d, 2w, or a date (default: the last 30 days, or 12 months).",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Until (a date, exclusive).", show_default=False)
    ] = None,
    provider: Annotated[
        str | None, typer.Option(help="Only this provider (slug).", show_default=False)
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Only this region.", show_default=False)
    ] = None,
    job: Annotated[
        str | None,
        typer.Option(help="One job (its id or first characters): its runs and total."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What certification cost: per day or month by provider and region, or one job's.

    At the deployments' prices (`modelcert price list`). Runs that made calls with no
    price known are counted as unpriced, never as free."""
    from modelcert.cli.common import resolve_job, session_factory
    from modelcert.store import db
    from modelcert.store.cost_report import PERIODS, cost_report, job_cost, job_run_costs
    from modelcert.validation import ProviderSlug

    if by not in PERIODS:
        raise UserError(f"--by {by[:20]!r}: expected day or month", field="by")
    if provider is not None:
        provider = validated(ProviderSlug, provider, "--provider")
    if region is not None:
        region = region_name(region)
    factory = session_factory()
    with db.transaction(factory) as session:
        if job is not None:
            job_id = resolve_job(session, job, "--job")
            total = job_cost(session, job_id)
            runs = job_run_costs(session, job_id)
            start, end = audit_window(since, until) if since or until else (None, None)
            report = cost_report(
                session, by=by, since=start, until=end, provider=provider, region=region,
                job_id=job_id,
            )  # fmt: skip
        else:
            job_id, total, runs = None, None, []
            start, end = _window(by, since, until)
            report = cost_report(
                session, by=by, since=start, until=end, provider=provider, region=region
            )
    if as_json:
        answer: dict[str, Any] = report.as_json()
        if job_id is not None and total is not None:
            answer["job"] = {
                "jobId": job_id,
                **total.as_json(),
                "runs": [run.as_json() for run in runs],
            }
        print(json.dumps(answer, indent=2))
        return
    if job_id is not None and total is not None:
        _print_job(job_id, total, runs)
        return
    _print_report(report)


def _money(value: float | None) -> str:
    from modelcert.cost.prices import format_usd

    return format_usd(value)


def _counts(line: CostLine) -> str:
    notes = []
    if line.unpriced_runs:
        notes.append(f"{line.unpriced_runs} unpriced")
    if line.running:
        notes.append(f"{line.running} running")
    return ", ".join(notes)


def _print_report(report: CostReport) -> None:
    from rich.table import Table

    start = report.since.strftime("%Y-%m-%d") if report.since else "the start"
    end = f" to {report.until:%Y-%m-%d}" if report.until else ""
    if not report.lines:
        console.print(f"no certification run since {start}{end}")
        return
    table = Table(title=f"Cost by {report.by}, since {start}{end} (UTC)")
    for column in ("period", "provider", "region", "runs", "cost USD", "not counted"):
        table.add_column(column, justify="right" if column in ("runs", "cost USD") else "left")
    totals = {line.period: line for line in report.periods}
    shown: str | None = None
    for line in report.lines:
        if shown is not None and line.period != shown and len(report.lines) > 1:
            _total_row(table, totals[shown])
        shown = line.period
        table.add_row(
            line.period or "", line.provider or "", line.region or "", str(line.runs),
            _money(line.cost_usd), _counts(line),
        )  # fmt: skip
    if shown is not None and len(report.periods) > 1:
        _total_row(table, totals[shown])
    total = report.total
    table.add_row(
        "[bold]total[/]", "", "", str(total.runs), f"[bold]{_money(total.cost_usd)}[/]",
        _counts(total), end_section=True,
    )  # fmt: skip
    console.print(table)
    if total.unpriced_runs:
        console.print(
            f"{total.unpriced_runs} run(s) made calls with no price known: not counted "
            "(`modelcert price list`, `modelcert price set`)"
        )


def _total_row(table: Any, line: CostLine) -> None:
    table.add_row(
        f"[dim]{line.period}[/]", "[dim]all[/]", "", f"[dim]{line.runs}[/]",
        f"[dim]{_money(line.cost_usd)}[/]", _counts(line), end_section=True,
    )  # fmt: skip


def _print_job(job_id: str, total: CostLine, runs: list[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"Cost of job {job_id}")
    for column in ("run", "deployment", "region", "status", "cost USD"):
        table.add_column(column, justify="right" if column in ("run", "cost USD") else "left")
    for run in runs:
        table.add_row(str(run.run_id), run.deployment, run.region, run.status, _money(run.cost_usd))
    console.print(table)
    notes = _counts(total)
    console.print(
        f"job {job_id[:8]}: {_money(total.cost_usd)} over {total.runs} run(s)"
        + (f" ({notes})" if notes else "")
    )


def demo_cost_line(total: CostLine) -> str:
    """The demo's cost line: what its runs cost at the demo catalog's DEMO prices."""
    notes = _counts(total)
    return (
        f"cost: {_money(total.cost_usd)} over {total.runs} runs at the demo's DEMO prices "
        f"(simulated calls; `modelcert cost`, `modelcert price list`)"
        + (f"; {notes}" if notes else "")
    )


# --- prices ---------------------------------------------------------------------------


def _price_json(row: DeploymentPrice) -> dict[str, Any]:
    return row.as_json()


def _price_line(row: DeploymentPrice) -> str:
    price = row.price
    if price is None:
        return f"{row.deployment}: no price (cost unknown)"
    fee = f", ${price.per_request:g} per request" if price.per_request else ""
    return (
        f"{row.deployment}: ${price.input_per_mtok:g} in / ${price.output_per_mtok:g} out "
        f"per 1M tokens{fee} ({price.source})"
    )


@price_app.command("list")
def price_list(
    provider: Annotated[
        str | None, typer.Option(help="Only this provider's deployments.", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Each deployment's price per 1M input and output tokens, and its source: override
    (its own), seed:<date> (the list price table), or none (cost unknown)."""
    from rich.table import Table

    from modelcert.cli.common import session_factory
    from modelcert.store import db
    from modelcert.store.deployment_prices import deployment_prices
    from modelcert.validation import ProviderSlug

    if provider is not None:
        provider = validated(ProviderSlug, provider, "--provider")
    with db.transaction(session_factory()) as session:
        rows = deployment_prices(session, provider)
    if as_json:
        print(json.dumps([_price_json(row) for row in rows], indent=2))
        return
    if not rows:
        console.print("no deployment")
        return
    table = Table(title="Prices (USD)")
    for column in ("id", "deployment", "kind", "in /1M", "out /1M", "per request", "source"):
        table.add_column(column, justify="right" if "/" in column or column == "id" else "left")
    for row in rows:
        price = row.price
        table.add_row(
            str(row.deployment_id), row.deployment, row.provider_kind,
            f"{price.input_per_mtok:g}" if price else "—",
            f"{price.output_per_mtok:g}" if price else "—",
            f"{price.per_request:g}" if price and price.per_request else "",
            row.source,
        )  # fmt: skip
    console.print(table)


DeploymentArgument = Annotated[
    str, typer.Argument(help="Deployment id or provider/model-id.", show_default=False)
]


@price_app.command("set")
def price_set(
    deployment: DeploymentArgument,
    input_price: Annotated[
        float, typer.Option("--input", help="USD per 1M input tokens.", show_default=False)
    ],
    output_price: Annotated[
        float, typer.Option("--output", help="USD per 1M output tokens.", show_default=False)
    ],
    per_request: Annotated[
        float | None,
        typer.Option(help="A fee in USD per answered call.", show_default=False),
    ] = None,
) -> None:
    """Give a deployment its own price (it overrides the seed table's). Recorded in the
    audit log."""
    from modelcert.cli.common import session_factory
    from modelcert.store import db
    from modelcert.store.deployment_prices import set_price

    ref = deployment_ref(deployment, "DEPLOYMENT")
    checked_prices(input_price, output_price, per_request)
    with db.transaction(session_factory()) as session:
        row = set_price(
            session, ref, input_per_mtok=input_price, output_per_mtok=output_price,
            per_request=per_request, actor=cli_actor(), interface="cli",
        )  # fmt: skip
    console.print(_price_line(row))


@price_app.command("clear")
def price_clear(deployment: DeploymentArgument) -> None:
    """Remove a deployment's own price: the seed table's applies again, if it lists the
    model. Recorded in the audit log."""
    from modelcert.cli.common import session_factory
    from modelcert.store import db
    from modelcert.store.deployment_prices import clear_price

    ref = deployment_ref(deployment, "DEPLOYMENT")
    with db.transaction(session_factory()) as session:
        row, changed = clear_price(session, ref, actor=cli_actor(), interface="cli")
    if not changed:
        console.print(f"{row.deployment} had no price of its own")
    console.print(_price_line(row))
