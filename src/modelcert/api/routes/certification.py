"""The certification queue API (the old `/api/certification-queue` contract, DOMAIN §7):
queue certifications, follow and cancel jobs, read verdicts, history, stats and regions.

Queuing and cancelling need the operator role; reading needs any key (viewer). The
read-only routes are in `certification_reads`, included here under the same prefix."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api import edges, queries, sse
from modelcert.api.deps import CurrentKey, EnqueuerDep, FactoryDep, OperatorKey, SessionDep
from modelcert.api.errors import BODY_ERRORS, ROLE_ERRORS, VIEWER_ERRORS, error_responses
from modelcert.api.routes import certification_reads
from modelcert.api.schemas import (
    CancelResponse,
    CertifyAllRequest,
    CertifyModelRequest,
    CertifyModelResponse,
    CertifyMultipleRequest,
    ConflictResponse,
    EnqueueResponse,
    ErrorResponse,
    JobSummaryOut,
    QueuedOut,
    RecertifyRequest,
    RefusedOut,
)
from modelcert.domain import CertifyOptions, JobKind, Priority
from modelcert.errors import NotFoundError, UserError
from modelcert.jobs.cancel import cancel_job
from modelcert.jobs.enqueue import Enqueuer, EnqueueResult, all_active_targets, recertify_targets
from modelcert.jobs.job_summary import job_summary
from modelcert.store.auth_models import ApiKey
from modelcert.validation import JobId

router = APIRouter(prefix="/api/certification-queue", tags=["certification"])

# Queuing: operator role, a JSON body; 400 (ambiguous ref), 404 (unknown deployment,
# provider or region), 409 (already queued or running).
_QUEUE_ERRORS: dict[int | str, dict[str, Any]] = {
    **error_responses(400, 404, *BODY_ERRORS, *ROLE_ERRORS),
    status.HTTP_409_CONFLICT: {
        "model": ConflictResponse,
        "description": "Already queued or running: nothing new was queued.",
    },
}


JobIdPath = Annotated[JobId, Path(alias="jobId")]


@contextmanager
def _api_fields(**names: str) -> Iterator[None]:
    """Errors of the layers below, their `field` renamed to what the client sent. A region
    the deployment's provider does not serve is not found (404), like an unknown one."""
    try:
        yield
    except UserError as exc:
        field = names.get(exc.field or "", exc.field)
        kind = NotFoundError if exc.field == "region" else type(exc)
        raise kind(exc.message, field=field) from None


def _enqueue(
    enqueuer: Enqueuer,
    factory: sessionmaker[Session],
    targets: Sequence[tuple[str | int, str]],
    key: ApiKey,
    *,
    kind: JobKind,
    priority: Priority,
    delay_s: float = 0.0,
    options: CertifyOptions | None = None,
) -> EnqueueResult:
    fields = {
        "deployment": "modelIds",
        "region": "regions",
        "delay": "delaySeconds",
        "suite": "suites",
        "budget_usd": "budgetUsd",
    }
    if kind is JobKind.SINGLE:
        fields.update(deployment="modelId", region="region")
    for ref, _region in targets:
        queries.check_ref(ref, fields["deployment"])
    with _api_fields(**fields):
        return enqueuer.enqueue(
            factory,
            targets,
            kind=kind,
            priority=priority,
            created_by=key.name,
            delay_s=delay_s,
            options=options,
        )


def _json(status_code: int, body: BaseModel) -> JSONResponse:
    """An answer with another status than the route's usual one."""
    return JSONResponse(
        status_code=status_code, content=body.model_dump(mode="json", by_alias=True)
    )


def _refused(result: EnqueueResult) -> list[RefusedOut]:
    return [RefusedOut.model_validate(r.__dict__) for r in result.refused]


def _conflict(result: EnqueueResult, field: str | None) -> JSONResponse:
    refused = _refused(result)
    if len(refused) == 1:
        detail = f"a certification of {refused[0].deployment} in {refused[0].region} is already "
    else:
        detail = f"all {len(refused)} requested certifications are already "
    body = ConflictResponse(detail=detail + "queued or running", field=field, refused=refused)
    return _json(status.HTTP_409_CONFLICT, body)


def _batch_answer(result: EnqueueResult, field: str | None) -> EnqueueResponse | JSONResponse:
    if result.job_id is None and result.refused:
        return _conflict(result, field)
    return EnqueueResponse(
        job_id=result.job_id,
        kind=result.kind,
        priority=result.priority,
        queued=[QueuedOut.model_validate(q.__dict__) for q in result.queued],
        refused=_refused(result),
    )


@router.post(
    "/certify-model",
    status_code=status.HTTP_201_CREATED,
    response_model=CertifyModelResponse,
    responses=_QUEUE_ERRORS,
)
def certify_model(
    body: CertifyModelRequest, key: OperatorKey, enqueuer: EnqueuerDep, factory: FactoryDep
) -> CertifyModelResponse | JSONResponse:
    """Queue one deployment in one region; 409 if it is already queued or running."""
    result = _enqueue(
        enqueuer,
        factory,
        [(body.model_id, body.region)],
        key,
        kind=JobKind.SINGLE,
        priority=body.priority,
        delay_s=body.delay_seconds,
        options=body.options(),
    )
    if result.job_id is None:
        return _conflict(result, "modelId")
    queued = result.queued[0]
    return CertifyModelResponse(
        job_id=result.job_id,
        model_id=body.model_id,
        deployment_id=queued.deployment_id,
        deployment=queued.deployment,
        region=queued.region,
        priority=result.priority,
    )


