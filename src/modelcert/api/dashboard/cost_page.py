"""The cost page: what certification cost per UTC day over the last 30 days and per month
over the last 12, by provider and region, and each deployment's price with its source."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from modelcert.api.dashboard.web import LoginDep, render
from modelcert.api.deps import SessionDep
from modelcert.cost.prices import SEED_AS_OF, SEED_SOURCES, format_usd
from modelcert.store.cost_report import CostLine, cost_report
from modelcert.store.deployment_prices import deployment_prices
from modelcert.store.models import utcnow

router = APIRouter()
DAYS = 30
MONTHS = 12


def _shown(line: CostLine) -> dict[str, Any]:
    return {**line.as_json(), "cost": format_usd(line.cost_usd)}


@router.get("/cost", response_class=HTMLResponse)
def cost_page(request: Request, login: LoginDep, session: SessionDep) -> Response:
    """Cost per day and month by provider and region; prices and where they come from."""
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    days = cost_report(session, by="day", since=today - timedelta(days=DAYS - 1))
    month, year = today.month - (MONTHS - 1), today.year
    while month < 1:
        month, year = month + 12, year - 1
    months = cost_report(session, by="month", since=today.replace(year=year, month=month, day=1))
    prices = [
        {**row.as_json(), "shown": row.price is not None} for row in deployment_prices(session)
    ]
    return render(
        request, login, "cost.html", page="cost",
        days=[_shown(line) for line in days.lines], day_total=_shown(days.total),
        months=[_shown(line) for line in months.periods], month_total=_shown(months.total),
        prices=prices, seed_as_of=SEED_AS_OF, seed_sources=SEED_SOURCES, span=DAYS,
    )  # fmt: skip
