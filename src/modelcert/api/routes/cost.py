"""What certification cost and what deployments' calls are priced at: `GET /api/cost` (per
UTC day or month by provider and region, with totals), `GET /api/cost/jobs/{jobId}` (one
job's runs and total), `GET /api/prices` (each deployment's price and its source), and
`PUT` / `DELETE /api/catalog/deployments/{deploymentId}/price` (its own price: operator
role, recorded in the audit log). Costs are US dollars; a cost not known is null, never 0.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import Field

from modelcert.api.deps import CurrentKey, FactoryDep, OperatorKey, SessionDep
from modelcert.api.errors import BODY_ERRORS, ROLE_ERRORS, VIEWER_ERRORS, error_responses
from modelcert.api.schemas import ApiModel, ApiRequest
from modelcert.cost.prices import SEED_AS_OF
from modelcert.errors import NotFoundError, UserError
from modelcert.store import cost_report
from modelcert.store.db import transaction
from modelcert.store.deployment_prices import (
    MAX_PER_MTOK,
    MAX_PER_REQUEST,
    clear_price,
    deployment_prices,
    set_price,
)
from modelcert.store.models import Job, utcnow
from modelcert.validation import JobId, ProviderSlug, RegionName, RowId, Since

router = APIRouter(prefix="/api", tags=["cost"])

JobIdPath = Annotated[JobId, Path(alias="jobId")]
DeploymentIdPath = Annotated[RowId, Path(alias="deploymentId")]
DEFAULT_WINDOW = {"day": timedelta(days=30), "month": timedelta(days=366)}


class CostLineOut(ApiModel):
    period: str | None = Field(description="UTC day (2025-10-03) or month (2025-10); null: all.")
    provider: str | None = Field(description="Provider slug; null: all providers.")
    region: str | None = Field(description="Region; null: all regions.")
    runs: int
    priced_runs: int = Field(description="Runs whose cost is known.")
    unpriced_runs: int = Field(description="Runs that made calls with no price known.")
    running: int = Field(description="Runs still running (their cost is set when they end).")
    cost_usd: float | None = Field(description="Cost of the priced runs; null when none is.")


class CostReportOut(ApiModel):
    by: Literal["day", "month"]
    since: datetime | None
    until: datetime | None
    lines: list[CostLineOut] = Field(description="Per period × provider × region.")
    periods: list[CostLineOut] = Field(description="Each period's total.")
    total: CostLineOut


class RunCostOut(ApiModel):
    run_id: int
    deployment: str
    region: str
    status: str
    started_at: datetime | None
    cost_usd: float | None


class JobCostOut(ApiModel):
    job_id: str
    total: CostLineOut
    runs: list[RunCostOut] = Field(description="Each run of the job, in the order started.")


class PriceOut(ApiModel):
    deployment_id: int
    deployment: str = Field(description="provider/model-id")
    provider_kind: str
    input_per_mtok: float | None = Field(description="USD per 1M input tokens.")
    output_per_mtok: float | None = Field(description="USD per 1M output tokens.")
    per_request: float | None = Field(description="USD per answered call.")
    source: str = Field(description="override, seed:<as-of date>, or none (cost unknown).")


class PricesOut(ApiModel):
    seed_as_of: str = Field(description="The date of the seed table's list prices.")
    prices: list[PriceOut]


class PriceRequest(ApiRequest):
    input_per_mtok: float = Field(ge=0, le=MAX_PER_MTOK, allow_inf_nan=False)
    output_per_mtok: float = Field(ge=0, le=MAX_PER_MTOK, allow_inf_nan=False)
    per_request: float | None = Field(None, ge=0, le=MAX_PER_REQUEST, allow_inf_nan=False)


class PriceChangeOut(PriceOut):
    changed: bool = Field(description="False when a clear found no price of its own.")


def _window(
    by: str, since: str | None, until: str | None
) -> tuple[datetime | None, datetime | None]:
    from modelcert.reports.build import parse_since

    now = utcnow()
    try:
        start = parse_since(since, now) if since else None
        end = parse_since(until, now) if until else None
    except (OverflowError, ValueError):
        raise UserError("since/until: out of range", field="since") from None
    if start is None:
        start = (end or now) - DEFAULT_WINDOW[by]
    if end is not None and end <= start:
        raise UserError("until must be after since", field="until")
    return start, end


@router.get(
    "/cost", response_model=CostReportOut, responses=error_responses(400, 422, *VIEWER_ERRORS)
)
def cost(
    session: SessionDep,
    _viewer: CurrentKey,
    by: Annotated[Literal["day", "month"], Query(description="Group by UTC day or month.")] = "day",
    since: Annotated[
        Since | None, Query(description="7d, 2w, or a date (default: 30 days, or a year).")
    ] = None,
    until: Annotated[Since | None, Query(description="A date (exclusive), or a window.")] = None,
    provider: Annotated[ProviderSlug | None, Query(description="Only this provider.")] = None,
    region: Annotated[RegionName | None, Query()] = None,
) -> CostReportOut:
    """The cost of the runs started in the window, per period × provider × region, each
    period's total and the whole total; unpriced and running runs counted apart."""
    start, end = _window(by, since, until)
    report = cost_report.cost_report(
        session, by=by, since=start, until=end, provider=provider, region=region
    )
    return CostReportOut.model_validate(report.as_json())


