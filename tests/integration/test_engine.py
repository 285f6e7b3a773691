"""The one certification engine, on SQLite and PostgreSQL, through the durable workflow
(an in-process worker) and in-process (as `modelcert certify` runs it): no verdict from
missing evidence, quotas kept apart, dead endpoints failed fast, an unsupported feature
kept to its own test, server-side faults told from network ones."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import Capabilities, CertificationStatus, ErrorCategory, JobKind
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.job_summary import job_summary
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, TestResultRow, utcnow
from tests.support.inprocess import StartWorker, certify_here
from tests.support.workers import free_port

REGION = "us-east-1"
FULL = Capabilities(tools=True, json_output=True)


def add_lab(factory: sessionmaker[Session], **deployments: dict[str, Any]) -> None:
    """A `lab` sim provider with one deployment per keyword (model id -> options)."""
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=[REGION], config={"seed": 5})
        for model_id, options in deployments.items():
            repo.add_deployment(
                session,
                provider_slug="lab",
                provider_model_id=model_id,
                capabilities=FULL,
                options={"profile": "healthy-fast", **options},
            )


def rows_of(factory: sessionmaker[Session], run_id: int) -> list[TestResultRow]:
    with factory() as session:
        query = select(TestResultRow).where(TestResultRow.run_id == run_id)
        return list(session.scalars(query.order_by(TestResultRow.position)))


def test_a_run_cut_short_by_the_certification_timeout_is_incomplete_not_certified(
    factory: sessionmaker[Session],
    settings: Settings,
    enqueuer: Enqueuer,
    start_worker: StartWorker,
) -> None:
    add_lab(factory, steady={"latency_ms": 150})
    import asyncio

    first = asyncio.run(certify_here(settings, "lab/steady", REGION))
    assert first.score.status is CertificationStatus.CERTIFIED
    # 13 calls of 150 ms do not fit in 0.8 s: the queue's run is cut short.
    job = enqueuer.enqueue(factory, [("lab/steady", REGION)], kind=JobKind.SINGLE)
    assert job.job_id
    start_worker(regions=(REGION,), certification_timeout_ms=800).drain()

    with transaction(factory) as session:
        summary = job_summary(session, job.job_id)
        assert (summary["status"], summary["succeeded"], summary["failed"]) == ("COMPLETED", 0, 1)
        cert = session.scalars(select(Certification)).one()
        run = session.get(CertificationRun, cert.last_run_id)
        assert run is not None and run.id != first.run_id
        assert run.status == cert.status == "INCOMPLETE"
        assert (run.rating, run.badge, run.score) == (None, None, None)
        assert "CERTIFICATION_TIMEOUT" in (run.error_message or "")
        # The verdict it was renewing stays valid until it expires, with its figures.
        assert cert.is_valid(utcnow()) and cert.rating == first.score.rating
        assert cert.certified_at is not None
    outcomes = [t.outcome for t in rows_of(factory, run.id)]
    assert "PASSED" in outcomes and "NOT_RUN" in outcomes and len(outcomes) == 12
    not_run = [t for t in rows_of(factory, run.id) if t.outcome == "NOT_RUN"]
    assert all("CERTIFICATION_TIMEOUT (0.8 s)" in (t.detail or "") for t in not_run)


@pytest.mark.parametrize("timeout_ms", [300, 700, 1200])
async def test_no_certified_run_has_a_test_not_run_for_lack_of_time(
    factory: sessionmaker[Session], settings: Settings, timeout_ms: int
) -> None:
    add_lab(factory, steady={"latency_ms": 100})
    short = settings.model_copy(update={"certification_timeout_ms": timeout_ms})
    await certify_here(short, "lab/steady", REGION)
    with factory() as session:
        runs = list(session.scalars(select(CertificationRun)))
    assert runs
    for run in runs:
        missing = [t for t in rows_of(factory, run.id) if t.outcome == "NOT_RUN"]
        if missing:
            assert run.status == "INCOMPLETE" and run.badge is None
        assert run.status != "CERTIFIED" or not missing


def test_one_models_429s_never_slow_another_model_of_the_same_provider(
    factory: sessionmaker[Session],
    settings: Settings,
    enqueuer: Enqueuer,
    start_worker: StartWorker,
) -> None:
    """Two deployments of one provider in one region, each with its own quota: one is
    refused (429) on every call, the other is healthy. Bedrock's and OpenAI's quotas are
    per model: the healthy one must not wait on the other's Retry-After."""
    throttled = {"error_rate_429": 1.0, "retry_after_s": 0.5, "test_timeout_s": 1.5}
    add_lab(
        factory,
        healthy={"latency_ms": 60, "quota_rps": 50},
        throttled_a=throttled,
        throttled_b=throttled,
    )
    import asyncio

    alone = asyncio.run(certify_here(settings, "lab/healthy", REGION)).duration_s
    targets = [(name, REGION) for name in ("lab/throttled_a", "lab/throttled_b", "lab/healthy")]
    job = enqueuer.enqueue(factory, targets, kind=JobKind.MULTIPLE)
    assert job.job_id
    start_worker(regions=(REGION,)).drain()

    with factory() as session:
        runs = {
            run.deployment_id: run
            for run in session.scalars(
                select(CertificationRun).where(CertificationRun.job_id == job.job_id)
            )
        }
        ids = {d.provider_model_id: d.id for d in repo.list_deployments(session)}
    healthy = runs[ids["healthy"]]
    assert healthy.status == "CERTIFIED"
    assert healthy.duration_ms is not None
    queued = healthy.duration_ms / 1000
    assert queued <= alone * 2 + 1.0, (queued, alone)
    for name in ("throttled_a", "throttled_b"):
        refused = runs[ids[name]]
        assert (refused.status, refused.error_category) == ("FAILED", "RATE_LIMIT")
        # Fail fast: about two test budgets (2 × 1.5 s), not twelve.
        assert refused.duration_ms is not None and refused.duration_ms / 1000 <= 2.5 * 1.5 + 1
    # Each test's 429s are stored with it (what the overview's throttling column counts).
    with factory() as session:
        rows = session.execute(
            select(TestResultRow.run_id, func.sum(TestResultRow.rate_limited))
            .where(TestResultRow.run_id.in_([run.id for run in runs.values()]))
            .group_by(TestResultRow.run_id)
        ).all()
    answers = {run_id: int(total) for run_id, total in rows}
    assert answers[healthy.id] == 0
    assert all(answers[runs[ids[name]].id] >= 2 for name in ("throttled_a", "throttled_b"))


