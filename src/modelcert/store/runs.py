"""A certification's writes: open a run, store each test as it ends, record the verdict
(or why there is none), count it toward its job.

`RunStore` is what the certification engine persists through (`certify.engine.RunStore`
is the interface); its methods are synchronous and each is one transaction, so the
engine runs them in a thread. The functions below take a Session and leave the
transaction to the caller.

Every write is safe to repeat, because it will be: a database blip makes `RunStore`
retry the whole transaction (it may have committed before the connection broke), and a
durable step killed after its write runs again. The run is keyed by the workflow that
opened it (`run_key`), a test by (run, test), and the verdict and the job's count change
only on the run's one transition out of RUNNING.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from modelcert.cost.budget import budget_refusal, total_cost
from modelcert.domain import (
    CERTIFICATION_VALIDITY,
    CertificationInputs,
    CertificationStatus,
    ErrorCategory,
    JobStatus,
    Score,
    Severity,
    Spending,
    TestOutcome,
    TestResult,
)
from modelcert.errors import NotFoundError
from modelcert.secrets import redact, redact_optional, redact_value
from modelcert.store import repo
from modelcert.store.certification_inputs import load_certification_inputs
from modelcert.store.db import transaction
from modelcert.store.models import (
    Certification,
    CertificationRun,
    Job,
    TestResultRow,
    utcnow,
)
from modelcert.store.outage import wait_out_outage
from modelcert.store.spending import spending_now

T = TypeVar("T")


class RunNotifier(Protocol):
    """What turns a stored verdict or a closed job into notifications
    (`modelcert.jobs.notify_events.Notifier`), in the transaction that stored it."""

    def run_finished(self, session: Session, run: CertificationRun) -> list[int]: ...

    def job_finished(self, session: Session, job_id: str) -> list[int]: ...


class RunStore:
    """The certification engine's persistence, on a SQLAlchemy session factory.

    While the database is unreachable, each method waits it out (bounded backoff, like
    DBOS's own writes) for up to `patience_s` (None: until `close()`), then raises
    `StoreUnavailable`; other errors propagate at once."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        patience_s: float | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.factory = factory
        self.patience_s = patience_s
        self._closed = threading.Event()
        self._sleep = sleep  # None: wait on close()
        # Set by a worker (notifications come from the durable path only).
        self.notifier: RunNotifier | None = None

    def close(self) -> None:
        """Stop waiting for the database: writes still retrying raise StoreUnavailable."""
        self._closed.set()

    def retrying(self, work: Callable[[], T]) -> T:
        """`work()`, again while the database is unreachable (see the class)."""
        return wait_out_outage(
            work, stop=self._closed, patience_s=self.patience_s, sleep=self._sleep
        )

    def load_inputs(
        self,
        ref: str | int,
        region: str,
        *,
        job_id: str | None,
        suites: Sequence[str] | None,
        smoke: bool,
        budget_usd: float | None,
        daily_budget_usd: float | None,
    ) -> CertificationInputs:
        """What the certification is planned from (`store.certification_inputs`)."""

        def load() -> CertificationInputs:
            with transaction(self.factory) as session:
                return load_certification_inputs(
                    session,
                    ref,
                    region,
                    job_id=job_id,
                    suites=suites,
                    smoke=smoke,
                    budget_usd=budget_usd,
                    daily_budget_usd=daily_budget_usd,
                )

        return self.retrying(load)

    def open_run(
        self,
        deployment_id: int,
        region: str,
        *,
        run_key: str,
        simulated: bool,
        job_id: str | None,
        executor_id: str | None,
        suites: Sequence[str] = (),
        estimate_usd: float | None = None,
        budget: Spending | None = None,
    ) -> tuple[int, str | None]:
        """Mark the certification RUNNING, open its run (and start its job), checking
        `budget` (its limits) in the same transaction, under the budget lock: (the run id,
        why a budget keeps it from starting or None). Again with the same `run_key`: the
        run it opened (no second run). A run a budget refuses is opened all the same, with
        no estimate reserved (the engine closes it SKIPPED, saying why)."""
        return self.retrying(
            lambda: self._open_run(
                deployment_id,
                region,
                run_key,
                simulated,
                job_id,
                executor_id,
                suites,
                estimate_usd,
                budget,
            )
        )

    def _open_run(
        self,
        deployment_id: int,
        region: str,
        run_key: str,
        simulated: bool,
        job_id: str | None,
        executor_id: str | None,
        suites: Sequence[str],
        estimate_usd: float | None,
        budget: Spending | None,
    ) -> tuple[int, str | None]:
        with transaction(self.factory) as session:
            refusal = None
            if budget is not None and budget.limited and estimate_usd is not None:
                # A repeat of this step finds its own run: its reservation is not counted.
                earlier = session.scalar(
                    select(CertificationRun.id).where(CertificationRun.run_key == run_key)
                )
                spent = spending_now(session, budget, job_id=job_id, now=utcnow(), besides=earlier)
                refusal = budget_refusal(estimate_usd, spent)
            run = begin_run(
                session,
                deployment_id,
                region,
                run_key=run_key,
                simulated=simulated,
                job_id=job_id,
                executor_id=executor_id,
                suites=suites,
                estimate_usd=None if refusal else estimate_usd,
            )
            if job_id is not None:
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
                    .values(status=JobStatus.RUNNING.value, started_at=utcnow())
                )
            return run.id, refusal

    def record_test(self, run_id: int, position: int, result: TestResult) -> None:
        def record() -> None:
            with transaction(self.factory) as session:
                record_test(session, run_id, position, result)

        self.retrying(record)

    def stored_result(self, run_id: int, test_id: str) -> TestResult | None:
        """The test as stored by an earlier execution of this run's step (None if none)."""

        def read() -> TestResult | None:
            with self.factory() as session:
                return stored_result(session, run_id, test_id)

        return self.retrying(read)

    def finish_run(
        self, run_id: int, results: Sequence[TestResult], score: Score, *, job_id: str | None
    ) -> None:
        """The tests, the run's verdict, the current certification and the job's totals,
        in one transaction; once (a repeat finds the run finished and changes nothing)."""

        def finish() -> None:
            with transaction(self.factory) as session:
                if finish_run(session, run_id, results, score) is None:
                    return
                completed = job_id is not None and count_job_result(
                    session, job_id, succeeded=score.status.is_valid_verdict
                )
                if self.notifier is not None:
                    run = session.get(CertificationRun, run_id)
                    assert run is not None
                    self.notifier.run_finished(session, run)
                    if completed and job_id is not None:
                        self.notifier.job_finished(session, job_id)

        self.retrying(finish)

    def abort_run(
        self, run_id: int, status: CertificationStatus, message: str, *, job_id: str | None
    ) -> None:
        """Close a run that could not finish: CANCELLED, or ERROR (our own fault); once."""

        def abort() -> None:
            with transaction(self.factory) as session:
                closed = abort_run(session, run_id, status, message)
                final = status in (CertificationStatus.ERROR, CertificationStatus.SKIPPED)
                if closed and job_id is not None and final:
                    # An ERROR is final too, and so is a certification a budget kept from
                    # starting (SKIPPED): without them the job would wait forever.
                    completed = count_job_result(session, job_id, succeeded=False)
                    if completed and self.notifier is not None:
                        self.notifier.job_finished(session, job_id)

        self.retrying(abort)


