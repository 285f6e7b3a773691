"""Operator controls over HTTP, and the audit log that records them: pause / resume a
region, change a job's priority, cancel a job, retry its failures, deactivate /
reactivate / remove a deployment or a provider (`modelcert.api.operations`, which the
CLI calls too). Changes need the operator role; reading (regions, the audit log) any
key. Every change is in `GET /api/audit`, with the API key's name as who."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from fastapi.responses import JSONResponse
from pydantic import Field

from modelcert.api import operations
from modelcert.api.deps import CurrentKey, EnqueuerDep, FactoryDep, OperatorKey, SettingsDep
from modelcert.api.errors import BODY_ERRORS, ROLE_ERRORS, VIEWER_ERRORS, error_responses
from modelcert.api.schemas import ApiModel, ApiRequest, ErrorResponse, QueuedOut, RefusedOut
from modelcert.domain import JobKind, Priority
from modelcert.errors import NotFoundError, UserError
from modelcert.store import audit
from modelcert.store.auth_models import ApiKey
from modelcert.store.db import transaction
from modelcert.validation import JobId, ProviderSlug, RegionName, RowId, Since

router = APIRouter(prefix="/api", tags=["operator"])

JobIdPath = Annotated[JobId, Path(alias="jobId")]
DeploymentIdPath = Annotated[RowId, Path(alias="deploymentId")]

_CHANGE_ERRORS = error_responses(404, 409, 422, *ROLE_ERRORS)


def _actor(key: ApiKey) -> operations.Actor:
    return operations.Actor(key.name, "api")


class _Conflict(Exception):
    def __init__(self, message: str, field: str | None) -> None:
        self.response = JSONResponse(
            status_code=status.HTTP_409_CONFLICT,
            content=ErrorResponse(detail=message, field=field).model_dump(mode="json"),
        )


@contextmanager
def _conflicts(field: str) -> Iterator[None]:
    """A `UserError` of the state (a job already finished, a deployment with work in
    flight) is a 409 naming `field`; an unknown one stays a 404."""
    try:
        yield
    except NotFoundError:
        raise
    except UserError as exc:
        raise _Conflict(exc.message, field) from None


# --- regions --------------------------------------------------------------------------


class RegionOut(ApiModel):
    region: str
    paused: bool
    paused_by: str | None = None
    paused_at: datetime | None = None


class RegionChangeOut(ApiModel):
    region: str
    paused: bool
    changed: bool = Field(description="False when it was in that state already.")


@router.get("/regions", response_model=list[RegionOut], responses=error_responses(*VIEWER_ERRORS))
def regions(factory: FactoryDep, _viewer: CurrentKey) -> list[RegionOut]:
    """Every region an active provider serves (and any paused one), and whether its queue
    is paused, by whom, since when."""
    with transaction(factory) as session:
        served = operations.served_regions(session)
        paused = {p["region"]: p for p in operations.paused_regions(session)}
    return [
        RegionOut(
            region=name,
            paused=name in paused,
            paused_by=paused.get(name, {}).get("pausedBy"),
            paused_at=paused.get(name, {}).get("pausedAt"),
        )
        for name in sorted(served | set(paused))
    ]


@router.post("/regions/{region}/pause", response_model=RegionChangeOut, responses=_CHANGE_ERRORS)
def pause_region(
    region: RegionName,
    key: OperatorKey,
    enqueuer: EnqueuerDep,
    factory: FactoryDep,
    settings: SettingsDep,
) -> RegionChangeOut:
    """Stop starting certifications in a region on every worker: queued ones wait,
    running ones finish. 404 for a region no active provider serves."""
    changed = operations.pause_region(factory, enqueuer.client, settings, _actor(key), region)
    return RegionChangeOut(region=region, paused=True, changed=changed)


@router.post("/regions/{region}/resume", response_model=RegionChangeOut, responses=_CHANGE_ERRORS)
def resume_region(
    region: RegionName,
    key: OperatorKey,
    enqueuer: EnqueuerDep,
    factory: FactoryDep,
    settings: SettingsDep,
) -> RegionChangeOut:
    """Let a paused region's queue start certifications again."""
    changed = operations.resume_region(factory, enqueuer.client, settings, _actor(key), region)
    return RegionChangeOut(region=region, paused=False, changed=changed)


# --- jobs -----------------------------------------------------------------------------


class PriorityRequest(ApiRequest):
    priority: Priority


