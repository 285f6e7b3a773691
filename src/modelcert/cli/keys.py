"""`modelcert apikey`: keys for the HTTP API and the dashboard."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from modelcert.cli.common import console, session_factory

apikey_app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="Unique name, e.g. the person or robot using it.")],
    role: Annotated[str, typer.Option(help="viewer | operator | admin")],
) -> None:
    """Create an API key and print it, once: only a hash of it is stored."""
    from modelcert.store import api_keys, db

    with db.transaction(session_factory()) as session:
        key, plain = api_keys.create_api_key(session, name, role)
        label = f"{key.name} ({key.role})"
    # Printed after the commit: a key shown must exist. Only the key goes to stdout, so
    # that `KEY=$(modelcert apikey create …)` captures it alone.
    print(
        f"API key {label} created. Store it now (a secret manager, say): it is shown only "
        "this once and cannot be recovered.",
        file=sys.stderr,
    )
    print(plain)


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value is not None else "-"


@apikey_app.command("list")
def apikey_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List API keys: name, prefix, role, dates. Never the key or its hash."""
    from modelcert.store import api_keys, db

    with db.transaction(session_factory()) as session:
        keys = api_keys.list_api_keys(session)
    if as_json:
        rows = [
            {
                "name": k.name,
                "prefix": f"{api_keys.KEY_TAG}{k.prefix}",
                "role": k.role,
                "created_at": k.created_at.isoformat(),
                "last_used_at": k.last_used_at and k.last_used_at.isoformat(),
                "revoked_at": k.revoked_at and k.revoked_at.isoformat(),
            }
            for k in keys
        ]
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "prefix", "role", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.name,
            f"{api_keys.KEY_TAG}{k.prefix}…",
            k.role,
            _when(k.created_at),
            _when(k.last_used_at),
            _when(k.revoked_at),
        )
    console.print(table)


@apikey_app.command("revoke")
def apikey_revoke(name: Annotated[str, typer.Argument(help="Name of the key.")]) -> None:
    """Revoke an API key for good."""
    from modelcert.store import api_keys, db

    with db.transaction(session_factory()) as session:
        key = api_keys.revoke_api_key(session, name)
        console.print(f"API key {key.name} revoked ({_when(key.revoked_at)})")
