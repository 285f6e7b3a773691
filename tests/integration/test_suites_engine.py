"""Suites in the one certification engine (issue 13): a loaded suite's tests run as the
built-in ones do — chosen per job or attached, one durable step each, stored with their
suite version, weight, assertions and cost, scored with weights and required tests —
in-process and through the durable workflow, on SQLite and PostgreSQL.

The sim provider answers deterministically (`providers.sim_answers`): "Respond with OK"
gives "OK", counting gives the count, tools a call with arguments from the prompt, a JSON
schema an instance of it. What is asserted is what the assertion logic decides on those
answers and what the engine records, not what a model knows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.certify.engine import CertificationEngine, CertificationRequest
from modelcert.domain import Capabilities, CertificationStatus, JobKind, Price, TestOutcome
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.job_summary import job_summary
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import CertificationRun, TestResultRow
from modelcert.store.runs import RunStore
from modelcert.store.suites import store_suite
from modelcert.suites.loader import parse_suite
from tests.support.inprocess import StartWorker
from tests.support.waiting import wait_for
from tests.support.workers import worker_processes

REGION = "us-east-1"
INPUT_PRICE, OUTPUT_PRICE, REQUEST_FEE = 3.0, 15.0, 0.0001  # USD per 1M tokens, per call
JUDGE_INPUT_PRICE, JUDGE_OUTPUT_PRICE = 0.5, 1.5

EVERY_ASSERTION = """
name: every-assertion
description: Every assertion type against the simulator's deterministic answers.
tests:
  - id: respond-ok
    prompt: Respond with OK
    weight: 2
    assert:
      - {type: equals, value: OK}
      - {type: contains, value: OK}
      - {type: icontains, value: ok}
      - {type: not-contains, value: error}
      - {type: starts-with, value: O}
      - {type: regex, value: "^ok$", flags: i}
      - {type: max-latency-ms, value: 30000}
      - {type: max-ttft-ms, value: 30000}
      - {type: min-output-tokens, value: 1}
      - {type: max-output-tokens, value: 5}
  - id: count
    messages:
      - system: You count.
      - user: Count from 1 to 5, separated by commas.
    temperature: 0
    max_tokens: 50
    assert:
      - type: any-of
        assert:
          - {type: contains, value: five}
          - {type: contains, value: "5"}
      - type: all-of
        assert:
          - {type: starts-with, value: "1"}
          - {type: not-contains, value: "6"}
  - id: person
    prompt: Return a JSON object for a person named Ada who is 36 years old.
    response_format:
      type: json_schema
      schema:
        type: object
        properties: {name: {type: string}, age: {type: integer}}
        required: [name, age]
    requires: [json_output]
    assert:
      - {type: is-json}
      - type: json-schema
        value:
          type: object
          properties: {name: {const: Ada}, age: {const: 36}}
          required: [name, age]
  - id: weather-tool
    prompt: What is the weather in Paris? Use the tool.
    requires: [tools]
    tools:
      - name: get_weather
        description: Current weather for a city.
        parameters:
          type: object
          properties: {city: {type: string}}
          required: [city]
    assert:
      - type: tool-call
        name: get_weather
        arguments: {type: object, properties: {city: {const: Paris}}, required: [city]}
  - id: judged
    prompt: Respond with OK
    assert:
      - type: llm-judge
        judge: lab/grader
        rubric: The answer is the word OK.
"""

FAILING = """
name: strict
tests:
  - id: wants-banana
    prompt: Respond with OK
    required: {required}
    assert:
      - {{type: contains, value: banana, description: the fruit}}