@router.get(
    "/cost/jobs/{jobId}",
    response_model=JobCostOut,
    responses=error_responses(404, 422, *VIEWER_ERRORS),
)
def job_cost(job_id: JobIdPath, session: SessionDep, _viewer: CurrentKey) -> JobCostOut:
    """What one job's runs cost: its total and each run's cost."""
    if session.get(Job, job_id) is None:
        raise NotFoundError(f"unknown job {job_id!r}", field="jobId")
    total = cost_report.job_cost(session, job_id)
    runs = cost_report.job_run_costs(session, job_id)
    return JobCostOut.model_validate(
        {"jobId": job_id, "total": total.as_json(), "runs": [run.as_json() for run in runs]}
    )


@router.get(
    "/prices", response_model=PricesOut, responses=error_responses(404, 422, *VIEWER_ERRORS)
)
def prices(
    session: SessionDep,
    _viewer: CurrentKey,
    provider: Annotated[ProviderSlug | None, Query(description="Only this provider.")] = None,
) -> PricesOut:
    """Each deployment's price and where it comes from: its own (override), the seed
    table's list price (seed:<date>), or none (its cost is unknown)."""
    rows = deployment_prices(session, provider)
    return PricesOut(
        seed_as_of=SEED_AS_OF, prices=[PriceOut.model_validate(row.as_json()) for row in rows]
    )


@router.put(
    "/catalog/deployments/{deploymentId}/price",
    response_model=PriceChangeOut,
    responses=error_responses(404, *BODY_ERRORS, *ROLE_ERRORS),
)
def put_price(
    deployment_id: DeploymentIdPath, body: PriceRequest, key: OperatorKey, factory: FactoryDep
) -> PriceChangeOut:
    """Give a deployment its own price (it overrides the seed table's)."""
    with transaction(factory) as session:
        row = set_price(
            session,
            deployment_id,
            input_per_mtok=body.input_per_mtok,
            output_per_mtok=body.output_per_mtok,
            per_request=body.per_request,
            actor=key.name,
            interface="api",
        )
    return PriceChangeOut.model_validate({**row.as_json(), "changed": True})


@router.delete(
    "/catalog/deployments/{deploymentId}/price",
    response_model=PriceChangeOut,
    responses=error_responses(404, 422, *ROLE_ERRORS),
)
def delete_price(
    deployment_id: DeploymentIdPath, key: OperatorKey, factory: FactoryDep
) -> PriceChangeOut:
    """Remove a deployment's own price: the seed table's applies again, if it lists it."""
    with transaction(factory) as session:
        row, changed = clear_price(session, deployment_id, actor=key.name, interface="api")
    return PriceChangeOut.model_validate({**row.as_json(), "changed": changed})
