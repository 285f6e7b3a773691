"""The audit log page: who did what, from which interface, when (newest first)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from modelcert.api.dashboard.web import LoginDep, render
from modelcert.api.deps import SessionDep
from modelcert.store import audit
from modelcert.validation import FormDay, SearchText, ShortText

router = APIRouter()
SHOWN = 200  # entries on the page; the API and `modelcert audit` page through the rest


@router.get("/audit", response_class=HTMLResponse)
def audit_log(
    request: Request,
    login: LoginDep,
    session: SessionDep,
    actor: Annotated[SearchText, Query()] = "",
    action: Annotated[ShortText, Query()] = "",
    # The form sends an empty date field as "": no bound, not an error.
    date_from: Annotated[FormDay, Query()] = None,
    date_to: Annotated[FormDay, Query()] = None,
) -> Response:
    """The operator actions recorded by the API, the CLI and the dashboard."""
    since = datetime.combine(date_from, time(), UTC) if date_from else None
    until = datetime.combine(date_to, time(), UTC) + timedelta(days=1) if date_to else None
    entries = audit.entries(
        session,
        since=since,
        until=until,
        actor=actor.strip() or None,
        action=action.strip() or None,
        limit=SHOWN,
    )
    filters = {
        "actor": actor,
        "action": action,
        "date_from": date_from.isoformat() if date_from else "",
        "date_to": date_to.isoformat() if date_to else "",
    }
    return render(
        request, login, "audit.html", page="audit", entries=entries, shown=SHOWN, filters=filters,
        active={k: v for k, v in filters.items() if v},
    )  # fmt: skip
