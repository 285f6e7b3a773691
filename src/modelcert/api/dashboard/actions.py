"""Operator actions (POST, with the session's CSRF token): retry a job's failures,
cancel a job, re-certify a deployment in a region, change a queued job's priority,
pause / resume a region's queue. Each ends on a page with a flash message."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from modelcert.api import operations, queries
from modelcert.api.dashboard.sessions import Login
from modelcert.api.dashboard.web import (
    PREFIX,
    LoginDep,
    check_operator,
    read_form,
    redirect_with_flash,
)
from modelcert.api.deps import EnqueuerDep, FactoryDep, SettingsDep
from modelcert.domain import JobKind, Priority
from modelcert.errors import UserError
from modelcert.jobs.enqueue import EnqueueResult, all_active_targets
from modelcert.store.db import transaction
from modelcert.validation import JobId, RegionName, RowId

router = APIRouter()


async def _operator_form(request: Request, login: Login) -> tuple[dict[str, str], Response | None]:
    form = await read_form(request)
    return form, check_operator(request, login, form)


async def _attempt(
    request: Request, back: Callable[[], str], action: Callable[[], str]
) -> Response:
    """Run an action (in a thread: it does blocking database work); its outcome, or the
    error a person can act on, as a flash message on the page `back()` names."""
    try:
        message = await run_in_threadpool(action)
    except UserError as exc:
        return redirect_with_flash(request, back(), exc.message, "error")
    return redirect_with_flash(request, back(), message)


def _actor(login: Login) -> operations.Actor:
    """Who acts, for the audit log: the signed-in API key's name, from the dashboard."""
    return operations.Actor(login.key_name, "dashboard")


def _priority(form: dict[str, str], default: Priority) -> Priority:
    try:
        return Priority(form.get("priority") or default)
    except ValueError:
        raise UserError("priority must be one of high, normal, low", field="priority") from None


def _queued_message(result: EnqueueResult, what: str) -> str:
    if result.job_id is None:
        return f"Nothing queued: {what} is already queued or running."
    refused = f" ({len(result.refused)} already queued or running)" if result.refused else ""
    return f"Queued {len(result.queued)} certification(s) {what}{refused}: job {result.job_id}."


@router.post("/jobs/{job_id}/retry")
async def retry_failed(
    job_id: JobId,
    request: Request,
    login: LoginDep,
    enqueuer: EnqueuerDep,
    factory: FactoryDep,
) -> Response:
    """Queue again the certifications of a job whose latest run failed or errored."""
    form, refused = await _operator_form(request, login)
    if refused:
        return refused
    back = f"{PREFIX}/jobs/{job_id}"

    def retry() -> str:
        nonlocal back
        result = operations.retry_failed(
            factory, enqueuer, _actor(login), job_id, _priority(form, Priority.NORMAL)
        )
        if result.job_id is not None:
            back = f"{PREFIX}/jobs/{result.job_id}"
        return _queued_message(result, f"retrying job {job_id}")

    return await _attempt(request, lambda: back, retry)


@router.post("/jobs/{job_id}/cancel")
async def cancel(
    job_id: JobId,
    request: Request,
    login: LoginDep,
    enqueuer: EnqueuerDep,
    factory: FactoryDep,
) -> Response:
    """Cancel a job: queued certifications never start, running ones stop after their test."""
    _, refused = await _operator_form(request, login)
    if refused:
        return refused

    def run() -> str:
        count = operations.cancel_job(factory, enqueuer.client, _actor(login), job_id)
        return f"Job {job_id} cancelled ({count} unfinished certification(s) stopped)."

    return await _attempt(request, lambda: f"{PREFIX}/jobs/{job_id}", run)


@router.post("/jobs/{job_id}/priority")
async def change_priority(
    job_id: JobId, request: Request, login: LoginDep, factory: FactoryDep
) -> Response:
    """Move a job's still-queued certifications up or down the queue."""
    form, refused = await _operator_form(request, login)
    if refused:
        return refused

    def run() -> str:
        priority = _priority(form, Priority.NORMAL)
        count = operations.set_priority(factory, _actor(login), job_id, priority)
        return f"Job {job_id}: {count} queued certification(s) now have {priority} priority."

    return await _attempt(request, lambda: f"{PREFIX}/jobs/{job_id}", run)


@router.post("/certifications/{deployment_id}/{region}/recertify")
async def recertify(
    deployment_id: RowId,
    region: RegionName,
    request: Request,
    login: LoginDep,
    enqueuer: EnqueuerDep,
    factory: FactoryDep,
) -> Response:
    """Certify one deployment in one region again, now."""
    form, refused = await _operator_form(request, login)
    if refused:
        return refused
    back = f"{PREFIX}/certifications/{deployment_id}/{region}"

    def run() -> str:
        nonlocal back
        result = enqueuer.enqueue(
            factory,
            [(deployment_id, region)],
            kind=JobKind.SINGLE,
            priority=_priority(form, Priority.HIGH),
            created_by=login.key_name,
        )
        if result.job_id is not None:
            back = f"{PREFIX}/jobs/{result.job_id}"
        return _queued_message(result, "to re-certify")

    return await _attempt(request, lambda: back, run)


@router.post("/certify-all")
async def certify_all(
    request: Request, login: LoginDep, enqueuer: EnqueuerDep, factory: FactoryDep
) -> Response:
    """Certify every active deployment in every region it serves (the matrix's button)."""
    form, refused = await _operator_form(request, login)
    if refused:
        return refused
    back = f"{PREFIX}/matrix"

    def run() -> str:
        nonlocal back
        with transaction(factory) as session:
            targets = all_active_targets(session, [])
        if not targets:
            raise UserError("no active deployment to certify", field="deployments")
        result = enqueuer.enqueue(
            factory,
            targets,
            kind=JobKind.ALL,
            priority=_priority(form, Priority.NORMAL),
            created_by=login.key_name,
        )
        if result.job_id is not None:
            back = f"{PREFIX}/jobs/{result.job_id}"
        return _queued_message(result, "for every active deployment")

    return await _attempt(request, lambda: back, run)


@router.post("/regions/{region}/pause")
async def pause(
    region: RegionName,
    request: Request,
    login: LoginDep,
    enqueuer: EnqueuerDep,
    factory: FactoryDep,
    settings: SettingsDep,
) -> Response:
    """Stop starting certifications in a region (queued ones wait; running ones finish)."""
    _, refused = await _operator_form(request, login)
    if refused:
        return refused

    def run() -> str:
        with transaction(factory) as session:
            served = {r for p in queries.active_providers(session) for r in p.regions}
        if region not in served:
            raise UserError(f"unknown region {region!r}", field="region")
        changed = operations.pause_region(factory, enqueuer.client, settings, _actor(login), region)
        if not changed:
            return f"Region {region} was already paused."
        return f"Region {region} paused: queued certifications wait until it is resumed."

    return await _attempt(request, lambda: f"{PREFIX}/", run)


@router.post("/regions/{region}/resume")
async def resume(
    region: RegionName,
    request: Request,
    login: LoginDep,
    enqueuer: EnqueuerDep,
    factory: FactoryDep,
    settings: SettingsDep,
) -> Response:
    """Let a paused region's queue start certifications again."""
    _, refused = await _operator_form(request, login)
    if refused:
        return refused

    def run() -> str:
        if not operations.resume_region(factory, enqueuer.client, settings, _actor(login), region):
            return f"Region {region} was not paused."
        return f"Region {region} resumed."

    return await _attempt(request, lambda: f"{PREFIX}/", run)
