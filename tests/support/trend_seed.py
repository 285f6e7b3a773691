"""Runs with known latencies, TTFTs and outcomes at known times, stored as the engine
stores them (a Certification, its CertificationRuns, their TestResultRows), for the trend
tests: what the percentiles and pass rates must be is worked out in the docstring of
`seed_trend_runs`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, TestResultRow

Tests = list[tuple[str, float | None, float | None]]  # (outcome, latency_ms, ttft_ms) each

# (hours before now, status, [(outcome, latency_ms, ttft_ms), ...]) of lab/quick@us-east-1.
PLAN: list[tuple[float, str, Tests]] = [
    (
        2,
        "CERTIFIED",
        [
            ("PASSED", 100, 10),
            ("PASSED", 200, 20),
            ("PASSED", 300, 30),
            ("FAILED", 400, 40),
        ],
    ),
    (72, "FAILED", [("PASSED", 1000, None), ("FAILED", 2000, None), ("SKIPPED", None, None)]),
    (60 * 24, "CERTIFIED", [("PASSED", 5000, 500)]),
    (100 * 24, "CERTIFIED", [("PASSED", 77_777, 7)]),  # older than every range
    (-1, "CERTIFIED", [("FAILED", 88_888, 8)]),  # after now: in no range
]


@dataclass
class Seeded:
    deployment_id: int
    other_deployment_id: int


def add_run(
    session: Session,
    certification: Certification,
    started_at: datetime,
    status: str,
    tests: Tests,
) -> None:
    run = CertificationRun(
        certification_id=certification.id,
        deployment_id=certification.deployment_id,
        region=certification.region,
        status=status,
        started_at=started_at,
        completed_at=started_at + timedelta(seconds=5),
        tests_total=len(tests),
        tests_passed=sum(1 for t in tests if t[0] == "PASSED"),
        tests_failed=sum(1 for t in tests if t[0] == "FAILED"),
        tests_skipped=sum(1 for t in tests if t[0] == "SKIPPED"),
    )
    session.add(run)
    session.flush()
    for position, (outcome, latency, ttft) in enumerate(tests):
        session.add(
            TestResultRow(
                run_id=run.id,
                position=position,
                test_id=f"t{position}",
                title=f"test {position}",
                outcome=outcome,
                latency_ms=latency,
                ttft_ms=ttft,
            )
        )


def seed_trend_runs(factory: sessionmaker[Session], now: datetime) -> Seeded:
    """lab/quick in us-east-1 (PLAN), plus noise that must not mix in: lab/quick in
    eu-west-1 and lab/other in us-east-1, an hour before now, latency 9,999 ms.

    24h: latencies 100, 200, 300, 400: p50 250, p95 385; TTFT p50 25, p95 38.5;
         3 passed of 4 executed: 75 %; verdicts CERTIFIED 1.
    7d:  + 1,000, 2,000: p50 350, p95 1,750; 4 of 6: 66.67 %; CERTIFIED 1, FAILED 1.
    90d: + 5,000: p50 400, p95 4,100; TTFT (+ 500) p50 30, p95 408; 5 of 7: 71.43 %;
         CERTIFIED 2, FAILED 1."""
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1", "eu-west-1"])
        quick = repo.add_deployment(session, provider_slug="lab", provider_model_id="quick")
        other = repo.add_deployment(session, provider_slug="lab", provider_model_id="other")
        session.flush()
        certifications = {}
        for deployment_id, region in (
            (quick.id, "us-east-1"),
            (quick.id, "eu-west-1"),
            (other.id, "us-east-1"),
        ):
            certification = Certification(
                deployment_id=deployment_id, region=region, status="CERTIFIED"
            )
            session.add(certification)
            certifications[(deployment_id, region)] = certification
        session.flush()
        main = certifications[(quick.id, "us-east-1")]
        for hours, status, tests in PLAN:
            add_run(session, main, now - timedelta(hours=hours), status, tests)
        for key in ((quick.id, "eu-west-1"), (other.id, "us-east-1")):
            noise = [("FAILED", 9_999.0, 999.0)]
            add_run(session, certifications[key], now - timedelta(hours=1), "FAILED", noise)
        return Seeded(quick.id, other.id)


def seed_fleet(
    factory: sessionmaker[Session],
    now: datetime,
    *,
    provider: str,
    models: Sequence[str],
    regions: Sequence[str],
    tests: Tests,
) -> list[tuple[str, str]]:
    """Provider `provider` with a deployment per model, each run once (with `tests`) in
    every region: the first pair (models[0] in regions[0]) a minute before `now`, each
    next one (model by model, region by region) a minute earlier. The pairs' labels
    (`provider/model`, region), most recently run first."""
    pairs = []
    with transaction(factory) as session:
        repo.add_provider(session, slug=provider, kind="sim", regions=list(regions))
        for model in models:
            deployment = repo.add_deployment(
                session, provider_slug=provider, provider_model_id=model
            )
            session.flush()
            for region in regions:
                certification = repo.certification_row(session, deployment.id, region)
                session.flush()
                pairs.append((f"{provider}/{model}", region))
                add_run(
                    session, certification, now - timedelta(minutes=len(pairs)), "CERTIFIED", tests
                )
    return pairs
