"""A job's progress as Server-Sent Events, read from the database.

Workers store each test as it finishes (`test_results`), so the stream polls for rows of
the job's runs it has not reported yet: `progress` for each, once; then `complete` with
the job's summary when the job is COMPLETED or CANCELLED, or `error`. A comment line is
sent when nothing else was for `heartbeat_s`, so that proxies keep the connection open.

Every `progress` and `complete` event has an `id:`: a cursor over what the stream has
reported. A client that reconnects sends it back as `Last-Event-ID` (a browser's
EventSource does so by itself) and the stream goes on after it, replaying nothing. The
cursor is `v1.` then, per run of the job, `a-b` (runs a to b finished and every test of
them reported) or `run:row` (of that run, every test row up to that row id reported: one
run's rows are written one after another, by one execution, so they commit in id order;
rows of different runs do not, hence an entry per run). Runs not named had nothing
reported. Finished runs collapse into ranges, so it stays short: about one entry per run
still going on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.edges import STREAM_MAX_S, STREAM_RETRY_AFTER_S, StreamSlots
from modelcert.api.schemas import JobSummaryOut
from modelcert.certify.battery import plan_battery
from modelcert.domain import Capabilities, CertificationStatus, JobStatus
from modelcert.errors import NotFoundError, UserError
from modelcert.jobs.job_summary import deployment_label, job_summary
from modelcert.store.models import Certification, CertificationRun, Deployment, Job, TestResultRow
from modelcert.store.outage import describe_outage, is_database_unavailable
from modelcert.validation import ID_MAX

log = logging.getLogger(__name__)

POLL_S = 0.5
HEARTBEAT_S = 15.0
HEARTBEAT = ": heartbeat\n\n"
RETRY_MS = 2000  # how long a browser waits before it reconnects
CURSOR_VERSION = "v1"
CURSOR_MAX = 8000  # characters of a Last-Event-ID accepted back
_FINISHED = (JobStatus.COMPLETED.value, JobStatus.CANCELLED.value)
_RUNNING = (CertificationStatus.RUNNING.value,)


def sse_event(payload: dict[str, Any], event_id: str | None = None) -> str:
    """One `data:` event (JSON on one line), after its `id:` when it has one."""
    data = f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
    return f"id: {event_id}\n{data}" if event_id else data


@dataclass
class Cursor:
    """What a stream has reported: every run in one of the `closed` ranges (first, last)
    entirely, and of each run in `rows` every test row up to that row id."""

    closed: list[tuple[int, int]] = field(default_factory=list)
    rows: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, closed: set[int], rows: dict[int, int]) -> Cursor:
        ranges: list[tuple[int, int]] = []
        for run in sorted(closed):
            if ranges and ranges[-1][1] == run - 1:
                ranges[-1] = (ranges[-1][0], run)
            else:
                ranges.append((run, run))
        return cls(ranges, {run: row for run, row in rows.items() if run not in closed})

    def covers(self, run: int) -> bool:
        """Whether every test of `run` was reported."""
        return any(first <= run <= last for first, last in self.closed)

    def encode(self) -> str:
        parts = [f"{first}-{last}" for first, last in self.closed]
        parts += [f"{run}:{row}" for run, row in sorted(self.rows.items())]
        return f"{CURSOR_VERSION}.{','.join(parts)}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """The cursor a `Last-Event-ID` carries; `UserError` naming the header when it is
        not one of ours. Ranges stay ranges: a forged id cannot make the server build a
        large set."""
        problem = UserError(
            "Last-Event-ID is not an event id of this stream; reconnect without it",
            field="Last-Event-ID",
        )
        version, dot, listed = text.strip().partition(".")
        if len(text) > CURSOR_MAX or version != CURSOR_VERSION or not dot:
            raise problem
        cursor = cls()
        try:
            for item in filter(None, listed.split(",")):
                if "-" in item:
                    first, last = (int(n) for n in item.split("-"))
                    if not 0 < first <= last <= ID_MAX:
                        raise problem
                    cursor.closed.append((first, last))
                else:
                    run, row = (int(n) for n in item.split(":"))
                    if not (0 < run <= ID_MAX and 0 < row <= ID_MAX):
                        raise problem
                    cursor.rows[run] = row
        except ValueError:
            raise problem from None
        return cursor


class JobProgress:
    """What happened to one job since the last poll; each finished test is reported once,
    also across reconnections (`resume`: the cursor of the last event a client got)."""

    def __init__(
        self, factory: sessionmaker[Session], job_id: str, resume: Cursor | None = None
    ) -> None:
        self.factory = factory
        self.job_id = job_id
        self.current = 0
        self.total: int | None = None
        self._seen: set[tuple[int, str]] = set()  # (run, test): a re-run step gets a new row
        self._closed: set[int] = set()  # finished runs whose every test was reported
        self._rows: dict[int, int] = {}  # run → the highest test row id reported
        self._labels: dict[int, str] = {}
        self._resume = resume

    def cursor(self) -> str:
        """The id of an event sent now: where a reconnecting client goes on from."""
        return Cursor.of(self._closed, self._rows).encode()

    def poll(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str]:
        """New progress events (each with its event id), the job's summary once it has
        finished, and the cursor after all of them."""
        with self.factory() as session:
            # The status first: a job seen finished has every test row committed already
            # (the last certification stores its rows and the totals in one transaction).
            status = session.scalar(select(Job.status).where(Job.id == self.job_id))
            if status is None:
                raise NotFoundError(f"unknown job {self.job_id!r}", field="jobId")
            if self.total is None:
                self.total = planned_tests(session, self.job_id)
            if self._resume is not None:
                self._resume_from(session, self._resume)
                self._resume = None
            fresh, finished = self._new_rows(session)
            events = []
            for test, run in fresh:
                event = self._event(session, test, run)
                self._rows[run.id] = max(self._rows.get(run.id, 0), test.id)
                events.append((event, self.cursor()))
            # Closed only now: an id sent above never claims a run whose later rows were
            # not sent yet.
            self._closed |= finished
            if events:
                events[-1] = (events[-1][0], self.cursor())
            summary = job_summary(session, self.job_id) if status in _FINISHED else None
        return [dict(event, id=event_id) for event, event_id in events], summary, self.cursor()

    def _resume_from(self, session: Session, cursor: Cursor) -> None:
        """Count as reported what an earlier stream sent up to `cursor`."""
        runs = set(
            session.scalars(
                select(CertificationRun.id).where(CertificationRun.job_id == self.job_id)
            )
        )
        closed = {run for run in runs if cursor.covers(run)}
        rows = session.execute(
            select(TestResultRow.id, TestResultRow.run_id, TestResultRow.test_id).where(
                TestResultRow.run_id.in_(closed | (runs & set(cursor.rows)))
            )
        )
        for row_id, run_id, test_id in rows:
            if run_id in closed or row_id <= cursor.rows.get(run_id, 0):
                self._seen.add((run_id, test_id))
                self.current += 1
                self._rows[run_id] = max(self._rows.get(run_id, 0), row_id)
        self._closed = closed

    def _new_rows(
        self, session: Session
    ) -> tuple[list[tuple[TestResultRow, CertificationRun]], set[int]]:
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
        return fresh, finished

    def _event(
        self, session: Session, test: TestResultRow, run: CertificationRun
    ) -> dict[str, Any]:
        self.current += 1
        if run.deployment_id not in self._labels:
            deployment = session.get(Deployment, run.deployment_id)
            self._labels[run.deployment_id] = deployment_label(deployment) if deployment else ""
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


def planned_tests(session: Session, job_id: str) -> int:
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
    retry = f"retry: {RETRY_MS}\n"  # told once, with the first event that has an id
    while not await is_disconnected():
        if time.monotonic() >= deadline:
            yield sse_event(
                {"type": "timeout", "message": f"stream closed after {int(max_s)} s: reconnect"}
            )
            return
        try:
            events, summary, cursor = await asyncio.to_thread(progress.poll)
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
            event_id = event.pop("id")
            yield retry + sse_event(event, event_id)
            retry = ""
            last_sent = time.monotonic()
        if summary is not None:
            yield retry + sse_event(complete_event(summary), cursor)
            return
        if time.monotonic() - last_sent >= heartbeat_s:
            yield HEARTBEAT
            last_sent = time.monotonic()
        await asyncio.sleep(poll_s)


def stream_response(
    request: Request, factory: sessionmaker[Session], job_id: str, key_name: str
) -> Response:
    """The job's event stream for the key `key_name`, after the event whose id the client
    sends as `Last-Event-ID` (400 naming the header if it is not one); 429 with
    Retry-After when that key already holds MAX_STREAMS_PER_KEY open streams."""
    last_id = request.headers.get("last-event-id", "").strip()
    try:
        resume = Cursor.parse(last_id) if last_id else None
    except UserError as exc:
        return JSONResponse(status_code=400, content={"detail": exc.message, "field": exc.field})
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
                JobProgress(factory, job_id, resume),
                request.is_disconnected,
                poll_s=POLL_S,
                heartbeat_s=HEARTBEAT_S,
                max_s=request.app.state.stream_max_s,
            ):
                yield event

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
