"""The read side of the certification API: run history, current certifications, one run
in detail, statistics and regions. Any key (viewer role) may read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from modelcert.api import queries
from modelcert.api.deps import CurrentKey, SessionDep, SettingsDep
from modelcert.api.errors import VIEWER_ERRORS, error_responses
from modelcert.api.schemas import (
    CertificationDetailOut,
    CertificationOut,
    Page,
    ProviderRegionsOut,
    RegionsOut,
    RunDetailOut,
    RunOut,
    StatsOut,
)
from modelcert.domain import CertificationStatus
from modelcert.jobs.queue_stats import queue_stats
from modelcert.store.models import utcnow
from modelcert.validation import DeploymentRef, ProviderSlug, RegionName, RowId

# Included by `routes.certification`, under its prefix.
router = APIRouter()

# 400: an ambiguous modelId; 404: an unknown one (or provider, run, pair).
_ERRORS = error_responses(400, 404, 422, *VIEWER_ERRORS)


StatusFilter = Annotated[CertificationStatus | None, Query(alias="status")]
RegionFilter = Annotated[RegionName | None, Query()]
ModelFilter = Annotated[DeploymentRef | None, Query(alias="modelId", description="Id or slug/id.")]


def get_paging(
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=200)] = 50,
) -> queries.Paging:
    """`page` (from 1) and `pageSize` (1 to 200) of a listing."""
    return queries.Paging(page, page_size)


PagingDep = Annotated[queries.Paging, Depends(get_paging)]


@router.get("/history", response_model=Page[RunOut], responses=_ERRORS)
def history(
    session: SessionDep,
    _viewer: CurrentKey,
    paging: PagingDep,
    status_filter: StatusFilter = None,
    region: RegionFilter = None,
    model_id: ModelFilter = None,
) -> Page[RunOut]:
    """Every certification run, newest first, a page at a time."""
    runs, total = queries.run_page(
        session,
        paging,
        status=status_filter.value if status_filter else None,
        region=region,
        model_id=model_id,
    )
    items = [RunOut.of(run, deployment) for run, deployment in runs]
    return Page[RunOut](items=items, page=paging.page, page_size=paging.page_size, total=total)


@router.get("/certifications", response_model=Page[CertificationOut], responses=_ERRORS)
def certifications(
    session: SessionDep,
    _viewer: CurrentKey,
    paging: PagingDep,
    status_filter: StatusFilter = None,
    region: RegionFilter = None,
    model_id: ModelFilter = None,
    provider: Annotated[ProviderSlug | None, Query()] = None,
    valid: Annotated[bool | None, Query(description="Unexpired CERTIFIED/QUALITY_WARNING.")] = None,
) -> Page[CertificationOut]:
    """The current certification of each deployment × region, a page at a time."""
    now = utcnow()
    rows, total = queries.certification_page(
        session,
        paging,
        now=now,
        status=status_filter.value if status_filter else None,
        region=region,
        model_id=model_id,
        provider=provider,
        valid=valid,
    )
    items = [CertificationOut.of(c, now) for c in rows]
    return Page[CertificationOut](
        items=items, page=paging.page, page_size=paging.page_size, total=total
    )


@router.get(
    "/certifications/{deploymentId}/{region}",
    response_model=CertificationDetailOut,
    responses=_ERRORS,
)
def certification(
    deployment_id: Annotated[DeploymentRef, Path(alias="deploymentId")],
    region: Annotated[RegionName, Path()],
    session: SessionDep,
    _viewer: CurrentKey,
    runs: Annotated[int, Query(ge=1, le=100, description="How many latest runs.")] = 20,
) -> CertificationDetailOut:
    """One deployment's current certification in one region, and its latest runs."""
    current, history = queries.certification_detail(session, deployment_id, region, runs=runs)
    return CertificationDetailOut(
        certification=CertificationOut.of(current, utcnow()),
        runs=[RunOut.of(run, deployment) for run, deployment in history],
    )


@router.get(
    "/runs/{runId}",
    response_model=RunDetailOut,
    responses=error_responses(404, 422, *VIEWER_ERRORS),
)
def run(
    run_id: Annotated[RowId, Path(alias="runId")], session: SessionDep, _viewer: CurrentKey
) -> RunDetailOut:
    """One run with every test: outcome, latency, TTFT, retries, the classified error and
    the provider's original message."""
    found, deployment = queries.run_detail(session, run_id)
    return RunDetailOut.of_run(found, deployment)


@router.get("/stats", response_model=StatsOut, responses=error_responses(*VIEWER_ERRORS))
def stats(session: SessionDep, _viewer: CurrentKey, settings: SettingsDep) -> StatsOut:
    """Queue counts (overall and by region), certifications by status, the 10 latest runs."""
    by_status, valid = queries.certification_counts(session, utcnow())
    return StatsOut.model_validate(
        {
            **queue_stats(session, settings),
            "byStatus": by_status,
            "validCertifications": valid,
            "recent": [RunOut.of(r, d) for r, d in queries.recent_runs(session)],
        }
    )


@router.get("/regions", response_model=RegionsOut, responses=error_responses(*VIEWER_ERRORS))
def regions(session: SessionDep, _viewer: CurrentKey) -> RegionsOut:
    """The regions each active provider serves, and all of them together."""
    providers = queries.active_providers(session)
    return RegionsOut(
        providers=[
            ProviderRegionsOut(provider=p.slug, name=p.name, kind=p.kind, regions=list(p.regions))
            for p in providers
        ],
        regions=sorted({region for p in providers for region in p.regions}),
    )