@pytest.mark.parametrize(
    ("kind", "category"),
    [
        ("never-answers", ErrorCategory.TIMEOUT),
        ("refuses-connections", ErrorCategory.NETWORK_ERROR),
        ("throttles-every-call", ErrorCategory.RATE_LIMIT),
        ("server-fails-every-call", ErrorCategory.SERVER_ERROR),
    ],
)
async def test_a_dead_endpoint_gets_its_verdict_within_two_and_a_half_test_timeouts(
    factory: sessionmaker[Session], settings: Settings, kind: str, category: ErrorCategory
) -> None:
    # 2 s: on a saturated machine a refused connection must not take a whole budget.
    budget_s = 2.0
    with transaction(factory) as session:
        if kind == "refuses-connections":
            repo.add_provider(
                session,
                slug="dead",
                kind="openai",
                base_url=f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
                config={"test_timeout_s": budget_s},
            )
            repo.add_deployment(session, provider_slug="dead", provider_model_id="gone")
        else:
            options = {
                "never-answers": {"profile": "hangs"},
                "throttles-every-call": {"error_rate_429": 1.0, "retry_after_s": 0.2},
                "server-fails-every-call": {"error_rate_5xx": 1.0},
            }[kind]
            repo.add_provider(session, slug="dead", kind="sim", regions=[REGION])
            repo.add_deployment(
                session,
                provider_slug="dead",
                provider_model_id="gone",
                options={"profile": "healthy-fast", "test_timeout_s": budget_s, **options},
            )
    region = "global" if kind == "refuses-connections" else REGION
    started = time.monotonic()
    outcome = await certify_here(settings, "dead/gone", region)
    elapsed = time.monotonic() - started
    assert outcome.score.status is CertificationStatus.FAILED
    assert outcome.score.error_category is category
    assert elapsed <= 2.5 * budget_s + 1.0, elapsed
    executed = [r for r in outcome.results if r.outcome.executed]
    assert len(executed) == 2
    assert "unresponsive" in outcome.results[-1].detail


