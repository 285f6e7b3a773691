"""`modelcert region` (pause, resume, list) and `modelcert audit`: operator controls
over the region queues, and the log of every operator action (API, CLI, dashboard)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelcert.cli.common import cli_actor, console, open_engine, region_name, validated
from modelcert.errors import UserError

if TYPE_CHECKING:
    from datetime import datetime

region_app = typer.Typer(help="Pause and resume a region's queue.", no_args_is_help=True)

RegionArgument = Annotated[str, typer.Argument(help="Region, e.g. us-east-1.")]


def _toggle(region: str, pause: bool) -> None:
    from modelcert.api import operations
    from modelcert.jobs.enqueue import Enqueuer
    from modelcert.settings import get_settings
    from modelcert.store import db

    region = region_name(region, "REGION")
    settings = get_settings()
    engine = open_engine(settings)
    factory = db.make_session_factory(engine)
    enqueuer = Enqueuer(engine, settings)
    actor = operations.Actor(cli_actor(), "cli")
    try:
        if pause:
            changed = operations.pause_region(factory, enqueuer.client, settings, actor, region)
        else:
            changed = operations.resume_region(factory, enqueuer.client, settings, actor, region)
    finally:
        enqueuer.close()
    if pause:
        console.print(
            f"region {region} paused: queued certifications wait until it is resumed"
            if changed
            else f"region {region} was already paused"
        )
    else:
        console.print(f"region {region} resumed" if changed else f"region {region} was not paused")


@region_app.command("pause")
def region_pause(region: RegionArgument) -> None:
    """Stop starting certifications in a region, on every worker (queued ones wait,
    running ones finish). Recorded in the audit log."""
    _toggle(region, True)


@region_app.command("resume")
def region_resume(region: RegionArgument) -> None:
    """Let a paused region's queue start certifications again. Recorded in the audit log."""
    _toggle(region, False)


@region_app.command("list")
def region_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The regions active providers serve, and which are paused (by whom, since when)."""
    from modelcert.api import operations
    from modelcert.settings import get_settings
    from modelcert.store import db

    factory = db.make_session_factory(open_engine(get_settings()))
    with db.transaction(factory) as session:
        served = sorted(operations.served_regions(session))
        paused = {p["region"]: p for p in operations.paused_regions(session)}
    rows: list[dict[str, Any]] = [
        {
            "region": name,
            "paused": name in paused,
            "pausedBy": paused.get(name, {}).get("pausedBy"),
            "pausedAt": paused.get(name, {}).get("pausedAt"),
        }
        for name in sorted(set(served) | set(paused))
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = (
            f"[yellow]paused[/] by {row['pausedBy'] or '?'} since {row['pausedAt'][:19]}"
            if row["paused"]
            else "running"
        )
        console.print(f"{row['region']:20} {state}")


def audit_command(
    since: Annotated[
        str | None, typer.Option(help="From: 30m, 12h, 7d, 2w, or a date.", show_default=False)
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Until (a date, exclusive).", show_default=False)
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="Only this API key name or user.", show_default=False)
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(help="Only this action (region.pause) or kind (region).", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The audit log, newest first: who paused, resumed, re-prioritised, cancelled,
    retried, deactivated or removed what, when, and from where (api, cli, dashboard)."""
    from modelcert.settings import get_settings
    from modelcert.store import audit, db

    start, end = audit_window(since, until)
    if actor is not None:  # the dashboard's and the API's filter type (PostgreSQL refuses NUL)
        from modelcert.validation import SearchText

        actor = validated(SearchText, actor, "--actor")
    if action is not None:
        kinds = {a.split(".")[0] for a in audit.ACTIONS}
        if action not in audit.ACTIONS and action not in kinds:
            raise UserError(
                f"--action {action[:60]!r}: not one of {', '.join(audit.ACTIONS)} "
                f"(or a kind: {', '.join(sorted(kinds))})",
                field="action",
            )
    factory = db.make_session_factory(open_engine(get_settings()))
    with db.transaction(factory) as session:
        rows = [
            e.as_json()
            for e in audit.entries(
                session, since=start, until=end, actor=actor, action=action, limit=limit
            )
        ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no audit entries")
        return
    from rich.table import Table

    table = Table("when (UTC)", "who", "via", "action", "target", "details")
    for row in rows:
        details = ", ".join(f"{k}={v}" for k, v in row["details"].items())
        table.add_row(
            row["at"][:19].replace("T", " "),
            row["actor"],
            row["interface"],
            row["action"],
            row["target"],
            details,
        )
    console.print(table)


def audit_window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """`--since` (a window or a date) and `--until` (a date) as datetimes; `UserError`
    naming the option otherwise."""
    from modelcert.reports.build import parse_since
    from modelcert.store.models import utcnow
    from modelcert.validation import Since

    now = utcnow()
    start: datetime | None = None
    end: datetime | None = None
    for option, value in (("--since", since), ("--until", until)):
        if value is None:
            continue
        validated(Since, value, option)
        try:
            parsed = parse_since(value, now)
        except (OverflowError, ValueError):
            raise UserError(f"{option} {value!r}: out of range", field=option[2:]) from None
        if option == "--since":
            start = parsed
        else:
            end = parsed
    if start is not None and end is not None and end <= start:
        raise UserError("--until must be after --since", field="until")
    return start, end
