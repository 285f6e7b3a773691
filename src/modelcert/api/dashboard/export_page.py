"""Run history out of the dashboard: every run, or every test of every run, in a date
range, as CSV or JSON — the same export as `modelcert runs export` and
`GET /api/runs/export`, downloaded with the dashboard's session instead of an API key."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from modelcert.api import queries
from modelcert.api.dashboard import data
from modelcert.api.dashboard.web import LoginDep, error_page, render
from modelcert.api.deps import SessionDep
from modelcert.errors import UserError
from modelcert.reports import runs as history
from modelcert.validation import FormDay, RefText, ShortText

router = APIRouter()


@router.get("/export", response_class=HTMLResponse)
def export(
    request: Request,
    login: LoginDep,
    session: SessionDep,
    kind: Annotated[Literal["runs", "tests"], Query()] = "runs",
    fmt: Annotated[Literal["csv", "json", "junit"], Query(alias="format")] = "csv",
    # The form sends empty fields as "": no bound, any deployment, any region.
    date_from: Annotated[FormDay, Query()] = None,
    date_to: Annotated[FormDay, Query()] = None,
    deployment: Annotated[RefText, Query()] = "",
    region: Annotated[ShortText, Query()] = "",
    download: Annotated[bool, Query()] = False,
) -> Response:
    """The export form; with `download`, the file."""
    if not download:
        return render(
            request, login, "export.html", page="export",
            choices=data.filter_choices(session), limit=history.DEFAULT_LIMIT,
        )  # fmt: skip
    since = datetime.combine(date_from, time(), UTC) if date_from else None
    until = datetime.combine(date_to, time(), UTC) + timedelta(days=1) if date_to else None
    try:
        if since is not None and until is not None and until <= since:
            raise UserError("the end date must not be before the start date", field="date_to")
        deployment_id = (
            queries.find_deployment(session, deployment.strip(), "deployment").id
            if deployment.strip()
            else None
        )
        filters = history.ExportFilter(since, until, deployment_id, region.strip() or None)
        found = history.export_rows(session, kind, filters, with_tests=fmt == "junit")
    except UserError as error:
        code = 404 if error.message.startswith("unknown") else 400
        return error_page(request, login, code, error.message, error.field)
    extension = history.EXTENSIONS[fmt]
    headers = {"Content-Disposition": f'attachment; filename="modelcert-{kind}.{extension}"'}
    if found.truncated:
        headers["X-Modelcert-Truncated"] = "true"
    media = history.MEDIA_TYPES[fmt]
    return Response(history.render(found, filters, fmt), media_type=media, headers=headers)