async def test_flaky_but_working_deployments_stay_certified(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    add_lab(factory, flaky={"profile": "flaky", "error_rate_5xx": 0.3, "retry_after_s": 0.05})
    outcome = await certify_here(settings, "lab/flaky", REGION)
    assert outcome.score.status is CertificationStatus.CERTIFIED
    assert outcome.score.total_retries > 0
    retried = [r for r in outcome.results if r.retries]
    assert retried


async def test_a_rejected_optional_feature_fails_its_test_not_the_deployment(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    add_lab(factory, partial={"unsupported": ["tools", "json_output"]})
    outcome = await certify_here(settings, "lab/partial", REGION)
    by_id = {r.test_id: r for r in outcome.results}
    for test_id, feature in (("tool-calling", "tools"), ("json-output", "json_output")):
        result = by_id[test_id]
        assert result.error_category is ErrorCategory.UNSUPPORTED_FEATURE, test_id
        assert result.detail.startswith(f"{feature} not supported by this endpoint")
        assert "not supported by model partial" in (result.error_message or "")
        assert result.http_status == 400 and result.error_code == "ValidationException"
    # Nothing was skipped for it, and the deployment is certified on the rest.
    assert all(r.outcome.executed for r in outcome.results)
    assert outcome.score.status is CertificationStatus.CERTIFIED


async def test_a_validation_error_on_the_basic_request_still_fails_the_deployment(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    add_lab(factory, broken={"profile": "no-such-profile"})
    outcome = await certify_here(settings, "lab/broken", REGION)
    assert outcome.score.status is CertificationStatus.FAILED
    assert outcome.score.error_category is ErrorCategory.CONFIGURATION_ERROR
    assert all(r.outcome.value == "SKIPPED" for r in outcome.results[1:])


async def test_a_provider_that_cannot_be_built_is_a_classified_failure(
    factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELCERT_TEST_MISSING_KEY", raising=False)
    with transaction(factory) as session:
        repo.add_provider(
            session,
            slug="keyless",
            kind="openai",
            base_url="http://127.0.0.1:9/v1",
            config={"api_key_env": "MODELCERT_TEST_MISSING_KEY"},
        )
        repo.add_deployment(session, provider_slug="keyless", provider_model_id="m")
    outcome = await certify_here(settings, "keyless/m", "global")
    assert outcome.score.status is CertificationStatus.FAILED
    assert outcome.score.error_category is ErrorCategory.AUTHENTICATION_ERROR
    assert "MODELCERT_TEST_MISSING_KEY" in (outcome.score.error_message or "")
    assert not outcome.simulated


def test_a_worker_runs_at_most_its_concurrency_across_regions(
    factory: sessionmaker[Session],
    settings: Settings,
    enqueuer: Enqueuer,
    start_worker: StartWorker,
) -> None:
    """CERTIFICATION_CONCURRENCY bounds one worker's certifications in flight, all its
    region queues together; the worker's in-flight view (/health) sees them."""
    with transaction(factory) as session:
        repo.add_provider(
            session, slug="lab", kind="sim", regions=["us-east-1", "eu-west-1"], config={}
        )
        for index in range(3):
            repo.add_deployment(
                session,
                provider_slug="lab",
                provider_model_id=f"m{index}",
                options={"profile": "healthy-fast", "latency_ms": 40},
            )
    targets = [(f"lab/m{i}", region) for i in range(3) for region in ("us-east-1", "eu-west-1")]
    job = enqueuer.enqueue(factory, targets, kind=JobKind.MULTIPLE)
    assert job.job_id
    worker = start_worker(regions=("us-east-1", "eu-west-1"), certification_concurrency=2)
    seen: set[int] = set()
    while worker.pending_work():
        seen.add(len(worker.in_flight))
        status, health = worker_health(worker.health.port)
        assert status in (200, 503) and health["in_flight_count"] <= 2
        time.sleep(0.02)
    worker.drain()
    assert max(seen) == 2, seen  # never more, and the registry really tracked them
    with factory() as session:
        runs = list(session.scalars(select(CertificationRun)))
    assert len(runs) == 6
    events: list[tuple[Any, int]] = []
    for run in runs:
        assert run.started_at is not None and run.completed_at is not None
        events += [(run.started_at, 1), (run.completed_at, -1)]
    running = peak = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):  # ends first on ties
        running += change
        peak = max(peak, running)
    assert peak <= 2, peak


def worker_health(port: int) -> tuple[int, Any]:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.parametrize("callback", ["plain", "coroutine"])
def test_progress_sees_every_test_in_order_as_it_ends(
    factory: sessionmaker[Session], settings: Settings, callback: str
) -> None:
    """`modelcert certify` shows progress through on_result: every planned test, skipped
    ones too, in plan order, a test that ran once its row is stored (skips are stored
    with the verdict); a coroutine callback is awaited."""
    import asyncio

    from modelcert.certify.engine import CertificationEngine, CertificationRequest
    from modelcert.store.runs import RunStore

    add_lab(factory, steady={}, dead={"profile": "access-denied"})
    seen: list[tuple[str, int, int, str]] = []

    def plain(position: int, total: int, result: Any) -> None:
        if result.outcome.value != "SKIPPED":  # a test that ran is stored before it is told
            with factory() as session:
                stored = session.scalar(
                    select(TestResultRow).order_by(TestResultRow.id.desc()).limit(1)
                )
            assert stored is not None
            assert (stored.test_id, stored.position) == (result.test_id, position)
        seen.append((model, position, total, result.outcome.value))

    async def coroutine(position: int, total: int, result: Any) -> None:
        await asyncio.sleep(0)
        plain(position, total, result)

    async def certify(deployment: str) -> None:
        engine = CertificationEngine(RunStore(factory), settings)
        try:
            await engine.certify(
                CertificationRequest(deployment, REGION),
                on_result=plain if callback == "plain" else coroutine,
            )
        finally:
            await engine.aclose()

    for model in ("steady", "dead"):
        asyncio.run(certify(f"lab/{model}"))
    for model in ("steady", "dead"):
        mine = [s for s in seen if s[0] == model]
        assert [s[1] for s in mine] == list(range(12))
        assert all(s[2] == 12 for s in mine)
    assert {s[3] for s in seen if s[0] == "steady"} == {"PASSED"}
    assert "SKIPPED" in {s[3] for s in seen if s[0] == "dead"}
