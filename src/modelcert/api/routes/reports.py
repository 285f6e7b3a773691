"""Certification reports over HTTP: the documents `modelcert report` writes (JSON,
Markdown, JUnit XML), for dashboards and CI. Any key (viewer role) may read them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status

from modelcert.api import queries
from modelcert.api.deps import CurrentKey, SessionDep
from modelcert.api.errors import VIEWER_ERRORS, error_responses
from modelcert.errors import NotFoundError, UserError
from modelcert.reports import build as reports
from modelcert.reports import formats
from modelcert.store.models import utcnow
from modelcert.validation import DeploymentRef, ProviderSlug, RegionName, Since

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
    **error_responses(400, 404, 422, *VIEWER_ERRORS),
}


@router.get("/current", response_class=Response, responses=_RESPONSES)
def current(
    session: SessionDep,
    _viewer: CurrentKey,
    fmt: Annotated[Literal["json", "markdown", "junit"], Query(alias="format")] = "json",
    provider: Annotated[ProviderSlug | None, Query()] = None,
    region: Annotated[RegionName | None, Query()] = None,
    model_id: Annotated[
        DeploymentRef | None, Query(alias="modelId", description="Id or slug/id.")
    ] = None,
    since: Annotated[
        Since, Query(description="30m, 12h, 7d, 2w, or an ISO 8601 date or time (UTC).")
    ] = reports.DEFAULT_SINCE,
) -> Response:
    """The current certification of every deployment × region (and the pairs never
    certified), with the status changes since `since`; JSON, Markdown or JUnit XML."""
    if model_id is not None:
        queries.check_ref(model_id, "modelId")
    filters = reports.ReportFilters(provider=provider, region=region, model=model_id, since=since)
    try:
        report = reports.build_report(session, filters, utcnow())
    except UserError as exc:
        if exc.field == "deployment":  # only the modelId filter names a deployment
            raise type(exc)(exc.message, field="modelId") from None
        if exc.field == "region":  # a region no provider serves: not found, like a model
            raise NotFoundError(exc.message, field="region") from None
        raise
    return Response(formats.render(report, fmt), media_type=formats.MEDIA_TYPES[fmt])
