"""Each simulation profile yields the verdict and error category a user would expect
(the table in the README), through the real service and store."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.certify.service import CertificationReport, certify
from modelcert.demo import DEMO_DEPLOYMENTS, seed_demo_catalog
from modelcert.domain import Badge, CertificationStatus
from modelcert.domain import ErrorCategory as C
from modelcert.providers.registry import ProviderPool
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, TestResultRow, utcnow

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


async def test_every_profile_gets_the_expected_verdict(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    with transaction(factory) as session:
        ids = dict(
            zip((d.profile for d in DEMO_DEPLOYMENTS), seed_demo_catalog(session), strict=True)
        )
    assert set(ids) == set(EXPECTED), "every profile has an expectation"
    pool = ProviderPool()
    jobs = [
        (profile, region, certify(factory, settings, pool, ids[profile], region))
        for profile, regions in EXPECTED.items()
        for region in regions
    ]
    reports: list[CertificationReport] = await asyncio.gather(*(job for _, _, job in jobs))
    await pool.aclose()

    for (profile, region, _), report in zip(jobs, reports, strict=True):
        status, category, badges = EXPECTED[profile][region]
        score = report.score
        assert (score.status, score.error_category) == (status, category), (profile, region)
        assert score.badge in badges, (profile, region, score.badge)
        assert report.simulated

    by_profile = {profile: r for (profile, _, _), r in zip(jobs, reports, strict=True)}
    assert by_profile["flaky"].score.total_retries > 0
    assert by_profile["quota-limited"].score.total_retries > 0
    assert "don't have access" in (by_profile["access-denied"].score.error_message or "")


@pytest.mark.parametrize("runs", [2])
async def test_runs_are_kept_and_one_current_certification_per_region(
    factory: sessionmaker[Session], settings: Settings, runs: int
) -> None:
    with transaction(factory) as session:
        seed_demo_catalog(session)
    pool = ProviderPool()
    for _ in range(runs):
        await certify(factory, settings, pool, "sim/aurora-fast", "us-east-1")
    report = await certify(factory, settings, pool, "sim/fjord-denied", "us-east-1")
    await pool.aclose()

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
            .where(TestResultRow.run_id == report.run_id)
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
    pool = ProviderPool()
    report = await certify(factory, settings, pool, "sim/aurora-fast", "eu-west-1")
    await pool.aclose()
    with factory() as session:
        rows = session.scalars(
            select(TestResultRow).where(TestResultRow.run_id == report.run_id)
        ).all()
    streamed = next(r for r in rows if r.test_id == "streaming")
    assert streamed.latency_ms and streamed.ttft_ms and streamed.ttft_ms < streamed.latency_ms
    usage = next(r for r in rows if r.test_id == "token-usage")
    assert usage.input_tokens and usage.output_tokens


async def test_an_interrupted_certification_is_recorded_as_cancelled(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    with transaction(factory) as session:
        seed_demo_catalog(session)
    pool = ProviderPool()
    task = asyncio.create_task(certify(factory, settings, pool, "sim/basalt-slow", "us-east-1"))
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await pool.aclose()
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
    pool = ProviderPool()
    await certify(factory, settings, pool, "sim/aurora-fast", "us-east-1")
    await pool.aclose()
    now = utcnow()
    with transaction(factory) as session:
        cert = session.scalars(select(Certification)).one()
        assert cert.status == "CERTIFIED" and cert.is_valid(now)
        deployment = repo.find_deployment(session, cert.deployment_id)
        renewal = repo.begin_run(session, deployment, "us-east-1", simulated=True)
        assert cert.status == "RUNNING" and cert.is_valid(now)
        repo.abort_run(session, renewal.id, CertificationStatus.CANCELLED, "cancelled")
        assert cert.status == "CANCELLED" and cert.is_valid(now)
        assert cert.expires_at is not None
        assert not cert.is_valid(cert.expires_at)  # and it still expires
