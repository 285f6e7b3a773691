"""Certify through the path the service runs — queued by the enqueuer the API uses, run by
a worker's durable workflow in this process, read back from the store — and hand the
results back as plain values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import JobKind
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.job_summary import job_summary
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, TestResultRow
from tests.support.inprocess import StartWorker


@dataclass(frozen=True)
class TestRow:
    __test__ = False

    test_id: str
    outcome: str
    error_category: str | None
    error_code: str | None
    http_status: int | None
    error_message: str | None
    retries: int
    throttled_s: float
    rate_limited: int


@dataclass(frozen=True)
class Verdict:
    status: str
    error_category: str | None
    error_message: str | None
    total_retries: int
    simulated: bool
    tests: tuple[TestRow, ...]

    def test(self, test_id: str) -> TestRow:
        return next(t for t in self.tests if t.test_id == test_id)


def certify_queued(
    factory: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    pairs: Sequence[tuple[str, str]],
) -> dict[tuple[str, str], Verdict]:
    """Certify each (deployment ref, region) in one job; the verdicts by the same keys."""
    with factory() as session:
        ids = {ref: repo.find_deployment(session, ref).id for ref, _ in pairs}
    targets = [(ids[ref], region) for ref, region in pairs]
    job = enqueuer.enqueue(factory, targets, kind=JobKind.MULTIPLE)
    assert job.job_id is not None and len(job.queued) == len(targets)
    regions = tuple(dict.fromkeys(region for _, region in pairs))
    start_worker(regions=regions, certification_concurrency=len(targets)).drain()
    verdicts: dict[tuple[str, str], Verdict] = {}
    with transaction(factory) as session:
        summary = job_summary(session, job.job_id)
        assert (summary["status"], summary["processed"]) == ("COMPLETED", len(targets))
        for ref, region in pairs:
            cert = session.scalars(
                select(Certification).where(
                    Certification.deployment_id == ids[ref], Certification.region == region
                )
            ).one()
            rows = session.scalars(
                select(TestResultRow)
                .where(TestResultRow.run_id == cert.last_run_id)
                .order_by(TestResultRow.position)
            ).all()
            verdicts[(ref, region)] = Verdict(
                status=cert.status,
                error_category=cert.error_category,
                error_message=cert.error_message,
                total_retries=cert.total_retries or 0,
                simulated=bool(cert.simulated),
                tests=tuple(
                    TestRow(
                        r.test_id,
                        r.outcome,
                        r.error_category,
                        r.error_code,
                        r.http_status,
                        r.error_message,
                        r.retries,
                        r.throttled_s,
                        r.rate_limited,
                    )
                    for r in rows
                ),
            )
    return verdicts


# What a behaviour should give: (status, decisive category, the provider's message kept
# or None for any, whether the runner retried).
Expected = tuple[str, str | None, str | None, bool]


def assert_verdicts(verdicts: dict[str, Verdict], expected: dict[str, Expected]) -> None:
    """Each deployment (by model id) got the verdict, category, message and retries expected."""
    for model_id, (status, category, message, retried) in expected.items():
        verdict = verdicts[model_id]
        assert (verdict.status, verdict.error_category) == (status, category), model_id
        assert not verdict.simulated
        if message is not None:
            assert verdict.error_message == message, model_id
        assert (verdict.total_retries > 0) is retried, (model_id, verdict.total_retries)