class PriorityOut(ApiModel):
    job_id: str
    priority: Priority
    changed: int = Field(description="Queued certifications given the new priority.")


class CancelOut(ApiModel):
    job_id: str
    cancelled: int
    status: str


class RetryRequest(ApiRequest):
    priority: Priority = Priority.NORMAL


class RetryOut(ApiModel):
    retry_of: str
    job_id: str | None
    kind: JobKind
    priority: Priority
    queued: list[QueuedOut]
    refused: list[RefusedOut]


@router.post(
    "/jobs/{jobId}/priority",
    response_model=PriorityOut,
    responses={**_CHANGE_ERRORS, **error_responses(*BODY_ERRORS)},
)
def job_priority(
    job_id: JobIdPath, body: PriorityRequest, key: OperatorKey, factory: FactoryDep
) -> PriorityOut | JSONResponse:
    """Move a job's still-queued certifications up or down their queues. 409 when the job
    has finished or has nothing waiting in a queue."""
    try:
        with _conflicts("jobId"):
            count = operations.set_priority(factory, _actor(key), job_id, body.priority)
    except _Conflict as conflict:
        return conflict.response
    return PriorityOut(job_id=job_id, priority=body.priority, changed=count)


@router.post("/jobs/{jobId}/cancel", response_model=CancelOut, responses=_CHANGE_ERRORS)
def cancel_job(
    job_id: JobIdPath, key: OperatorKey, enqueuer: EnqueuerDep, factory: FactoryDep
) -> CancelOut | JSONResponse:
    """Cancel a job: queued certifications never start, running ones stop after their
    current test. 409 when it has finished already."""
    try:
        with _conflicts("jobId"):
            count = operations.cancel_job(factory, enqueuer.client, _actor(key), job_id)
    except _Conflict as conflict:
        return conflict.response
    return CancelOut(job_id=job_id, cancelled=count, status="CANCELLED")


@router.post(
    "/jobs/{jobId}/retry-failed",
    response_model=RetryOut,
    status_code=status.HTTP_201_CREATED,
    responses={**_CHANGE_ERRORS, **error_responses(*BODY_ERRORS)},
)
def retry_failed(
    job_id: JobIdPath,
    key: OperatorKey,
    enqueuer: EnqueuerDep,
    factory: FactoryDep,
    body: RetryRequest | None = None,
) -> RetryOut | JSONResponse:
    """Queue again, as a new job, the certifications of this job that failed, errored or
    were incomplete (of deployments still active). 409 when there is none."""
    priority = body.priority if body else Priority.NORMAL
    try:
        with _conflicts("jobId"):
            result = operations.retry_failed(factory, enqueuer, _actor(key), job_id, priority)
    except _Conflict as conflict:
        return conflict.response
    return RetryOut(
        retry_of=job_id,
        job_id=result.job_id,
        kind=result.kind,
        priority=result.priority,
        queued=[QueuedOut.model_validate(q.__dict__) for q in result.queued],
        refused=[RefusedOut.model_validate(r.__dict__) for r in result.refused],
    )


# --- the catalog ----------------------------------------------------------------------


class DeploymentStateOut(ApiModel):
    deployment_id: int
    deployment: str
    active: bool
    changed: bool


class ProviderStateOut(ApiModel):
    provider: str
    active: bool
    changed: bool


class RemovedOut(ApiModel):
    deployment_id: int
    deployment: str
    removed: bool = True


def _deployment_active(
    deployment_id: int, key: ApiKey, factory: Any, active: bool
) -> DeploymentStateOut:
    label, changed = operations.set_deployment_active(factory, _actor(key), deployment_id, active)
    return DeploymentStateOut(
        deployment_id=deployment_id, deployment=label, active=active, changed=changed
    )


@router.post(
    "/catalog/deployments/{deploymentId}/deactivate",
    response_model=DeploymentStateOut,
    responses=_CHANGE_ERRORS,
)
def deactivate_deployment(
    deployment_id: DeploymentIdPath, key: OperatorKey, factory: FactoryDep
) -> DeploymentStateOut:
    """Stop queuing and scheduling a deployment (its history stays; work already queued
    runs)."""
    return _deployment_active(deployment_id, key, factory, False)