@router.post(
    "/certify-multiple",
    status_code=status.HTTP_201_CREATED,
    response_model=EnqueueResponse,
    responses=_QUEUE_ERRORS,
)
def certify_multiple(
    body: CertifyMultipleRequest, key: OperatorKey, enqueuer: EnqueuerDep, factory: FactoryDep
) -> EnqueueResponse | JSONResponse:
    """Queue every model × region; those already queued or running are refused (409 if all)."""
    targets = [(model, region) for model in body.model_ids for region in body.regions]
    result = _enqueue(
        enqueuer,
        factory,
        targets,
        key,
        kind=JobKind.MULTIPLE,
        priority=body.priority,
        options=body.options(),
    )
    return _batch_answer(result, "modelIds")


@router.post(
    "/certify-all",
    status_code=status.HTTP_201_CREATED,
    response_model=EnqueueResponse,
    responses=_QUEUE_ERRORS,
)
def certify_all(
    body: CertifyAllRequest, key: OperatorKey, enqueuer: EnqueuerDep, factory: FactoryDep
) -> EnqueueResponse | JSONResponse:
    """Queue every active deployment (of one provider, or all) in the regions it serves
    among `regions` (default: all it serves)."""
    regions = body.regions or []
    with factory() as session:
        queries.check_served(session, regions, body.provider)
        targets = all_active_targets(session, regions, body.provider)
    result = _enqueue(
        enqueuer,
        factory,
        targets,
        key,
        kind=JobKind.ALL,
        priority=body.priority,
        options=body.options(),
    )
    return _batch_answer(result, "regions")


@router.post(
    "/recertify",
    status_code=status.HTTP_201_CREATED,
    response_model=EnqueueResponse,
    responses={
        **_QUEUE_ERRORS,
        status.HTTP_200_OK: {"model": EnqueueResponse, "description": "Nothing to recertify."},
    },
)
def recertify(
    key: OperatorKey,
    enqueuer: EnqueuerDep,
    factory: FactoryDep,
    body: RecertifyRequest | None = None,
) -> EnqueueResponse | JSONResponse:
    """Queue again every certification that expired, failed or errored (priority low)."""
    priority = body.priority if body else Priority.LOW
    with factory() as session:
        targets = recertify_targets(session)
    if not targets:
        empty = EnqueueResponse(
            job_id=None, kind=JobKind.RECERTIFY, priority=priority, queued=[], refused=[]
        )
        return _json(status.HTTP_200_OK, empty)
    result = _enqueue(enqueuer, factory, targets, key, kind=JobKind.RECERTIFY, priority=priority)
    return _batch_answer(result, None)


@router.get(
    "/jobs/{jobId}",
    response_model=JobSummaryOut,
    responses=error_responses(404, 422, *VIEWER_ERRORS),
)
def get_job(job_id: JobIdPath, session: SessionDep, _viewer: CurrentKey) -> JobSummaryOut:
    """A job's status, totals and one row per certification."""
    return JobSummaryOut.model_validate(job_summary(session, job_id))


@router.delete(
    "/jobs/{jobId}",
    response_model=CancelResponse,
    responses=error_responses(404, 409, 422, *ROLE_ERRORS),
)
def cancel(
    job_id: JobIdPath, _operator: OperatorKey, enqueuer: EnqueuerDep, factory: FactoryDep
) -> CancelResponse | JSONResponse:
    """Cancel a job: queued certifications never start, running ones stop after their
    current test. 409 when the job has already finished."""
    try:
        cancelled = cancel_job(factory, enqueuer.client, job_id)
    except NotFoundError:
        raise
    except UserError as exc:
        body = ErrorResponse(detail=exc.message, field="jobId")
        return _json(status.HTTP_409_CONFLICT, body)
    return CancelResponse(job_id=job_id, cancelled=cancelled, status="CANCELLED")


@router.get(
    "/jobs/{jobId}/events",
    response_class=StreamingResponse,
    responses={
        status.HTTP_200_OK: {
            "content": {"text/event-stream": {}},
            "description": "`data:` events: progress (one per finished test), then "
            "complete (with the job) or error. Progress and complete events carry an "
            "`id:`; reconnecting with that id as `Last-Event-ID` goes on after it, "
            "without repeating anything (400 if it is not an id of this stream). A "
            f"stream ends after {int(edges.STREAM_MAX_S)} s (reconnect to go on); a key "
            f"may hold {edges.MAX_STREAMS_PER_KEY} open at once (429 beyond).",
        },
        **error_responses(400, 404, 422, *VIEWER_ERRORS),
    },
)
def job_events(
    job_id: JobIdPath,
    request: Request,
    key: CurrentKey,
    factory: FactoryDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=sse.CURSOR_MAX,
            description="The id of the last event received: the stream goes on after it.",
        ),
    ] = None,
) -> Response:
    """A job's progress as Server-Sent Events, until it completes or is cancelled."""
    with factory() as session:
        queries.require_job(session, job_id)
    # `stream_response` reads the header itself (the dashboard's stream shares it).
    return sse.stream_response(request, factory, job_id, key.name)


router.include_router(certification_reads.router)
