"""Run history out of the service: every run, or every test of every run, in a date range
as CSV, JSON or JUnit XML (`GET /api/runs/export`), one run as JUnit XML
(`GET /api/runs/{runId}/junit`), and two runs of one deployment compared test by test
(`GET /api/runs/diff?a=&b=`). Any key (viewer role) may read."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response

from modelcert.api import queries
from modelcert.api.deps import CurrentKey, FactoryDep
from modelcert.api.errors import VIEWER_ERRORS, error_responses
from modelcert.reports import runs as history
from modelcert.store.db import transaction
from modelcert.validation import DeploymentRef, RegionName, RowId, Since

router = APIRouter(prefix="/api/runs", tags=["runs"])


def window(since: str | None, until: str | None) -> tuple[Any, Any]:
    """`since` and `until` (a window back from now, or a date) as datetimes."""
    from modelcert.errors import UserError
    from modelcert.reports.build import parse_since
    from modelcert.store.models import utcnow

    now = utcnow()
    start = parse_since(since, now) if since else None
    end = parse_since(until, now) if until else None
    if start is not None and end is not None and end <= start:
        raise UserError("until must be after since", field="until")
    return start, end


@router.get(
    "/export",
    responses={
        200: {
            "content": {"text/csv": {}, "application/json": {}, "application/xml": {}},
            "description": "CSV (a header line, then a row per run or test), a JSON "
            "document (`schema`, the filters, `truncated`, `rows`) or JUnit XML (a "
            "testsuite per run; a testcase per built-in test and per suite assertion). "
            "`X-Modelcert-Truncated: true` when more rows matched than `limit`.",
        },
        **error_responses(400, 404, 422, *VIEWER_ERRORS),
    },
)
def export(
    factory: FactoryDep,
    _viewer: CurrentKey,
    kind: Annotated[Literal["runs", "tests"], Query(description="A row per run or per test.")] = (
        "runs"
    ),
    fmt: Annotated[
        Literal["csv", "json", "junit"],
        Query(alias="format", description="junit: the runs (or the tests' runs) as JUnit XML."),
    ] = "csv",
    since: Annotated[Since | None, Query(description="Runs started from: 7d, or a date.")] = None,
    until: Annotated[Since | None, Query(description="Runs started before (exclusive).")] = None,
    model_id: Annotated[DeploymentRef | None, Query(alias="modelId")] = None,
    region: Annotated[RegionName | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=history.MAX_LIMIT)] = history.DEFAULT_LIMIT,
) -> Response:
    """Run history (or its test results) as CSV, JSON or JUnit XML, oldest first."""
    start, end = window(since, until)
    with transaction(factory) as session:
        deployment_id = None
        if model_id is not None:
            queries.check_ref(model_id, "modelId")
            deployment_id = queries.find_deployment(session, model_id).id
        filters = history.ExportFilter(start, end, deployment_id, region)
        found = history.export_rows(session, kind, filters, limit=limit, with_tests=fmt == "junit")
    body = history.render(found, filters, fmt)
    name = f"modelcert-{kind}.{history.EXTENSIONS[fmt]}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if found.truncated:
        headers["X-Modelcert-Truncated"] = "true"
    return Response(body, media_type=history.MEDIA_TYPES[fmt], headers=headers)


@router.get(
    "/{runId}/junit",
    responses={
        200: {
            "content": {"application/xml": {}},
            "description": "The run as JUnit XML: one testsuite, a testcase per built-in "
            "test and per assertion of each suite test.",
        },
        **error_responses(404, 422, *VIEWER_ERRORS),
    },
)
def run_junit(
    factory: FactoryDep,
    _viewer: CurrentKey,
    run_id: Annotated[RowId, Path(alias="runId")],
) -> Response:
    """One run as JUnit XML, for a CI dashboard."""
    with transaction(factory) as session:
        body = history.run_junit(session, run_id)
    headers = {"Content-Disposition": f'attachment; filename="modelcert-run-{run_id}.xml"'}
    return Response(body, media_type="application/xml", headers=headers)


@router.get("/diff", responses=error_responses(400, 404, 422, *VIEWER_ERRORS))
def diff(
    factory: FactoryDep,
    _viewer: CurrentKey,
    a: Annotated[RowId, Query(description="A run id (the earlier one, say).")],
    b: Annotated[RowId, Query(description="A run of the same deployment.")],
) -> JSONResponse:
    """Two runs of one deployment (in one region or two) test by test: outcome, latency,
    TTFT, retries, category, message; the fields that changed and B - A."""
    with transaction(factory) as session:
        return JSONResponse(history.diff_runs(session, a, b))
