"""`modelcert notify add|list|remove|deliveries`: notification subscriptions and their
delivery log (the API's /api/notifications, on the database directly)."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from modelcert.cli.common import cli_actor, console, session_factory
from modelcert.errors import UserError

notify_app = typer.Typer(
    help="Subscribe webhooks and Slack to events; see their deliveries.", no_args_is_help=True
)

# The store's field names (the API's) as this command's options, for one-line errors.
OPTIONS = {
    "name": "--name",
    "events": "--event",
    "targetKind": "--kind",
    "targetUrl": "--url",
    "secret": "--secret-env",
    "expiringWithinH": "--expiring-within-h",
    "degradedFactor": "--degraded-factor",
    "deployment": "--deployment",
}


def _as_option(exc: UserError) -> UserError:
    field = exc.field or ""
    option = OPTIONS.get(field, f"--{field}")
    message = exc.message.removeprefix(f"{field}: ")
    return UserError(f"{option}: {message}", field=option.lstrip("-"))


def _secret(env_name: str | None) -> str | None:
    """The secret from the environment variable named (never on the command line: it
    would stay in the shell's history and in `ps`)."""
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise UserError(
            f"--secret-env: environment variable {env_name!r} is not set", field="secret-env"
        )
    return value


@notify_app.command("add")
def notify_add(
    name: Annotated[str, typer.Option(help="What this subscription is for.")],
    url: Annotated[str, typer.Option(help="The webhook's URL (stored; never shown again).")],
    event: Annotated[
        list[str],
        typer.Option(
            help=(
                "verdict.changed, certification.expiring, job.finished or latency.degraded "
                "(repeat for several)."
            )
        ),
    ],
    kind: Annotated[str, typer.Option(help="webhook (signed JSON) or slack.")] = "webhook",
    secret_env: Annotated[
        str | None,
        typer.Option(
            help="Environment variable holding the webhook's HMAC secret.", show_default=False
        ),
    ] = None,
    provider: Annotated[
        str | None, typer.Option(help="Only this provider's.", show_default=False)
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option(help="Only this deployment (provider/model-id).", show_default=False),
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Only this region.", show_default=False)
    ] = None,
    expiring_within_h: Annotated[
        float, typer.Option(help="certification.expiring: hours before the expiry.")
    ] = 24.0,
    degraded_factor: Annotated[
        float, typer.Option(help="latency.degraded: p95 over 24 h above this × the 7-day p95.")
    ] = 2.0,
) -> None:
    """Subscribe a webhook or a Slack incoming webhook to events."""
    from modelcert.store import db, notifications

    new = notifications.NewSubscription(
        name=name,
        events=event,
        target_kind=kind,
        target_url=url,
        secret=_secret(secret_env),
        provider=provider,
        deployment=deployment,
        region=region,
        expiring_within_h=expiring_within_h,
        degraded_factor=degraded_factor,
    )
    try:
        notifications.check_subscription(new)
    except UserError as exc:
        raise _as_option(exc) from None
    with db.transaction(session_factory()) as session:
        row = notifications.add_subscription(session, new, created_by=cli_actor())
        shown = row.as_json()
    console.print(
        f"subscription {shown['id']} added: {', '.join(shown['events'])} → {shown['targetUrl']}"
    )


@notify_app.command("list")
def notify_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The subscriptions (URLs masked, secrets never shown)."""
    from modelcert.store import db, notifications

    with db.transaction(session_factory()) as session:
        rows = [s.as_json() for s in notifications.subscriptions(session)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no subscriptions")
        return
    for row in rows:
        filters = ", ".join(f"{k}={row[k]}" for k in ("provider", "deployment", "region") if row[k])
        console.print(
            f"{row['id']:>4} {row['name']:20} {row['targetKind']:8} {row['targetUrl']:30} "
            f"{','.join(row['events'])}{'  ' + filters if filters else ''}"
        )


@notify_app.command("remove")
def notify_remove(
    subscription_id: Annotated[
        int, typer.Argument(metavar="ID", min=1, help="The subscription's id.")
    ],
) -> None:
    """Remove a subscription and its delivery log."""
    from modelcert.store import db, notifications

    with db.transaction(session_factory()) as session:
        notifications.remove_subscription(session, subscription_id)
    console.print(f"subscription {subscription_id} removed")


@notify_app.command("deliveries")
def notify_deliveries(
    subscription: Annotated[
        int | None, typer.Option(min=1, help="Only this subscription's.", show_default=False)
    ] = None,
    status: Annotated[
        str | None, typer.Option(help="queued, delivered or failed.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The delivery log, newest first: status, attempts, last response code and error."""
    from modelcert.store import db, notifications

    if status is not None and status not in ("queued", "delivered", "failed"):
        raise UserError(
            f"--status {status[:20]!r}: not one of queued, delivered, failed", field="status"
        )
    with db.transaction(session_factory()) as session:
        rows: list[dict[str, Any]] = [
            d.as_json()
            for d in notifications.deliveries(
                session, subscription_id=subscription, status=status, limit=limit
            )
        ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no deliveries")
        return
    from rich.table import Table

    table = Table("id", "sub", "event", "status", "attempts", "code", "when (UTC)", "error")
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["subscriptionId"]),
            row["idempotencyKey"],
            row["status"],
            str(row["attempts"]),
            str(row["lastStatusCode"] or ""),
            row["updatedAt"][:19].replace("T", " "),
            row["lastError"] or "",
        )
    console.print(table)
