"""Each simulation profile yields the verdict and error category a user would expect (the
table in the README), on the path the service runs: queued by the enqueuer the API uses,
run by a worker's durable workflow, read back from the store."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.catalog.demo import DEMO_DEPLOYMENTS, seed_demo_catalog
from modelcert.domain import Badge, CertificationStatus, JobKind
from modelcert.domain import ErrorCategory as C
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.job_summary import job_summary
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, TestResultRow, utcnow
from modelcert.store.runs import abort_run, begin_run
from tests.support.inprocess import StartWorker, certify_here

CERTIFIED = CertificationStatus.CERTIFIED
FAILED = CertificationStatus.FAILED

# profile -> region -> (status, decisive category, acceptable badges)
EXPECTED: dict[str, dict[str, tuple[CertificationStatus, C | None, set[Badge]]]] = {
    "healthy-fast": {"us-east-1": (CERTIFIED, None, {Badge.PREMIUM})},
    "healthy-slow": {"eu-west-1": (CERTIFIED, None, {Badge.RECOMMENDED})},
    "flaky": {"us-east-1": (CERTIFIED, None, {Badge.PREMIUM, Badge.RECOMMENDED})},
    "quota-limited": {"us-east-1": (CERTIFIED, None, {Badge.PREMIUM, Badge.RECOMMENDED})},
    "unavailable-in-region": {
        "us-east-1": (CERTIFIED, None, {Badge.PREMIUM}),
        "eu-west-1": (FAILED, C.UNAVAILABLE, {Badge.UNAVAILABLE}),
    },
    "access-denied": {"us-east-1": (FAILED, C.PERMISSION_ERROR, {Badge.UNAVAILABLE})},
    "bad-credentials": {"us-east-1": (FAILED, C.AUTHENTICATION_ERROR, {Badge.UNAVAILABLE})},
    "empty-answers": {"us-east-1": (FAILED, C.QUALITY_ISSUE, {Badge.UNAVAILABLE})},
    "broken-stream": {"us-east-1": (FAILED, C.NETWORK_ERROR, {Badge.UNAVAILABLE})},
    "hangs": {"us-east-1": (FAILED, C.TIMEOUT, {Badge.UNAVAILABLE})},
}


def test_every_profile_gets_the_expected_verdict_through_the_queue(
    factory: sessionmaker[Session], enqueuer: Enqueuer, start_worker: StartWorker
) -> None:
    with transaction(factory) as session:
        ids = dict(
            zip((d.profile for d in DEMO_DEPLOYMENTS), seed_demo_catalog(session), strict=True)
        )
    assert set(ids) == set(EXPECTED), "every profile has an expectation"
    targets = [(ids[p], region) for p, regions in EXPECTED.items() for region in regions]
    job = enqueuer.enqueue(factory, targets, kind=JobKind.MULTIPLE)
    assert job.job_id and len(job.queued) == len(targets)

    start_worker(regions=("us-east-1", "eu-west-1"), certification_concurrency=16).drain()

    with transaction(factory) as session:
        summary = job_summary(session, job.job_id)
        assert (summary["status"], summary["processed"]) == ("COMPLETED", len(targets))
        certifications = {
            (c.deployment_id, c.region): c for c in session.scalars(select(Certification))
        }
        for profile, regions in EXPECTED.items():
            for region, (status, category, badges) in regions.items():
                cert = certifications[(ids[profile], region)]
                got = (cert.status, cert.error_category)
                assert got == (status.value, category.value if category else None), profile
                assert cert.badge in {b.value for b in badges}, (profile, region, cert.badge)
                assert cert.simulated and cert.job_id == job.job_id
                run = session.get(CertificationRun, cert.last_run_id)
                assert run is not None and run.executor_id == "in-process"
                assert run.status == cert.status and run.tests_total > 0
        by_profile = {p: certifications[(ids[p], next(iter(r)))] for p, r in EXPECTED.items()}
        assert by_profile["flaky"].total_retries > 0
        # The quota (2 calls/s, a burst of 2) refuses calls that outpace it: if this run's
        # calls did (they do, unless the machine is so loaded that they were spaced out),
        # some were refused and retried, and it is still CERTIFIED.
        quota = by_profile["quota-limited"]
        rows = session.scalars(
            select(TestResultRow).where(TestResultRow.run_id == quota.last_run_id)
        ).all()
        started = [r.started_at for r in rows if r.started_at is not None]
        window_s = (max(started) - min(started)).total_seconds() + 1
        calls = sum(r.attempts for r in rows) - (quota.total_retries or 0)
        assert quota.total_retries > 0 or calls <= 2 + 2.0 * window_s, (calls, window_s)
        assert "don't have access" in (by_profile["access-denied"].error_message or "")
        # Fail fast: the hung deployment spent two test timeouts, not twelve.
        hung = session.scalars(
            select(TestResultRow)
            .where(TestResultRow.run_id == by_profile["hangs"].last_run_id)
            .order_by(TestResultRow.position)
        ).all()
        assert [t.outcome for t in hung[:2]] == ["FAILED", "FAILED"]
        assert all(t.outcome == "SKIPPED" for t in hung[2:])
        assert "unresponsive" in (hung[-1].detail or "")


@pytest.mark.parametrize("runs", [2])
async def test_runs_are_kept_and_one_current_certification_per_region(
    factory: sessionmaker[Session], settings: Settings, runs: int
) -> None:
    with transaction(factory) as session:
        seed_demo_catalog(session)
    for _ in range(runs):
        await certify_here(settings, "sim/aurora-fast", "us-east-1")
    outcome = await certify_here(settings, "sim/fjord-denied", "us-east-1")

    with factory() as session:
        certs = session.scalars(select(Certification)).all()
        assert len(certs) == 2
        aurora = next(c for c in certs if c.deployment.provider_model_id == "aurora-fast")
        history = session.scalars(
            select(CertificationRun).where(CertificationRun.deployment_id == aurora.deployment_id)
        ).all()
        assert len(history) == runs
        assert aurora.last_run_id == max(r.id for r in history)
        assert aurora.status == "CERTIFIED" and aurora.simulated
        assert aurora.expires_at is not None and aurora.certified_at is not None
        assert (aurora.expires_at - aurora.certified_at).days == 7

        tests = session.scalars(
            select(TestResultRow)
            .where(TestResultRow.run_id == outcome.run_id)
            .order_by(TestResultRow.position)
        ).all()
        first = tests[0]
        assert first.error_category == "PERMISSION_ERROR"
        assert first.error_code == "AccessDeniedException" and first.http_status == 403
        assert "don't have access" in (first.error_message or "")
        assert all(t.outcome == "SKIPPED" for t in tests[1:])
        denied = next(c for c in certs if c.deployment.provider_model_id == "fjord-denied")
        assert denied.status == "FAILED" and denied.expires_at is None


async def test_tokens_latency_and_ttft_are_recorded(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    with transaction(factory) as session:
        seed_demo_catalog(session)
    outcome = await certify_here(settings, "sim/aurora-fast", "eu-west-1")
    with factory() as session:
        rows = session.scalars(
            select(TestResultRow).where(TestResultRow.run_id == outcome.run_id)
        ).all()
    streamed = next(r for r in rows if r.test_id == "streaming")
    assert streamed.latency_ms and streamed.ttft_ms and streamed.ttft_ms < streamed.latency_ms
    usage = next(r for r in rows if r.test_id == "token-usage")
    assert usage.input_tokens and usage.output_tokens


async def test_an_interrupted_certification_is_recorded_as_cancelled(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    import asyncio

    with transaction(factory) as session:
        seed_demo_catalog(session)
    task = asyncio.create_task(certify_here(settings, "sim/basalt-slow", "us-east-1"))
    while True:  # until the run is open: then interrupt it, as Ctrl+C would
        await asyncio.sleep(0.05)
        with factory() as session:
            if session.scalars(select(CertificationRun)).first() is not None:
                break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with factory() as session:
        run = session.scalars(select(CertificationRun)).one()
        cert = session.scalars(select(Certification)).one()
    assert run.status == cert.status == "CANCELLED"
    assert run.completed_at is not None and cert.expires_at is None


async def test_a_renewal_keeps_the_verdict_it_renews_valid_until_it_ends(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    """Re-certifying a valid certification (by hand or by the schedule, hours before it
    expires) must not make it invalid while the renewal waits or runs, nor when the
    renewal is cancelled; only an invalid verdict does."""
    with transaction(factory) as session:
        seed_demo_catalog(session)
    await certify_here(settings, "sim/aurora-fast", "us-east-1")
    now = utcnow()
    with transaction(factory) as session:
        cert = session.scalars(select(Certification)).one()
        assert cert.status == "CERTIFIED" and cert.is_valid(now)
        deployment = repo.find_deployment(session, cert.deployment_id)
        renewal = begin_run(session, deployment.id, "us-east-1", simulated=True)
        assert cert.status == "RUNNING" and cert.is_valid(now)
        abort_run(session, renewal.id, CertificationStatus.CANCELLED, "cancelled")
        assert cert.status == "CANCELLED" and cert.is_valid(now)
        assert cert.expires_at is not None
        assert not cert.is_valid(cert.expires_at)  # and it still expires


async def test_an_interruption_while_the_run_opens_leaves_nothing_running(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    import asyncio

    with transaction(factory) as session:
        seed_demo_catalog(session)
    for _ in range(5):  # the interruption lands at various points of the opening
        task = asyncio.create_task(certify_here(settings, "sim/aurora-fast", "us-east-1"))
        await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with factory() as session:
        statuses = [run.status for run in session.scalars(select(CertificationRun))]
        cert = session.scalars(select(Certification)).first()
    assert "RUNNING" not in statuses, statuses
    assert cert is None or cert.status != "RUNNING"
