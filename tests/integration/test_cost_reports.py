"""What certification cost, as `store.cost_report` reads it from the runs, on SQLite and
PostgreSQL: UTC day and month buckets (a run at 23:59:59 and one a second after midnight
fall on different days, whatever the database session's time zone), grouping by
provider slug and region, the period and overall totals, the filters, a job's cost, and
runs without a cost counted as unpriced or running, never as free; and the costs of a
real llama.cpp server's certification, checked against the token counts it reports."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from modelcert.certify.engine import CertificationEngine, CertificationRequest
from modelcert.cost.estimate import RunUsage, estimate_certification_cost
from modelcert.cost.prices import Price
from modelcert.domain import CertificationStatus, JobKind
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.cost_report import cost_report, job_cost, job_run_costs, recent_usage
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, Job, TestResultRow
from modelcert.store.runs import RunStore
from tests.support.llama_server import LlamaServer


def at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


@pytest.fixture
def history(factory: sessionmaker[Session]) -> dict[str, object]:
    """Two providers, three deployments, runs over two months (costs known, unknown,
    running), one job."""
    with transaction(factory) as session:
        repo.add_provider(
            session, slug="bedrock", kind="bedrock", regions=["us-east-1", "eu-west-1"]
        )
        repo.add_provider(session, slug="lab", kind="openai", regions=["global"])
        sonnet = repo.add_deployment(
            session,
            provider_slug="bedrock",
            provider_model_id="anthropic.claude-3-5-sonnet-20240620-v1:0",
        )
        nova = repo.add_deployment(
            session, provider_slug="bedrock", provider_model_id="amazon.nova-lite-v1:0"
        )
        local = repo.add_deployment(session, provider_slug="lab", provider_model_id="smollm2")
        job = Job(kind=JobKind.MULTIPLE.value, total=3, created_by="test")
        session.add(job)
        session.flush()
        certs: dict[tuple[int, str], Certification] = {}

        def run(
            deployment_id: int,
            region: str,
            started: str,
            cost: float | None,
            status: str = CertificationStatus.CERTIFIED.value,
            *,
            job_id: str | None = None,
            tests: tuple[tuple[str, str, int, int], ...] = (),
        ) -> CertificationRun:
            key = (deployment_id, region)
            if key not in certs:
                certs[key] = Certification(deployment_id=deployment_id, region=region)
                session.add(certs[key])
                session.flush()
            row = CertificationRun(
                certification_id=certs[key].id,
                deployment_id=deployment_id,
                region=region,
                status=status,
                started_at=at(started),
                cost_usd=cost,
                job_id=job_id,
            )
            session.add(row)
            session.flush()
            for position, (test_id, outcome, tokens_in, tokens_out) in enumerate(tests):
                session.add(
                    TestResultRow(
                        run_id=row.id, position=position, test_id=test_id, title=test_id,
                        outcome=outcome, input_tokens=tokens_in, output_tokens=tokens_out,
                    )
                )  # fmt: skip
            session.flush()
            return row

        called = (("basic-prompt", "PASSED", 30, 50), ("availability", "PASSED", 40, 60))
        # 2025-09-30: the last second of September, and October's first seconds.
        run(sonnet.id, "us-east-1", "2025-09-30 23:59:59", 0.010, tests=called)
        run(sonnet.id, "us-east-1", "2025-10-01 00:00:01", 0.020, job_id=job.id, tests=called)
        run(sonnet.id, "eu-west-1", "2025-10-01 08:00:00", 0.040, job_id=job.id, tests=called)
        run(nova.id, "us-east-1", "2025-10-01 09:00:00", 0.001, job_id=job.id, tests=called)
        # No price known: it made calls, its cost is unknown (not 0).
        run(local.id, "global", "2025-10-01 10:00:00", None, tests=called)
        # Refused by a budget: no call made, nothing to count.
        run(local.id, "global", "2025-10-02 10:00:00", None, CertificationStatus.SKIPPED.value)
        run(nova.id, "eu-west-1", "2025-10-02 11:00:00", None, CertificationStatus.RUNNING.value)
        run(
            nova.id,
            "eu-west-1",
            "2025-10-02 12:00:00",
            0.0,
            tests=(("basic-prompt", "FAILED", 0, 0),),
        )
        return {"job": job.id, "sonnet": sonnet.id, "nova": nova.id}


def _on_new_york_time(session: Session) -> None:
    """A session whose time zone is not UTC: buckets must not move (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET TIME ZONE 'America/New_York'"))


def test_days_are_utc_days_grouped_by_provider_and_region(
    factory: sessionmaker[Session], history: dict[str, object]
) -> None:
    with factory() as session:
        _on_new_york_time(session)
        report = cost_report(session, by="day", since=at("2025-09-01"), until=at("2025-11-01"))
    lines = [
        (line.period, line.provider, line.region, line.runs, line.cost_usd) for line in report.lines
    ]
    assert lines == [
        ("2025-09-30", "bedrock", "us-east-1", 1, 0.01),
        ("2025-10-01", "bedrock", "eu-west-1", 1, 0.04),
        ("2025-10-01", "bedrock", "us-east-1", 2, 0.021),
        ("2025-10-01", "lab", "global", 1, None),
        ("2025-10-02", "bedrock", "eu-west-1", 2, 0.0),
        ("2025-10-02", "lab", "global", 1, None),
    ]
    by_line = {(line.period, line.provider, line.region): line for line in report.lines}
    unknown = by_line[("2025-10-01", "lab", "global")]
    assert (unknown.unpriced_runs, unknown.priced_runs) == (1, 0)
    refused = by_line[("2025-10-02", "lab", "global")]
    assert (refused.unpriced_runs, refused.priced_runs, refused.cost_usd) == (0, 0, None)
    assert by_line[("2025-10-02", "bedrock", "eu-west-1")].running == 1
    assert [(p.period, p.runs, p.cost_usd, p.unpriced_runs) for p in report.periods] == [
        ("2025-09-30", 1, 0.01, 0),
        ("2025-10-01", 4, 0.061, 1),
        ("2025-10-02", 3, 0.0, 0),
    ]
    total = report.total
    assert (total.runs, total.cost_usd, total.unpriced_runs, total.running) == (8, 0.071, 1, 1)


def test_months_and_filters(factory: sessionmaker[Session], history: dict[str, object]) -> None:
    with factory() as session:
        _on_new_york_time(session)
        months = cost_report(session, by="month")
        assert [(p.period, p.runs, p.cost_usd) for p in months.periods] == [
            ("2025-09", 1, 0.01),
            ("2025-10", 7, 0.061),
        ]
        october = cost_report(session, by="month", since=at("2025-10-01"), provider="bedrock")
        assert [(line.period, line.region, line.runs, line.cost_usd) for line in october.lines] == [
            ("2025-10", "eu-west-1", 3, 0.04),
            ("2025-10", "us-east-1", 2, 0.021),
        ]
        until = cost_report(session, by="day", until=at("2025-10-01"), region="us-east-1")
        assert [(line.period, line.cost_usd) for line in until.lines] == [("2025-09-30", 0.01)]
        job = cost_report(session, by="day", job_id=str(history["job"]))
        assert job.total.cost_usd == 0.061 and job.total.runs == 3
        nothing = cost_report(session, by="day", provider="nobody")
        assert nothing.lines == [] and nothing.total.cost_usd is None


def test_a_job_cost_is_the_sum_of_its_runs(
    factory: sessionmaker[Session], history: dict[str, object]
) -> None:
    with factory() as session:
        total = job_cost(session, str(history["job"]))
        runs = job_run_costs(session, str(history["job"]))
        empty = job_cost(session, "00000000-0000-0000-0000-000000000000")
    assert (total.runs, total.priced_runs, total.cost_usd) == (3, 3, 0.061)
    assert [(r.region, r.cost_usd) for r in runs] == [
        ("us-east-1", 0.02),
        ("eu-west-1", 0.04),
        ("us-east-1", 0.001),
    ]
    assert runs[0].deployment == "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert (empty.runs, empty.cost_usd) == (0, None)


def test_recent_usage_feeds_the_estimate(
    factory: sessionmaker[Session], history: dict[str, object]
) -> None:
    with factory() as session:
        usage = recent_usage(session, int(str(history["sonnet"])))
        in_us = recent_usage(session, int(str(history["sonnet"])), region="us-east-1", limit=1)
    # Each run: basic-prompt (1 call) + availability (2 calls), 70 tokens in, 110 out.
    assert usage == [RunUsage(70, 110, 3)] * 3
    assert len(in_us) == 1
    price = Price(3.0, 15.0)
    # 10 planned calls at the runs' 70/3 in and 110/3 out per call.
    assert estimate_certification_cost(price, 10, usage) == pytest.approx(price.cost(233, 367, 10))


@pytest.mark.llama
@pytest.mark.timeout(600)
async def test_costs_follow_the_tokens_the_llama_cpp_server_reports(
    factory: sessionmaker[Session],
    settings: Settings,
    llama: LlamaServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A smoke certification of the real llama.cpp server (SmolLM2) at a price: each
    test's tokens are the server's own count (the same prompt asked directly reports the
    same prompt tokens), each test costs its tokens at the price, the run the sum of its
    tests, and the day's report the run."""
    monkeypatch.setenv("LLAMA_COST_KEY", llama.api_key)
    price = Price(1_000.0, 2_000.0, 0.0)  # dear, so that a few tokens show in the cost
    with transaction(factory) as session:
        repo.add_provider(
            session, slug="llama", kind="openai", base_url=llama.base_url,
            config={"api_key_env": "LLAMA_COST_KEY", "timeout": 60},
        )  # fmt: skip
        repo.add_deployment(
            session, provider_slug="llama", provider_model_id="smollm2",
            options={"test_timeout_s": 60, "max_retries": 0},
            cost_input_per_mtok=price.input_per_mtok, cost_output_per_mtok=price.output_per_mtok,
        )  # fmt: skip
    engine = CertificationEngine(RunStore(factory), settings)
    try:
        outcome = await engine.certify(CertificationRequest("llama/smollm2", "global", smoke=True))
    finally:
        await engine.aclose()

    with factory() as session:
        rows = {
            row.test_id: row
            for row in session.scalars(
                select(TestResultRow).where(TestResultRow.run_id == outcome.run_id)
            )
        }
        run = session.get(CertificationRun, outcome.run_id)
        assert run is not None
        report = cost_report(session, by="day")
    answered = {k: r for k, r in rows.items() if r.outcome == "PASSED" and r.retries == 0}
    assert {"basic-prompt", "streaming"} <= set(answered), {k: r.outcome for k, r in rows.items()}
    for test_id, prompt in (("basic-prompt", "Hi"), ("streaming", "Count from 1 to 5")):
        assert answered[test_id].input_tokens == _prompt_tokens(llama, prompt), test_id
    for row in answered.values():
        assert row.input_tokens and row.output_tokens, row.test_id
        assert row.cost_usd == pytest.approx(price.cost(row.input_tokens, row.output_tokens, 1))
    assert run.cost_usd == pytest.approx(sum(r.cost_usd or 0.0 for r in rows.values()))
    assert run.cost_usd and run.cost_usd > 0
    assert report.total.cost_usd == pytest.approx(run.cost_usd)
    assert [(line.provider, line.region) for line in report.lines] == [("llama", "global")]


def _prompt_tokens(llama: LlamaServer, prompt: str) -> int:
    """The prompt tokens the server counts for this one user message."""
    body = json.dumps(
        {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": 1}
    ).encode()
    request = urllib.request.Request(
        f"{llama.base_url}/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {llama.api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return int(json.load(response)["usage"]["prompt_tokens"])
