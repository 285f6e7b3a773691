"""Trends of a deployment in a region (`GET /api/trends`) and the matrix's sparklines
(`GET /api/trends/matrix`): latency and TTFT p50/p95, pass rate and verdicts per time
bucket over 24h, 7d, 30d or 90d (reports/trends.py). Any key (viewer role) may read.

The dashboard's charts read the same functions through `dashboard_router`
(`/dashboard/trends.json`, `/dashboard/trends/matrix.json`), behind its login cookie
instead of a bearer key: the browser holds no API key."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from modelcert.api import queries
from modelcert.api.dashboard.web import PREFIX, LoginDep
from modelcert.api.deps import CurrentKey, SessionDep
from modelcert.api.errors import VIEWER_ERRORS, error_responses
from modelcert.reports import trends
from modelcert.store.models import utcnow
from modelcert.validation import DeploymentRef, RegionName

router = APIRouter(prefix="/api/trends", tags=["trends"])
dashboard_router = APIRouter(prefix=PREFIX, include_in_schema=False)

RangeName = Literal["24h", "7d", "30d", "90d"]
RANGE_HELP = "24h (hourly buckets), 7d (6 h), 30d (1 day) or 90d (3 days): at most 30 points."


def _one(session: Session, deployment: str, region: str, range_name: str) -> dict[str, Any]:
    found = queries.find_deployment(session, deployment, field="deployment")
    return trends.series(session, found.id, region, range_name, now=utcnow())


def _no_store(document: dict[str, Any]) -> JSONResponse:
    return JSONResponse(document, headers={"Cache-Control": "no-store"})


@router.get("", responses=error_responses(400, 404, 422, *VIEWER_ERRORS))
def trend(
    session: SessionDep,
    _viewer: CurrentKey,
    deployment: Annotated[
        DeploymentRef, Query(description="A deployment id or provider/model-id.")
    ],
    region: Annotated[RegionName, Query()],
    range_name: Annotated[RangeName, Query(alias="range", description=RANGE_HELP)] = "7d",
) -> JSONResponse:
    """One deployment in one region: `summary` over the range and one entry per bucket
    (`start`, runs, latencyP50Ms, latencyP95Ms, ttftP50Ms, ttftP95Ms, passRate in %,
    verdicts by status, lastStatus); empty buckets have null numbers."""
    return _no_store(_one(session, deployment, region, range_name))


@router.get("/matrix", responses=error_responses(400, 422, *VIEWER_ERRORS))
def matrix_trends(
    session: SessionDep,
    _viewer: CurrentKey,
    range_name: Annotated[RangeName, Query(alias="range", description=RANGE_HELP)] = "7d",
) -> JSONResponse:
    """Every deployment × region that ran in the range (key `<deploymentId>@<region>`):
    pass rate per bucket, runs and last verdict, from the runs' summaries."""
    return _no_store(trends.cell_series(session, range_name, now=utcnow()))


@dashboard_router.get("/trends.json")
def dashboard_trend(
    session: SessionDep,
    _login: LoginDep,
    deployment: Annotated[DeploymentRef, Query()],
    region: Annotated[RegionName, Query()],
    range_name: Annotated[RangeName, Query(alias="range")] = "7d",
) -> JSONResponse:
    return _no_store(_one(session, deployment, region, range_name))


@dashboard_router.get("/trends/matrix.json")
def dashboard_matrix_trends(
    session: SessionDep,
    _login: LoginDep,
    range_name: Annotated[RangeName, Query(alias="range")] = "7d",
) -> JSONResponse:
    return _no_store(trends.cell_series(session, range_name, now=utcnow()))