def begin_run(
    session: Session,
    deployment_id: int,
    region: str,
    *,
    simulated: bool,
    run_key: str | None = None,
    job_id: str | None = None,
    executor_id: str | None = None,
    suites: Sequence[str] = (),
    estimate_usd: float | None = None,
) -> CertificationRun:
    """Mark the (deployment, region) certification RUNNING and open a run for it; the run
    `run_key` already opened, if any (a re-executed step: it neither opens a second run
    nor reopens a finished one)."""
    now = utcnow()
    if run_key is not None:
        existing = session.scalar(
            select(CertificationRun).where(CertificationRun.run_key == run_key)
        )
        if existing is not None:
            if existing.status == CertificationStatus.RUNNING.value:
                existing.executor_id = executor_id
                certification = session.get(Certification, existing.certification_id)
                if certification is not None:
                    certification.status = CertificationStatus.RUNNING.value
            return existing
    certification = repo.certification_row(session, deployment_id, region)
    certification.status = CertificationStatus.RUNNING.value
    certification.started_at = now
    certification.job_id = job_id
    session.flush()
    run = CertificationRun(
        run_key=run_key,
        certification_id=certification.id,
        deployment_id=deployment_id,
        region=region,
        job_id=job_id,
        executor_id=executor_id,
        status=CertificationStatus.RUNNING.value,
        simulated=simulated,
        started_at=now,
        suites=list(suites) or None,
        estimate_usd=estimate_usd,
    )
    session.add(run)
    session.flush()
    return run