"""


@pytest.fixture
def lab(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with transaction(factory) as session:
        repo.add_provider(
            session, slug="lab", kind="sim", regions=[REGION], config={"retry_base_ms": 10}
        )
        repo.add_deployment(
            session,
            provider_slug="lab",
            provider_model_id="steady",
            capabilities=Capabilities(tools=True, json_output=True),
            options={"profile": "healthy-fast", "latency_ms": 5},
            cost_input_per_mtok=INPUT_PRICE,
            cost_output_per_mtok=OUTPUT_PRICE,
            cost_per_request=REQUEST_FEE,
        )
        repo.add_deployment(
            session,
            provider_slug="lab",
            provider_model_id="grader",
            options={"profile": "healthy-fast", "latency_ms": 5},
            cost_input_per_mtok=JUDGE_INPUT_PRICE,
            cost_output_per_mtok=JUDGE_OUTPUT_PRICE,
        )
    return factory


def load(factory: sessionmaker[Session], text: str) -> str:
    loaded = parse_suite(text, "test.yaml")
    with transaction(factory) as session:
        store_suite(session, loaded, loaded_by="test")
    return loaded.ref


def certify(factory: sessionmaker[Session], settings: Settings, **request: Any) -> Any:
    engine = CertificationEngine(RunStore(factory), settings)

    async def go() -> Any:
        try:
            return await engine.certify(CertificationRequest("lab/steady", REGION, **request))
        finally:
            await engine.aclose()

    return asyncio.run(go())


def stored_tests(factory: sessionmaker[Session], run_id: int) -> dict[str, TestResultRow]:
    with factory() as session:
        rows = session.scalars(select(TestResultRow).where(TestResultRow.run_id == run_id))
        return {row.test_id: row for row in rows}


def flat(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for outcome in outcomes:
        found.append(outcome)
        found += flat(outcome.get("children") or [])
    return found


def test_a_suite_with_every_assertion_type_runs_in_the_engine(
    lab: sessionmaker[Session], settings: Settings
) -> None:
    ref = load(lab, EVERY_ASSERTION)
    outcome = certify(lab, settings, suites=("every-assertion",))

    assert outcome.plan.suites == (ref,)
    assert [r.test_id for r in outcome.results] == [
        "every-assertion/respond-ok",
        "every-assertion/count",
        "every-assertion/person",
        "every-assertion/weather-tool",
        "every-assertion/judged",
    ]
    failed = {r.test_id: r.detail for r in outcome.results if r.outcome is not TestOutcome.PASSED}
    assert failed == {}
    assert outcome.score.status is CertificationStatus.CERTIFIED

    tests = stored_tests(lab, outcome.run_id)
    types = {o["type"] for row in tests.values() for o in flat(row.assertions or [])}
    assert types == {
        "equals", "contains", "icontains", "not-contains", "starts-with", "regex",
        "max-latency-ms", "max-ttft-ms", "min-output-tokens", "max-output-tokens",
        "any-of", "all-of", "is-json", "json-schema", "tool-call", "llm-judge",
    }  # fmt: skip
    assert all(o["passed"] for row in tests.values() for o in row.assertions or [])
    any_of = tests["every-assertion/count"].assertions[0]  # type: ignore[index]
    assert [child["passed"] for child in any_of["children"]] == [False, True]
    respond = tests["every-assertion/respond-ok"]
    assert (respond.suite, respond.weight, respond.required) == (ref, 2.0, False)

    # The judge's grading is stored with its reasoning and its tokens, and costs apart.
    [judged] = tests["every-assertion/judged"].assertions  # type: ignore[misc]
    assert judged["judge"] == "lab/grader" and judged["reasoning"]
    assert judged["input_tokens"] and judged["output_tokens"]
    judge_cost = (
        judged["input_tokens"] * JUDGE_INPUT_PRICE + judged["output_tokens"] * JUDGE_OUTPUT_PRICE
    ) / 1e6
    row = tests["every-assertion/judged"]
    assert row.input_tokens and row.output_tokens
    own = (row.input_tokens * INPUT_PRICE + row.output_tokens * OUTPUT_PRICE) / 1e6 + REQUEST_FEE
    assert row.cost_usd == pytest.approx(own + judge_cost)

    with lab() as session:
        run = session.get(CertificationRun, outcome.run_id)
        assert run is not None
        assert run.suites == [ref]
        assert run.cost_usd == pytest.approx(sum(t.cost_usd or 0 for t in tests.values()))


def test_a_required_test_failing_fails_the_run_and_an_optional_one_only_weighs(
    lab: sessionmaker[Session], settings: Settings
) -> None:
    load(lab, FAILING.format(required="true"))
    outcome = certify(lab, settings, suites=("builtin", "strict"))
    [strict] = [r for r in outcome.results if r.test_id == "strict/wants-banana"]
    assert strict.outcome is TestOutcome.FAILED
    assert strict.assertions and "banana" in strict.assertions[0]["detail"]
    # 14 of 15 tests pass, but the required one did not.
    assert outcome.score.status is CertificationStatus.FAILED
    assert "required test strict/wants-banana failed" in (outcome.score.error_message or "")

    load(lab, FAILING.format(required="false"))
    outcome = certify(lab, settings, suites=("builtin", "strict"))
    assert outcome.score.status is CertificationStatus.CERTIFIED
    assert outcome.score.success_rate < 100


def test_attached_suites_run_by_default_and_builtin_off_replaces_the_battery(
    lab: sessionmaker[Session], settings: Settings
) -> None:
    base = "name: extra\nattach: {providers: [lab]}\n%s\ntests:\n  - id: ok\n    prompt: Respond with OK\n    assert: [{type: equals, value: OK}]\n"  # noqa: E501
    ref = load(lab, base % "builtin: keep")
    outcome = certify(lab, settings)
    ids = [r.test_id for r in outcome.results]
    assert "basic-prompt" in ids and ids[-1] == "extra/ok"
    assert outcome.plan.suites[1:] == (ref,) and outcome.plan.suites[0].startswith("builtin@")

    load(lab, base % "builtin: off")
    outcome = certify(lab, settings)
    assert [r.test_id for r in outcome.results] == ["extra/ok"]


def test_smoke_runs_three_cheap_tests(lab: sessionmaker[Session], settings: Settings) -> None:
    outcome = certify(lab, settings, smoke=True)
    assert [r.test_id for r in outcome.results] == ["basic-prompt", "streaming", "token-usage"]
    assert outcome.plan.suites[0].startswith("smoke@")
    assert outcome.score.status is CertificationStatus.CERTIFIED


def test_a_budget_keeps_a_certification_from_starting_and_says_so(
    lab: sessionmaker[Session], settings: Settings
) -> None:
    outcome = certify(lab, settings, budget_usd=0.000001)
    assert outcome.refusal and "budget" in outcome.refusal
    assert outcome.results == ()
    with lab() as session:
        run = session.get(CertificationRun, outcome.run_id)
        assert run is not None and run.status == "SKIPPED"
        assert "not started" in (run.error_message or "")
        ran = session.scalars(select(TestResultRow).where(TestResultRow.run_id == run.id))
        assert not ran.all()

    # The day's budget: what runs cost today counts; one certification fits, the next not.
    done = certify(lab, settings)
    assert done.cost_usd and done.cost_usd > 0
    daily = settings.model_copy(update={"daily_budget_usd": done.cost_usd * 1.5})
    refused = certify(lab, daily)
    assert refused.refusal and "MODELCERT_DAILY_BUDGET_USD" in refused.refusal
    # An estimate is a reservation against a budget: made (from the pair's history) only
    # where one applies.
    generous = settings.model_copy(update={"daily_budget_usd": 100.0})
    reserved = certify(lab, generous)
    with lab() as session:
        unlimited = session.get(CertificationRun, done.run_id)
        limited = session.get(CertificationRun, reserved.run_id)
        assert unlimited is not None and unlimited.estimate_usd is None
        assert limited is not None and limited.estimate_usd == pytest.approx(done.cost_usd)


def test_the_durable_workflow_runs_the_jobs_suites_and_budget(
    lab: sessionmaker[Session], enqueuer: Enqueuer, start_worker: StartWorker
) -> None:
    from modelcert.domain import CertifyOptions

    ref = load(lab, EVERY_ASSERTION)
    job = enqueuer.enqueue(
        lab,
        [("lab/steady", REGION)],
        kind=JobKind.SINGLE,
        options=CertifyOptions(suites=("every-assertion",)),
    )
    worker = start_worker(regions=[REGION])
    worker.drain()
    with transaction(lab) as session:
        summary = job_summary(session, job.job_id or "")
        run = session.scalars(
            select(CertificationRun).where(CertificationRun.job_id == job.job_id)
        ).one()
        assert summary["status"] == "COMPLETED" and summary["succeeded"] == 1
        assert run.suites == [ref] and run.status == "CERTIFIED"
        tests = session.scalars(select(TestResultRow).where(TestResultRow.run_id == run.id))
        assert len(list(tests)) == 5

    # A job's budget is kept by the workers too: its certification is not started.
    poor = enqueuer.enqueue(
        lab,
        [("lab/steady", REGION)],
        kind=JobKind.SINGLE,
        options=CertifyOptions(budget_usd=0.0000001),
    )
    worker.drain()
    with transaction(lab) as session:
        summary = job_summary(session, poor.job_id or "")
        assert summary["status"] == "COMPLETED" and summary["failed"] == 1
        [certification] = summary["certifications"]
        assert certification["status"] == "SKIPPED"


SLOW_SUITE = "name: slow\ntests:\n" + "".join(
    f"  - id: step-{n}\n    prompt: Respond with OK\n    assert: [{{type: equals, value: OK}}]\n"
    for n in range(8)
)


def test_a_worker_killed_mid_suite_resumes_without_rerunning_its_stored_tests(
    lab: sessionmaker[Session], enqueuer: Enqueuer, settings: Settings, tmp_path: Path
) -> None:
    """kill -9 in the middle of a suite's tests: the same worker back resumes at its last
    stored test; none stored before the kill runs (or is paid for) again."""
    from modelcert.domain import CertifyOptions

    with transaction(lab) as session:
        steady = repo.find_deployment(session, "lab/steady")
        steady.options = {"profile": "healthy-fast", "latency_ms": 250}
    load(lab, SLOW_SUITE)
    job = enqueuer.enqueue(
        lab, [("lab/steady", REGION)], kind=JobKind.SINGLE, options=CertifyOptions(suites=("slow",))
    )
    with worker_processes(settings, tmp_path, (REGION,)) as workers:
        [victim] = workers("w-suite")
        run_id: int | None = None

        def mid_suite() -> bool:
            nonlocal run_id
            with lab() as session:
                run = session.scalars(
                    select(CertificationRun).where(CertificationRun.job_id == job.job_id)
                ).first()
                run_id = run.id if run is not None else None
            return run_id is not None and len(stored_tests(lab, run_id)) >= 3

        wait_for(mid_suite, what="the suite to be mid-way")
        assert run_id is not None
        before = {test_id: row.id for test_id, row in stored_tests(lab, run_id).items()}
        victim.kill()
        workers("w-suite")  # the same executor id back: it resumes its workflow

        def finished() -> bool:
            with transaction(lab) as session:
                return bool(job_summary(session, job.job_id or "")["status"] == "COMPLETED")

        wait_for(finished, what="the job to complete after the kill")
    after = stored_tests(lab, run_id)
    assert sorted(after) == [f"slow/step-{n}" for n in range(8)]
    assert all(after[test_id].id == row_id for test_id, row_id in before.items())
    with lab() as session:
        run = session.get(CertificationRun, run_id)
        assert run is not None and run.status == "CERTIFIED"
        assert run.cost_usd == pytest.approx(sum(row.cost_usd or 0 for row in after.values()))


def test_smoke_beside_a_suite_replaces_the_battery_not_the_suite(
    lab: sessionmaker[Session], settings: Settings
) -> None:
    load(lab, FAILING.format(required="false"))
    outcome = certify(lab, settings, smoke=True, suites=("builtin", "strict"))
    assert [r.test_id for r in outcome.results] == [
        "basic-prompt",
        "streaming",
        "token-usage",
        "strict/wants-banana",
    ]


def test_an_unknown_suite_is_refused_before_anything_is_queued(
    lab: sessionmaker[Session], enqueuer: Enqueuer
) -> None:
    from modelcert.domain import CertifyOptions
    from modelcert.errors import NotFoundError

    with pytest.raises(NotFoundError, match="no-such-suite"):
        enqueuer.enqueue(
            lab,
            [("lab/steady", REGION)],
            kind=JobKind.SINGLE,
            options=CertifyOptions(suites=("no-such-suite",)),
        )
    with lab() as session:
        assert not session.scalars(select(CertificationRun)).all()


def test_a_judge_that_fails_leaves_the_test_not_run_not_failed(
    lab: sessionmaker[Session], settings: Settings
) -> None:
    """The judge's own failure says nothing about the model: the test is NOT_RUN, and the
    certification INCOMPLETE (no verdict from missing evidence), not FAILED."""
    with transaction(lab) as session:
        repo.add_deployment(
            session,
            provider_slug="lab",
            provider_model_id="denied-judge",
            options={"profile": "access-denied", "latency_ms": 5},
        )
    load(
        lab,
        "name: judged\ntests:\n  - id: graded\n    prompt: Respond with OK\n    assert:\n"
        "      - {type: llm-judge, judge: lab/denied-judge, rubric: It says OK.}\n",
    )
    outcome = certify(lab, settings, suites=("judged",))
    [graded] = outcome.results
    assert graded.outcome is TestOutcome.NOT_RUN
    assert "the judge lab/denied-judge failed" in graded.detail
    assert graded.error_category is None
    assert outcome.score.status is CertificationStatus.INCOMPLETE


def test_an_answer_that_echoes_a_key_is_masked_in_the_assertions_stored(
    lab: sessionmaker[Session], settings: Settings
) -> None:
    """A model that repeats a key it saw: an assertion's detail quotes the answer, and a
    judge's reasoning may; neither reaches the database unmasked."""
    from modelcert import secrets

    planted = "PlantedSuiteKeyQ7xLm2Zt8Rk4Vn"
    secrets.register(planted)  # as a provider's key read from the environment is
    load(
        lab,
        "name: echo\ntests:\n  - id: repeats\n    prompt: Respond with " + planted + "\n"
        "    assert:\n      - {type: contains, value: banana}\n"
        "      - {type: llm-judge, judge: lab/grader, rubric: It is a fruit.}\n",
    )
    outcome = certify(lab, settings, suites=("echo",))
    [result] = outcome.results
    assert planted not in str(result.assertions) + result.detail  # what the CLI prints
    assert "banana" in (result.assertions or [])[0]["detail"]
    with lab() as session:
        row = session.scalars(select(TestResultRow)).one()
        stored = str(row.assertions) + (row.detail or "") + (row.error_message or "")
    assert planted not in stored and secrets.MASK in stored


