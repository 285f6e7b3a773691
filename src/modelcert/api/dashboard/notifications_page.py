"""The notifications page: the subscriptions (URLs masked, no secret) and the delivery
log (status, response code, attempts, when), newest first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from modelcert.api.dashboard.web import LoginDep, render
from modelcert.api.deps import SessionDep
from modelcert.store import notifications

router = APIRouter()
SHOWN = 200  # deliveries on the page; the API and `modelcert notify deliveries` page on


@router.get("/notifications", response_class=HTMLResponse)
def notifications_page(request: Request, login: LoginDep, session: SessionDep) -> Response:
    """Who is told of what, and how each delivery went."""
    subscriptions = [s.as_json() for s in notifications.subscriptions(session)]
    names = {s["id"]: s["name"] for s in subscriptions}
    deliveries = [d.as_json() for d in notifications.deliveries(session, limit=SHOWN)]
    return render(
        request, login, "notifications.html", page="notifications",
        subscriptions=subscriptions, deliveries=deliveries, names=names, shown=SHOWN,
    )  # fmt: skip