def _copy_score(target: Certification | CertificationRun, score: Score) -> None:
    target.status = score.status.value
    target.score = score.score
    target.rating = score.rating
    target.badge = score.badge.value if score.badge else None
    target.tests_total = score.tests_total
    target.tests_passed = score.tests_passed
    target.tests_failed = score.tests_failed
    target.tests_skipped = score.tests_skipped
    target.success_rate = score.success_rate
    target.avg_latency_ms = score.avg_latency_ms
    target.p50_latency_ms = score.p50_latency_ms
    target.max_latency_ms = score.max_latency_ms
    target.total_retries = score.total_retries
    target.error_category = score.error_category.value if score.error_category else None
    target.error_severity = score.error_severity.value if score.error_severity else None
    target.error_message = redact_optional(score.error_message)


def finish_run(
    session: Session,
    run_id: int,
    results: Sequence[TestResult],
    score: Score,
    *,
    now: datetime | None = None,
) -> Certification | None:
    """Persist the tests, the run's verdict and the current certification together; the
    certification, or None when the run was already closed (nothing is changed then)."""
    now = now or utcnow()
    run = session.get(CertificationRun, run_id, with_for_update=True)
    if run is None:
        raise NotFoundError(f"unknown run {run_id}", field="run")
    if run.status != CertificationStatus.RUNNING.value:
        return None
    recorded = set(
        session.scalars(select(TestResultRow.test_id).where(TestResultRow.run_id == run_id))
    )
    missing = [
        _test_values(run_id, position, result)
        for position, result in enumerate(results)
        if result.test_id not in recorded
    ]
    if missing:  # Core inserts: a worker stores thousands of these, the ORM's flush is slow
        session.execute(insert(TestResultRow), missing)
    _copy_score(run, score)
    run.cost_usd = total_cost(r.cost_usd for r in results)
    run.completed_at = now
    run.duration_ms = (now - run.started_at).total_seconds() * 1000 if run.started_at else None

    certification = session.get(Certification, run.certification_id)
    assert certification is not None
    certification.started_at = run.started_at
    certification.completed_at = now
    certification.duration_ms = run.duration_ms
    certification.last_run_id = run.id
    if score.status is CertificationStatus.INCOMPLETE:
        # No verdict on the model: the certification says why, and keeps the figures and
        # validity of the verdict it had (which stays valid until it expires).
        certification.status = score.status.value
        certification.error_message = redact_optional(score.error_message)
        session.flush()
        return certification
    _copy_score(certification, score)
    certification.simulated = run.simulated
    if score.status.is_valid_verdict:
        certification.certified_at = now
        certification.expires_at = now + CERTIFICATION_VALIDITY
    else:
        certification.certified_at = None
        certification.expires_at = None
    session.flush()
    return certification


def record_test(session: Session, run_id: int, position: int, result: TestResult) -> None:
    """Store one finished test as soon as it ends, so progress is visible while a run goes
    on. Replaces an earlier row of the same test (a step re-executed after a crash).
    Core statements on the session's connection: the ORM's bulk path costs more CPU than
    the two statements themselves (one test row per test, on every worker's hot path)."""
    connection = session.connection()
    connection.execute(
        delete(TestResultRow).where(
            TestResultRow.run_id == run_id, TestResultRow.test_id == result.test_id
        )
    )
    connection.execute(insert(TestResultRow).values(_test_values(run_id, position, result)))