def test_reports_name_the_suites_a_verdict_proved_and_what_its_run_cost(
    lab: sessionmaker[Session], settings: Settings
) -> None:
    from modelcert.reports import build, formats
    from modelcert.store.models import utcnow

    ref = load(lab, FAILING.format(required="false"))
    outcome = certify(lab, settings, suites=("builtin", "strict"))
    with lab() as session:
        report = build.build_report(session, build.ReportFilters(model="lab/steady"), utcnow())
    [entry] = [e for e in formats.report_json(report)["certifications"] if e["region"] == REGION]
    assert entry["suites"] == list(outcome.plan.suites) and ref in entry["suites"]
    assert entry["last_run_cost_usd"] == pytest.approx(outcome.cost_usd)
    assert "The latest runs of 1 pairs cost $" in formats.render_markdown(report)
    assert "suites builtin@" in formats.render_junit(report)


def test_certifications_starting_at_once_never_share_the_room_of_one_budget(
    lab: sessionmaker[Session], settings: Settings
) -> None:
    """Six certifications of one job prepare at the same time (each in its own thread, as
    in a busy worker): the budget holds two estimates and a half, so exactly two start.
    Without the budget lock taken where the run opens, each would see the same room."""
    from modelcert.cost.estimate import estimate_certification_cost
    from modelcert.store.models import Job

    regions = ["r-1", "r-2", "r-3"]
    with transaction(lab) as session:
        repo.add_provider(session, slug="wide", kind="sim", regions=regions)
        for name in ("one", "two"):
            repo.add_deployment(
                session,
                provider_slug="wide",
                provider_model_id=name,
                options={"profile": "healthy-fast", "latency_ms": 5},
                cost_input_per_mtok=INPUT_PRICE,
                cost_output_per_mtok=OUTPUT_PRICE,
            )
        job = Job(kind=JobKind.MULTIPLE.value, total=6)
        session.add(job)
        session.flush()
        job_id = job.id
    engine = CertificationEngine(RunStore(lab), settings)
    price = Price(INPUT_PRICE, OUTPUT_PRICE)
    estimate = estimate_certification_cost(price, engine_calls(lab, settings))
    assert estimate is not None
    budget = estimate * 2.5

    async def go() -> list[Any]:
        try:
            return list(
                await asyncio.gather(
                    *(
                        engine.certify(
                            CertificationRequest(
                                f"wide/{name}", region, job_id=job_id, budget_usd=budget
                            )
                        )
                        for name in ("one", "two")
                        for region in regions
                    )
                )
            )
        finally:
            await engine.aclose()

    outcomes = asyncio.run(go())
    started = [o for o in outcomes if o.refusal is None]
    refused = [o for o in outcomes if o.refusal is not None]
    assert (len(started), len(refused)) == (2, 4), [o.refusal for o in outcomes]
    assert all("the job's budget" in (o.refusal or "") for o in refused)
    with transaction(lab) as session:
        summary = job_summary(session, job_id)
        assert summary["status"] == "COMPLETED" and summary["processed"] == 6
        assert summary["costUsd"] <= budget


def engine_calls(factory: sessionmaker[Session], settings: Settings) -> int:
    """The calls the battery plans for a `wide` deployment (what the estimate counts)."""
    from modelcert.certify.plan import plan_certification

    with factory() as session:
        spec = repo.deployment_spec(repo.find_deployment(session, "wide/one"))
    return plan_certification(settings, spec, "r-1").planned_calls


def test_a_suite_test_needing_an_undeclared_capability_is_skipped_as_the_batterys_are(
    lab: sessionmaker[Session], settings: Settings
) -> None:
    load(lab, EVERY_ASSERTION)
    engine = CertificationEngine(RunStore(lab), settings)

    async def go() -> Any:
        try:  # `lab/grader` declares neither tools nor JSON output
            return await engine.certify(
                CertificationRequest("lab/grader", REGION, suites=("every-assertion",))
            )
        finally:
            await engine.aclose()

    outcome = asyncio.run(go())
    skipped = {r.test_id: r.detail for r in outcome.results if r.outcome is TestOutcome.SKIPPED}
    assert skipped == {
        "every-assertion/person": "capability not declared: json_output",
        "every-assertion/weather-tool": "capability not declared: tools",
    }
