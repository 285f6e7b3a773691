"""A job's progress as Server-Sent Events, read from the database.

Workers store each test as it finishes (`test_results`), so the stream polls for rows of
the job's runs it has not reported yet: `progress` for each, once; then `complete` with
the job's summary when the job is COMPLETED or CANCELLED, or `error`. A comment line is
sent when nothing else was for `heartbeat_s`, so that proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.edges import STREAM_MAX_S, STREAM_RETRY_AFTER_S, StreamSlots
from modelcert.api.schemas import JobSummaryOut
from modelcert.certify.battery import plan_battery
from modelcert.domain import Capabilities, CertificationStatus, JobStatus
from modelcert.errors import NotFoundError
from modelcert.jobs.job_summary import job_summary
from modelcert.store.models import Certification, CertificationRun, Deployment, Job, TestResultRow
from modelcert.store.outage import describe_outage, is_database_unavailable

log = logging.getLogger(__name__)

POLL_S = 0.5
HEARTBEAT_S = 15.0
HEARTBEAT = ": heartbeat\n\n"
_FINISHED = (JobStatus.COMPLETED.value, JobStatus.CANCELLED.value)
_RUNNING = (CertificationStatus.RUNNING.value,)


def sse_event(payload: dict[str, Any]) -> str:
    """One `data:` event (JSON on one line)."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class JobProgress:
    """What happened to one job since the last poll; each finished test is reported once."""

    def __init__(self, factory: sessionmaker[Session], job_id: str) -> None:
        self.factory = factory
        self.job_id = job_id
        self.current = 0
        self.total: int | None = None
        self._seen: set[tuple[int, str]] = set()  # (run, test): a re-run step gets a new row
        self._closed: set[int] = set()  # finished runs whose every test was reported
        self._labels: dict[int, str] = {}

    def poll(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """New progress events, and the job's summary once it has finished."""
        with self.factory() as session:
            # The status first: a job seen finished has every test row committed already
            # (the last certification stores its rows and the totals in one transaction).
            status = session.scalar(select(Job.status).where(Job.id == self.job_id))
            if status is None:
                raise NotFoundError(f"unknown job {self.job_id!r}", field="jobId")
            if self.total is None:
                self.total = _planned_tests(session, self.job_id)
            events = [self._event(session, *row) for row in self._new_rows(session)]
            summary = job_summary(session, self.job_id) if status in _FINISHED else None
        return events, summary

    def _new_rows(self, session: Session) -> list[tuple[TestResultRow, CertificationRun]]:
        # Not an id cursor: concurrent runs commit their rows out of id order. Rows are read
        # for runs not yet closed; a run seen finished here has all its rows committed, so
        # after this read it is closed and never read again.
        runs = {
            run.id: run
            for run in session.scalars(
                select(CertificationRun).where(CertificationRun.job_id == self.job_id)
            )
            if run.id not in self._closed
        }
        finished = {run_id for run_id, run in runs.items() if run.status not in _RUNNING}
        rows = session.scalars(
            select(TestResultRow)
            .where(TestResultRow.run_id.in_(runs))
            .order_by(TestResultRow.run_id, TestResultRow.position)
        )
        fresh = []
        for test in rows:
            if (test.run_id, test.test_id) not in self._seen:
                self._seen.add((test.run_id, test.test_id))
                fresh.append((test, runs[test.run_id]))
        self._closed |= finished
        return fresh

    def _event(
        self, session: Session, test: TestResultRow, run: CertificationRun
    ) -> dict[str, Any]:
        self.current += 1
        if run.deployment_id not in self._labels:
            deployment = session.get(Deployment, run.deployment_id)
            self._labels[run.deployment_id] = (
                f"{deployment.provider.slug}/{deployment.provider_model_id}" if deployment else ""
            )
        return {
            "type": "progress",
            "current": self.current,
            "total": max(self.total or 0, self.current),
            "testName": test.test_id,
            "title": test.title,
            "status": test.outcome,
            "deployment": self._labels[run.deployment_id],
            "deploymentId": run.deployment_id,
            "region": run.region,
            "runId": run.id,
            "latencyMs": test.latency_ms,
            "errorCategory": test.error_category,
        }


def _planned_tests(session: Session, job_id: str) -> int:
    """Tests the job will report: the battery of each of its (deployment, region)."""
    pairs = set(
        session.execute(
            select(CertificationRun.deployment_id, CertificationRun.region).where(
                CertificationRun.job_id == job_id
            )
        )
    )
    pairs |= set(
        session.execute(
            select(Certification.deployment_id, Certification.region).where(
                Certification.job_id == job_id
            )
        )
    )
    ids = {deployment_id for deployment_id, _ in pairs}
    sizes = {
        d.id: len(plan_battery(d.model.vendor, Capabilities.model_validate(d.model.capabilities)))
        for d in session.scalars(select(Deployment).where(Deployment.id.in_(ids))).unique()
    }
    return sum(sizes.get(deployment_id, 0) for deployment_id, _ in pairs)


def complete_event(summary: dict[str, Any]) -> dict[str, Any]:
    """The final event: the job; for a one-certification job also that certification
    (the old API's `certification` field)."""
    job = JobSummaryOut.model_validate(summary).model_dump(mode="json", by_alias=True)
    event: dict[str, Any] = {"type": "complete", "job": job}
    if len(job["certifications"]) == 1:
        event["certification"] = job["certifications"][0]
    return event


async def job_events(
    progress: JobProgress,
    is_disconnected: Callable[[], Awaitable[bool]],
    *,
    poll_s: float = POLL_S,
    heartbeat_s: float = HEARTBEAT_S,
    max_s: float = STREAM_MAX_S,
) -> AsyncIterator[str]:
    """The event stream of one job, until it finishes, the client goes away or `max_s`
    have passed (then a `timeout` event: the client reconnects to go on)."""
    last_sent = time.monotonic()
    deadline = last_sent + max_s
    while not await is_disconnected():
        if time.monotonic() >= deadline:
            yield sse_event(
                {"type": "timeout", "message": f"stream closed after {int(max_s)} s: reconnect"}
            )
            return
        try:
            events, summary = await asyncio.to_thread(progress.poll)
        except NotFoundError as exc:
            yield sse_event({"type": "error", "message": exc.message})
            return
        except Exception as exc:
            # No details to the client (they may name hosts); the log has them.
            if is_database_unavailable(exc):  # one line, no traceback: not a bug
                log.warning(
                    "progress stream of job %s ended: database unavailable: %s",
                    progress.job_id,
                    describe_outage(exc),
                )
                yield sse_event(
                    {"type": "error", "message": "progress unavailable: database unavailable"}
                )
                return
            log.exception("progress stream of job %s failed", progress.job_id)
            yield sse_event(
                {"type": "error", "message": f"progress unavailable: {type(exc).__name__}"}
            )
            return
        for event in events:
            yield sse_event(event)
            last_sent = time.monotonic()
        if summary is not None:
            yield sse_event(complete_event(summary))
            return
        if time.monotonic() - last_sent >= heartbeat_s:
            yield HEARTBEAT
            last_sent = time.monotonic()
        await asyncio.sleep(poll_s)


def stream_response(
    request: Request, factory: sessionmaker[Session], job_id: str, key_name: str
) -> Response:
    """The job's event stream for the key `key_name`, or 429 with Retry-After when that
    key already holds MAX_STREAMS_PER_KEY open streams."""
    slots: StreamSlots = request.app.state.stream_slots
    if not slots.acquire(key_name):
        return JSONResponse(
            status_code=429,
            content={
                "detail": f"too many open progress streams for this key "
                f"(at most {slots.limit}); close one or retry later",
                "field": "jobId",
            },
            headers={"Retry-After": str(STREAM_RETRY_AFTER_S)},
        )

    async def events() -> AsyncIterator[str]:
        with slots.held(key_name):
            async for event in job_events(
                JobProgress(factory, job_id),
                request.is_disconnected,
                poll_s=POLL_S,
                heartbeat_s=HEARTBEAT_S,
                max_s=request.app.state.stream_max_s,
            ):
                yield event

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
