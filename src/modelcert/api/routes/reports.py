"""Certification reports over HTTP: the documents `modelcert report` writes (JSON,
Markdown, JUnit XML), for dashboards and CI. Any key (viewer role) may read them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status

from modelcert.api.deps import CurrentKey, SessionDep
from modelcert.api.schemas import ErrorResponse
from modelcert.errors import UserError
from modelcert.reports import build as reports
from modelcert.reports import formats
from modelcert.store.models import utcnow

router = APIRouter(prefix="/api/reports", tags=["reports"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_200_OK: {
        "description": "The report in the requested format.",
        "content": {
            "application/json": {},
            "text/markdown": {"schema": {"type": "string"}},
            "application/xml": {"schema": {"type": "string"}},
        },
    },
    status.HTTP_400_BAD_REQUEST: {"model": ErrorResponse},
    status.HTTP_404_NOT_FOUND: {"model": ErrorResponse},
}


@router.get("/current", response_class=Response, responses=_RESPONSES)
def current(
    session: SessionDep,
    _viewer: CurrentKey,
    fmt: Annotated[Literal["json", "markdown", "junit"], Query(alias="format")] = "json",
    provider: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    region: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    model_id: Annotated[
        str | None,
        Query(alias="modelId", min_length=1, max_length=300, description="Id or slug/id."),
    ] = None,
    since: Annotated[
        str, Query(min_length=1, max_length=40, description="30m, 12h, 7d, 2w or ISO 8601.")
    ] = reports.DEFAULT_SINCE,
) -> Response:
    """The current certification of every deployment × region (and the pairs never
    certified), with the status changes since `since`; JSON, Markdown or JUnit XML."""
    filters = reports.ReportFilters(provider=provider, region=region, model=model_id, since=since)
    try:
        report = reports.build_report(session, filters, utcnow())
    except UserError as exc:
        if exc.field == "deployment":  # only the modelId filter names a deployment
            raise type(exc)(exc.message, field="modelId") from None
        raise
    return Response(formats.render(report, fmt), media_type=formats.MEDIA_TYPES[fmt])