@router.post(
    "/catalog/deployments/{deploymentId}/activate",
    response_model=DeploymentStateOut,
    responses=_CHANGE_ERRORS,
)
def activate_deployment(
    deployment_id: DeploymentIdPath, key: OperatorKey, factory: FactoryDep
) -> DeploymentStateOut:
    """Queue and schedule a deactivated deployment again."""
    return _deployment_active(deployment_id, key, factory, True)


@router.delete(
    "/catalog/deployments/{deploymentId}", response_model=RemovedOut, responses=_CHANGE_ERRORS
)
def remove_deployment(
    deployment_id: DeploymentIdPath, key: OperatorKey, factory: FactoryDep
) -> RemovedOut | JSONResponse:
    """Delete a deployment with its certifications, runs and test results. 409 while it
    has a certification queued or running."""
    try:
        with _conflicts("deploymentId"):
            label = operations.remove_deployment(factory, _actor(key), deployment_id)
    except _Conflict as conflict:
        return conflict.response
    return RemovedOut(deployment_id=deployment_id, deployment=label)


class ProviderRemovedOut(ApiModel):
    provider: str
    deployments: int = Field(description="Deployments removed with it.")
    removed: bool = True


@router.delete(
    "/catalog/providers/{provider}", response_model=ProviderRemovedOut, responses=_CHANGE_ERRORS
)
def remove_provider(
    provider: ProviderSlug, key: OperatorKey, factory: FactoryDep
) -> ProviderRemovedOut | JSONResponse:
    """Delete a provider with its deployments and their whole history. 409 while one of
    them has a certification queued or running."""
    try:
        with _conflicts("provider"):
            count = operations.remove_provider(factory, _actor(key), provider)
    except _Conflict as conflict:
        return conflict.response
    return ProviderRemovedOut(provider=provider, deployments=count)


def _provider_active(slug: str, key: ApiKey, factory: Any, active: bool) -> ProviderStateOut:
    changed = operations.set_provider_active(factory, _actor(key), slug, active)
    return ProviderStateOut(provider=slug, active=active, changed=changed)


@router.post(
    "/catalog/providers/{provider}/deactivate",
    response_model=ProviderStateOut,
    responses=_CHANGE_ERRORS,
)
def deactivate_provider(
    provider: ProviderSlug, key: OperatorKey, factory: FactoryDep
) -> ProviderStateOut:
    """Stop queuing and scheduling every deployment of a provider."""
    return _provider_active(provider, key, factory, False)


@router.post(
    "/catalog/providers/{provider}/activate",
    response_model=ProviderStateOut,
    responses=_CHANGE_ERRORS,
)
def activate_provider(
    provider: ProviderSlug, key: OperatorKey, factory: FactoryDep
) -> ProviderStateOut:
    """Queue and schedule a deactivated provider's deployments again."""
    return _provider_active(provider, key, factory, True)


# --- the audit log --------------------------------------------------------------------


class AuditEntryOut(ApiModel):
    id: int
    at: datetime
    actor: str = Field(description="The API key's name, or the user who ran the CLI.")
    interface: str = Field(description="api, cli or dashboard.")
    action: str
    target: str
    details: dict[str, Any]


ActionFilter = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=r"^[a-z_]+(\.[a-z_]+)?$",
        description=f"One action ({', '.join(audit.ACTIONS)}) or kind (`region`).",
    ),
]


@router.get(
    "/audit",
    response_model=list[AuditEntryOut],
    responses=error_responses(400, 422, *VIEWER_ERRORS),
)
def audit_log(
    factory: FactoryDep,
    _viewer: CurrentKey,
    since: Annotated[Since | None, Query(description="30m, 12h, 7d, 2w, or a date.")] = None,
    until: Annotated[Since | None, Query(description="A date (exclusive), or a window.")] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: ActionFilter = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_LIMIT)] = 100,
) -> list[AuditEntryOut]:
    """Operator actions, newest first: who (API key name or CLI user), what, when, from
    which interface."""
    from modelcert.reports.build import parse_since
    from modelcert.store.models import utcnow

    now = utcnow()
    start = parse_since(since, now) if since else None
    end = parse_since(until, now) if until else None
    if action is not None:
        kinds = {a.split(".")[0] for a in audit.ACTIONS}
        if action not in audit.ACTIONS and action not in kinds:
            raise UserError(f"unknown action {action!r}", field="action")
    with transaction(factory) as session:
        rows = audit.entries(
            session, since=start, until=end, actor=actor, action=action, limit=limit
        )
        return [AuditEntryOut.model_validate(entry.as_json()) for entry in rows]
