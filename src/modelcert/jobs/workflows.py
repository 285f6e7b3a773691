"""The certification workflow: one (deployment, region), one DBOS step per test.

A worker killed mid-certification resumes at the last completed test (completed steps
are read back from the database, not run again: no paying twice for an LLM call).
Each finished test is stored at once, so progress shows while the run goes on (the API's
server-sent events and the dashboard read those rows; DBOS events are not used, as one
more write per test).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from dbos import DBOS
from dbos._error import DBOSWorkflowCancelledError
from sqlalchemy import update

from modelcert.certify.battery import BATTERY_BY_ID, PlannedTest
from modelcert.certify.runner import RetryPolicy, TestResult, run_test, skip_reason_after, skipped
from modelcert.certify.service import plan_certification, scored
from modelcert.domain import CertificationStatus, JobStatus
from modelcert.jobs.engine import WORKFLOW_NAME
from modelcert.jobs.runtime import runtime
from modelcert.obs import metrics
from modelcert.obs.logging import log_event
from modelcert.providers.base import Target
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Job, utcnow


@dataclass(frozen=True)
class PreparedRun:
    """What the steps need, in a form DBOS can checkpoint (no callables)."""

    run_id: int
    job_id: str | None
    deployment_id: int
    deployment_label: str
    provider_slug: str
    provider_kind: str
    provider_config: dict[str, Any]
    target: Target
    streaming: bool
    tests: tuple[tuple[str, str | None], ...]  # (test id, skip reason)
    policy: RetryPolicy
    test_timeout_s: float | None
    simulated: bool


_POOL_LOCK = threading.Lock()


@DBOS.step(name="prepare")
async def prepare(job_id: str | None, deployment_id: int, region: str) -> PreparedRun:
    """Resolve the plan, mark the certification RUNNING and open its run."""
    # Database work runs in a thread: on the event loop it would stall every other
    # certification of this worker while it waits for a connection or a lock.
    return await asyncio.to_thread(_prepare, job_id, deployment_id, region)


def _prepare(job_id: str | None, deployment_id: int, region: str) -> PreparedRun:
    ctx = runtime()
    with transaction(ctx.factory) as session:
        plan = plan_certification(session, ctx.settings, deployment_id, region)
        with _POOL_LOCK:  # one connection per provider, even when two runs start at once
            provider = ctx.pool.get(plan.provider_slug, plan.provider_kind, plan.provider_config)
        deployment = repo.find_deployment(session, deployment_id)
        run = repo.begin_run(
            session,
            deployment,
            region,
            simulated=provider.simulated,
            job_id=job_id,
            executor_id=ctx.executor_id,
        )
        if job_id is not None:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
                .values(status=JobStatus.RUNNING.value, started_at=utcnow())
            )
        return PreparedRun(
            run_id=run.id,
            job_id=job_id,
            deployment_id=deployment_id,
            deployment_label=plan.deployment_label,
            provider_slug=plan.provider_slug,
            provider_kind=plan.provider_kind,
            provider_config=dict(plan.provider_config),
            target=plan.target,
            streaming=plan.capabilities.streaming,
            tests=tuple((p.test.id, p.skip_reason) for p in plan.tests),
            policy=plan.policy,
            test_timeout_s=plan.test_timeout_s,
            simulated=provider.simulated,
        )


@DBOS.step(name="test")
async def run_one_test(prepared: PreparedRun, position: int, test_id: str) -> TestResult:
    """One battery test against the provider (timeout and retries inside), stored at once."""
    ctx = runtime()
    provider = ctx.pool.get(
        prepared.provider_slug, prepared.provider_kind, prepared.provider_config
    )
    ctx.note_test(DBOS.workflow_id, test_id)
    result = await run_test(
        PlannedTest(BATTERY_BY_ID[test_id]),
        provider,
        prepared.target,
        streaming=prepared.streaming,
        policy=prepared.policy,
        timeout_s=prepared.test_timeout_s,
        gate=ctx.gates.get(prepared.provider_slug, prepared.target.region),
    )
    await asyncio.to_thread(_store_test, prepared.run_id, position, result)
    metrics.record_test_result(
        prepared.target.region,
        prepared.provider_kind,
        test_id,
        result.outcome.value,
        result.error_category.value if result.error_category else "",
        result.retries,
        result.throttled_s,
        (result.latency_ms or 0) / 1000,
    )
    return result


def _store_test(run_id: int, position: int, result: TestResult) -> None:
    with transaction(runtime().factory) as session:
        repo.record_test(session, run_id, position, result)


@DBOS.step(name="finish")
async def finish(prepared: PreparedRun, results: list[TestResult]) -> dict[str, Any]:
    """Score, then persist run, tests, certification and job totals in one transaction."""
    return await asyncio.to_thread(_finish, prepared, results)


def _finish(prepared: PreparedRun, results: list[TestResult]) -> dict[str, Any]:
    score = scored(tuple(results))
    ctx = runtime()
    with transaction(ctx.factory) as session:
        certification = repo.finish_run(session, prepared.run_id, results, score)
        if prepared.job_id is not None:
            repo.count_job_result(session, prepared.job_id, succeeded=score.status.is_valid_verdict)
        return {
            "run_id": prepared.run_id,
            "deployment": prepared.deployment_label,
            "region": prepared.target.region,
            "status": certification.status,
            "rating": certification.rating,
            "badge": certification.badge,
            "error_category": certification.error_category,
            "simulated": prepared.simulated,
        }


def _abort(run_id: int, status: CertificationStatus, message: str) -> None:
    with transaction(runtime().factory) as session:
        repo.abort_run(session, run_id, status, message)


def _finished(region: str, prepared: PreparedRun, status: str, started: float) -> None:
    metrics.record_certification_finished(
        region, prepared.provider_kind, status, time.monotonic() - started
    )


@DBOS.workflow(name=WORKFLOW_NAME)
async def certify_deployment(job_id: str | None, deployment_id: int, region: str) -> dict[str, Any]:
    """Certify one deployment in one region, durably."""
    ctx = runtime()
    async with ctx.slot(DBOS.workflow_id or "", deployment_id, region):
        started = time.monotonic()
        prepared = await prepare(job_id, deployment_id, region)
        log_event(
            "active",
            workflow_id=DBOS.workflow_id,
            deployment=prepared.deployment_label,
            region=region,
            job_id=job_id,
        )
        metrics.record_certification_started(region, prepared.provider_kind)
        results: list[TestResult] = []
        # CERTIFICATION_TIMEOUT counts from here, once the worker has a slot for this run
        # (not from the moment the workflow was claimed: waiting is not running).
        limit_s = ctx.settings.certification_timeout_s
        try:
            try:
                async with asyncio.timeout(limit_s):
                    for position, (test_id, skip) in enumerate(prepared.tests):
                        reason = skip or skip_reason_after(results)
                        if reason:
                            result = skipped(PlannedTest(BATTERY_BY_ID[test_id]), reason)
                        else:
                            result = await run_one_test(prepared, position, test_id)
                        results.append(result)
            except TimeoutError:
                reason = (
                    f"not run: the certification exceeded CERTIFICATION_TIMEOUT ({limit_s:g} s)"
                )
                for test_id, _ in prepared.tests[len(results) :]:
                    results.append(skipped(PlannedTest(BATTERY_BY_ID[test_id]), reason))
                log_event("error", workflow_id=DBOS.workflow_id, error=reason)
            summary = await finish(prepared, results)
        except DBOSWorkflowCancelledError:
            await asyncio.to_thread(
                _abort, prepared.run_id, CertificationStatus.CANCELLED, "cancelled"
            )
            _finished(region, prepared, CertificationStatus.CANCELLED.value, started)
            raise
        except asyncio.CancelledError:
            # The worker is shutting down: the workflow resumes later, leave its rows as they are.
            raise
        except Exception as exc:
            # Our own fault, not the model's: recorded as ERROR with the reason.
            message = f"internal error: {type(exc).__name__}: {exc}"
            await asyncio.to_thread(_abort, prepared.run_id, CertificationStatus.ERROR, message)
            _finished(region, prepared, CertificationStatus.ERROR.value, started)
            log_event("error", workflow_id=DBOS.workflow_id, error=message)
            raise
        _finished(region, prepared, summary["status"], started)
        event = "completed" if summary["status"] in ("CERTIFIED", "QUALITY_WARNING") else "failed"
        log_event(event, workflow_id=DBOS.workflow_id, **summary)
        return summary