def stored_result(session: Session, run_id: int, test_id: str) -> TestResult | None:
    """A stored test back as the engine's TestResult (the row keeps all of it). A Core
    row, not an ORM object: read before every test step, on the worker's hot path."""
    row = (
        session.connection()
        .execute(
            select(TestResultRow.__table__).where(
                TestResultRow.run_id == run_id, TestResultRow.test_id == test_id
            )
        )
        .first()
    )
    if row is None:
        return None
    return TestResult(
        test_id=row.test_id,
        title=row.title,
        outcome=TestOutcome(row.outcome),
        detail=row.detail or "",
        latency_ms=row.latency_ms,
        ttft_ms=row.ttft_ms,
        retries=row.retries,
        attempts=row.attempts,
        error_category=ErrorCategory(row.error_category) if row.error_category else None,
        error_severity=Severity(row.error_severity) if row.error_severity else None,
        error_code=row.error_code,
        http_status=row.http_status,
        error_message=row.error_message,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        throttled_s=row.throttled_s or 0.0,
        rate_limited=row.rate_limited or 0,
        started_at=row.started_at or utcnow(),
        duration_ms=row.duration_ms or 0.0,
        suite=row.suite,
        weight=row.weight if row.weight is not None else 1.0,
        required=bool(row.required),
        assertions=row.assertions,
        cost_usd=row.cost_usd,
    )


def count_job_result(session: Session, job_id: str, *, succeeded: bool) -> bool:
    """Add one finished certification to its job's totals (atomic UPDATE, no lost counts);
    True when that completed the job."""
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            processed=Job.processed + 1,
            succeeded=Job.succeeded + (1 if succeeded else 0),
            failed=Job.failed + (0 if succeeded else 1),
        )
    )
    completed = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.processed >= Job.total,
            Job.status.not_in((JobStatus.CANCELLED.value, JobStatus.COMPLETED.value)),
        )
        .values(status=JobStatus.COMPLETED.value, completed_at=utcnow())
    )
    return bool(getattr(completed, "rowcount", 0))


def abort_run(session: Session, run_id: int, status: CertificationStatus, message: str) -> bool:
    """Close a run that could not finish (cancelled, or our own fault: ERROR); False when
    it was closed already (nothing changes)."""
    now = utcnow()
    run = session.get(CertificationRun, run_id, with_for_update=True)
    if run is None or run.status != CertificationStatus.RUNNING.value:
        return False
    message = redact(message)
    run.status = status.value
    run.error_message = message
    # What the tests it ran did cost (a cancelled run still paid for them).
    run.cost_usd = session.scalar(
        select(func.sum(TestResultRow.cost_usd)).where(TestResultRow.run_id == run_id)
    )
    run.completed_at = now
    certification = session.get(Certification, run.certification_id)
    if certification is not None and certification.status == CertificationStatus.RUNNING.value:
        certification.status = status.value
        certification.error_message = message
        certification.completed_at = now
        certification.last_run_id = run.id
        # certified_at / expires_at stay: a cancelled run, or our own error, says nothing
        # about the model, so the verdict it was renewing stays valid until it expires.
    session.flush()
    return True


def cancel_open_runs(
    connection: Connection, *, job_id: str, deployment_id: int, region: str, message: str
) -> None:
    """Close the RUNNING runs of one (job, deployment, region) as CANCELLED, in the caller's
    transaction (a run that will never finish: its workflow is starting over)."""
    connection.execute(
        update(CertificationRun)
        .where(
            CertificationRun.job_id == job_id,
            CertificationRun.deployment_id == deployment_id,
            CertificationRun.region == region,
            CertificationRun.status == CertificationStatus.RUNNING.value,
        )
        .values(
            status=CertificationStatus.CANCELLED.value,
            error_message=redact(message),
            completed_at=utcnow(),
        )
    )


def _test_values(run_id: int, position: int, result: TestResult) -> dict[str, Any]:
    return dict(
        run_id=run_id,
        position=position,
        test_id=result.test_id,
        title=result.title,
        outcome=result.outcome.value,
        detail=redact(result.detail),
        latency_ms=result.latency_ms,
        ttft_ms=result.ttft_ms,
        retries=result.retries,
        attempts=result.attempts,
        error_category=result.error_category.value if result.error_category else None,
        error_severity=result.error_severity.value if result.error_severity else None,
        error_code=result.error_code,
        http_status=result.http_status,
        error_message=redact_optional(result.error_message),
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        throttled_s=result.throttled_s,
        rate_limited=result.rate_limited,
        started_at=result.started_at,
        duration_ms=result.duration_ms,
        suite=result.suite,
        weight=result.weight,
        required=result.required,
        # A judge's reasoning or a detail may quote an answer that echoed a key.
        assertions=redact_value(result.assertions),
        cost_usd=result.cost_usd,
    )
