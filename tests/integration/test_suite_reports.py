"""A run with suite tests, as every reader shows it, on SQLite and PostgreSQL: the API's
run detail, the dashboard's run page, the CSV / JSON exports, JUnit XML (a testcase per
assertion) over the API and the CLI, and the CLI's rendering of an outcome (suites,
failed assertions, the cost line, a budget's refusal).

The runs are stored through the store functions a worker's durable steps call
(`begin_run`, `record_test`, `finish_run`), with domain TestResults that carry a suite,
weight, `required`, assertion outcomes and a cost, and the suite's definition is stored
as `modelcert suite load` stores it: each test sets up exactly the history it reads."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.certify.engine import CertificationOutcome
from modelcert.certify.plan import CertificationPlan
from modelcert.certify.runner import RetryPolicy
from modelcert.certify.scoring import score_results
from modelcert.certify.throttle import QuotaKey
from modelcert.cli import render
from modelcert.domain import ErrorCategory, Price, TestOutcome, TestResult
from modelcert.providers.base import Target
from modelcert.reports import runs as history
from modelcert.reports.run_junit import render_runs_junit
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import Suite
from modelcert.store.runs import begin_run, finish_run, record_test
from tests.support.cli_inprocess import invoke
from tests.support.keys import bearer, new_key

D = "/dashboard"
VERSION = "3f2a9c0d1e2b4a5f"
SUITE = f"support-bot@{VERSION}"
SUITES = ["builtin@0.2.0", SUITE]
REASONING = "The answer never states the 30-day window <b>at all</b>."

# The suite as the loader normalises it: what names the JUnit testcases.
DEFINITION: dict[str, Any] = {
    "name": "support-bot",
    "description": "What our support assistant relies on.",
    "attach": {"all": False, "providers": ["lab"], "deployments": []},
    "builtin": "keep",
    "tests": [
        {
            "id": "refund-policy",
            "title": "States the refund window",
            "weight": 2.0,
            "required": True,
            "requires": [],
            "system": "Refunds are accepted within 30 days.",
            "messages": [{"role": "user", "content": "How many days for a refund?"}],
            "params": {"temperature": 0},
            "timeout_s": 30.0,
            "assert": [
                {"type": "contains", "value": "30 days"},
                {
                    "type": "any-of",
                    "assert": [
                        {"type": "contains", "value": "thirty"},
                        {"type": "icontains", "value": "refund"},
                    ],
                },
                {"type": "not-contains", "value": "I cannot"},
                {
                    "type": "llm-judge",
                    "judge": "lab/judge",
                    "rubric": "States that refunds are accepted within 30 days.",
                    "threshold": 0.5,
                },
            ],
        },
        {
            "id": "outage",
            "title": "Answers at all",
            "weight": 1.0,
            "required": False,
            "requires": [],
            "system": None,
            "messages": [{"role": "user", "content": "Hello?"}],
            "params": {},
            "timeout_s": None,
            "assert": [{"type": "min-output-tokens", "value": 1}],
        },
        {
            "id": "greeting",
            "title": "Greets",
            "weight": 1.0,
            "required": False,
            "requires": [],
            "system": None,
            "messages": [{"role": "user", "content": "Hi"}],
            "params": {},
            "timeout_s": None,
            "assert": [{"type": "starts-with", "value": "Hello", "description": "greets"}],
        },
    ],
}

REFUND_ASSERTIONS: list[dict[str, Any]] = [
    {"type": "contains", "passed": True, "detail": "found '30 days'"},
    {
        "type": "any-of",
        "passed": True,
        "detail": "1 of 2 passed",
        "children": [
            {"type": "contains", "passed": False, "detail": "'thirty' not found in answer"},
            {"type": "icontains", "passed": True, "detail": "found 'refund' (ignoring case)"},
        ],
    },
    {
        "type": "not-contains",
        "passed": False,
        "detail": "'I cannot' found in answer 'I cannot say: 30 days'",
    },
    {
        "type": "llm-judge",
        "passed": False,
        "detail": "score 0.20 < threshold 0.50",
        "judge": "lab/judge",
        "score": 0.2,
        "reasoning": REASONING,
        "input_tokens": 120,
        "output_tokens": 40,
    },
]


def suite_results() -> list[TestResult]:
    """Three built-in tests (passed, failed, skipped) and three of the suite: one failed
    on two assertions, one failed before any assertion ran, one passed."""
    return [
        TestResult(
            "basic-prompt",
            "Basic prompt",
            TestOutcome.PASSED,
            latency_ms=120.0,
            attempts=1,
            input_tokens=12,
            output_tokens=20,
            cost_usd=0.000011,
        ),
        TestResult(
            "streaming",
            "Streaming",
            TestOutcome.FAILED,
            attempts=4,
            retries=3,
            error_category=ErrorCategory.RATE_LIMIT,
            error_message="429 Too Many Requests",
            http_status=429,
            cost_usd=0.0,
        ),
        TestResult("vision", "Vision", TestOutcome.SKIPPED, detail="capability not declared"),
        TestResult(
            "support-bot/refund-policy",
            "States the refund window",
            TestOutcome.FAILED,
            detail="'I cannot' found in answer 'I cannot say: 30 days'",
            latency_ms=300.0,
            attempts=1,
            input_tokens=30,
            output_tokens=12,
            error_category=ErrorCategory.QUALITY_ISSUE,
            error_message="'I cannot' found in answer 'I cannot say: 30 days'",
            suite=SUITE,
            weight=2.0,
            required=True,
            assertions=REFUND_ASSERTIONS,
            cost_usd=0.000123,
        ),
        TestResult(
            "support-bot/outage",
            "Answers at all",
            TestOutcome.FAILED,
            attempts=1,
            error_category=ErrorCategory.TIMEOUT,
            error_message="no answer within 30 s",
            suite=SUITE,
            cost_usd=None,
        ),
        TestResult(
            "support-bot/greeting",
            "Greets",
            TestOutcome.PASSED,
            latency_ms=90.0,
            attempts=1,
            input_tokens=5,
            output_tokens=3,
            suite=SUITE,
            assertions=[
                {
                    "type": "starts-with",
                    "passed": True,
                    "detail": "starts with 'Hello'",
                    "description": "greets",
                }
            ],
            cost_usd=0.000002,
        ),
    ]


@pytest.fixture
def catalog(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1"])
        repo.add_deployment(
            session, provider_slug="lab", provider_model_id="bot", options={"latency_ms": 5}
        )
        session.add(
            Suite(
                name="support-bot",
                version=VERSION,
                description=DEFINITION["description"],
                definition=DEFINITION,
                source="name: support-bot\n",
                source_name="support-bot.yaml",
            )
        )
    return factory


def store_run(factory: sessionmaker[Session], results: Sequence[TestResult]) -> int:
    """A run as a worker stores it: begun with its suites, each test recorded, closed."""
    with factory() as session:
        deployment_id = repo.find_deployment(session, "lab/bot").id
    with transaction(factory) as session:
        run = begin_run(
            session, deployment_id, "us-east-1", simulated=True, suites=SUITES, estimate_usd=0.001
        )
        run_id = run.id
    for position, result in enumerate(results):
        with transaction(factory) as session:
            record_test(session, run_id, position, result)
    with transaction(factory) as session:
        finish_run(session, run_id, results, score_results(results))
    return run_id


@pytest.fixture
def run_id(catalog: sessionmaker[Session]) -> int:
    return store_run(catalog, suite_results())


@pytest.fixture
def client(settings: Settings, catalog: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(settings, session_factory=catalog)
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture
def viewer(catalog: sessionmaker[Session]) -> dict[str, str]:
    return bearer(new_key(catalog, "reader", Role.viewer))


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _cases(document: str) -> list[ET.Element]:
    return ET.fromstring(document).findall("./testsuite/testcase")


# --- the API and the dashboard --------------------------------------------------------


def test_the_api_run_detail_carries_suites_assertions_and_cost(
    client: TestClient, viewer: dict[str, str], run_id: int
) -> None:
    answer = client.get(f"/api/certification-queue/runs/{run_id}", headers=viewer)
    assert answer.status_code == 200, answer.text
    run = answer.json()
    assert run["suites"] == SUITES
    assert run["costUsd"] == pytest.approx(0.000011 + 0.000123 + 0.000002)
    tests = {t["testId"]: t for t in run["tests"]}
    builtin = tests["basic-prompt"]
    assert (builtin["suite"], builtin["weight"], builtin["required"]) == (None, 1.0, False)
    assert builtin["assertions"] is None and builtin["costUsd"] == pytest.approx(0.000011)
    refund = tests["support-bot/refund-policy"]
    assert (refund["suite"], refund["weight"], refund["required"]) == (SUITE, 2.0, True)
    assert refund["assertions"] == REFUND_ASSERTIONS
    assert refund["costUsd"] == pytest.approx(0.000123)
    assert tests["support-bot/outage"]["assertions"] is None
    assert tests["support-bot/outage"]["costUsd"] is None
    # The listing's summaries carry them too.
    history_page = client.get("/api/certification-queue/history", headers=viewer).json()
    assert history_page["items"][0]["suites"] == SUITES


def test_the_dashboard_run_page_shows_suites_assertions_and_cost(
    client: TestClient, catalog: sessionmaker[Session], run_id: int
) -> None:
    client.post(f"{D}/login", data={"api_key": new_key(catalog, "ops", Role.operator)})
    page = client.get(f"{D}/runs/{run_id}")
    assert page.status_code == 200, page.text[:300]
    html = page.text
    suites = html.split('id="run-suites">')[1].split("</dd>")[0]
    assert "<code>builtin</code>" in suites and "@0.2.0" in suites
    assert "<code>support-bot</code>" in suites and f"@{VERSION}" in suites
    cost = html.split('id="run-cost">')[1].split("</dd>")[0]
    assert "$0.000136" in cost
    # The suite tests: their suite, weight and required tags, the nested assertions.
    assert f"suite <code>{SUITE}</code>" in html
    assert 'class="tag tag-weight"' in html and "×2" in html
    assert 'class="tag tag-required"' in html
    assert html.count('<ol class="assertions">') == 3  # refund, its any-of, greeting
    assert "found &#39;30 days&#39;" in html  # autoescaped
    assert "&#39;thirty&#39; not found in answer" in html
    assert html.count('class="assertion assertion-fail"') == 3
    assert html.count('class="assertion assertion-pass"') == 4
    # The judge's reasoning, collapsed and escaped.
    reasoning = html.split('<details class="judge-reasoning">')[1].split("</details>")[0]
    assert "&lt;b&gt;at all&lt;/b&gt;" in reasoning and "<b>" not in reasoning
    assert "score 0.20" in html and "judge lab/judge" in html
    # Cost per test, "—" when unknown.
    assert "$0.000123" in html and "$0.000011" in html
    outage_row = html.split('title="support-bot/outage"')[1].split("</tr>")[0]
    assert "—" in outage_row


# --- exports --------------------------------------------------------------------------


def test_csv_and_json_exports_carry_suites_weights_assertions_and_cost(
    client: TestClient, viewer: dict[str, str], run_id: int
) -> None:
    runs = client.get("/api/runs/export", headers=viewer)
    assert runs.text.splitlines()[0] == ",".join(history.RUN_FIELDS)
    (row,) = _csv(runs.text)
    assert json.loads(row["suites"]) == SUITES
    assert float(row["cost_usd"]) == pytest.approx(0.000136)

    tests = client.get("/api/runs/export", params={"kind": "tests"}, headers=viewer)
    header = tests.text.splitlines()[0].split(",")
    assert header == list(history.TEST_FIELDS)
    assert {"suite", "weight", "required", "cost_usd", "assertions"} <= set(header)
    rows = {r["test_id"]: r for r in _csv(tests.text)}
    refund = rows["support-bot/refund-policy"]
    assert (refund["suite"], refund["weight"], refund["required"]) == (SUITE, "2.0", "true")
    assert json.loads(refund["assertions"]) == REFUND_ASSERTIONS
    assert ", " not in refund["assertions"]  # compact
    assert float(refund["cost_usd"]) == pytest.approx(0.000123)
    builtin = rows["basic-prompt"]
    assert (builtin["suite"], builtin["assertions"], builtin["required"]) == ("", "", "false")
    assert rows["support-bot/outage"]["cost_usd"] == ""

    document = client.get(
        "/api/runs/export", params={"kind": "tests", "format": "json"}, headers=viewer
    ).json()
    by_id = {r["test_id"]: r for r in document["rows"]}
    assert by_id["support-bot/refund-policy"]["assertions"] == REFUND_ASSERTIONS
    assert by_id["support-bot/refund-policy"]["weight"] == 2.0
    assert by_id["support-bot/refund-policy"]["required"] is True
    assert by_id["basic-prompt"]["suite"] is None
    runs_json = client.get("/api/runs/export", params={"format": "json"}, headers=viewer).json()
    assert runs_json["rows"][0]["suites"] == SUITES


def test_two_runs_compare_their_suite_tests_like_any_test(
    client: TestClient, viewer: dict[str, str], catalog: sessionmaker[Session], run_id: int
) -> None:
    later = suite_results()
    later[3] = TestResult(
        "support-bot/refund-policy",
        "States the refund window",
        TestOutcome.PASSED,
        latency_ms=310.0,
        suite="support-bot@0123456789abcdef",  # a newer version of the suite
        weight=2.0,
        required=True,
        assertions=[{"type": "contains", "passed": True, "detail": "found '30 days'"}],
    )
    other = store_run(catalog, later)
    found = client.get("/api/runs/diff", params={"a": run_id, "b": other}, headers=viewer).json()
    refund = next(t for t in found["tests"] if t["test_id"] == "support-bot/refund-policy")
    assert (refund["a"]["outcome"], refund["b"]["outcome"]) == ("FAILED", "PASSED")
    assert "outcome" in refund["changed"] and "suite" in refund["changed"]
    greeting = next(t for t in found["tests"] if t["test_id"] == "support-bot/greeting")
    assert greeting["changed"] == []
    assert found["a"]["suites"] == SUITES


# --- JUnit ----------------------------------------------------------------------------


def _check_junit(document: str, run_id: int) -> None:
    root = ET.fromstring(document)
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == f"lab/bot @ us-east-1 · run {run_id}"
    assert suite.get("timestamp")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["suites"] == ", ".join(SUITES)
    assert properties["simulated"] == "true"
    assert properties["cost_usd"] == "0.000136"
    cases = suite.findall("testcase")
    names = [(c.get("classname"), c.get("name")) for c in cases]
    refund = "lab/bot.support-bot/refund-policy"
    assert names == [
        ("lab/bot", "basic-prompt"),
        ("lab/bot", "streaming"),
        ("lab/bot", "vision"),
        (refund, "assertion 1: contains '30 days'"),
        (refund, "assertion 2: any-of"),
        (refund, "assertion 2.1: contains 'thirty'"),
        (refund, "assertion 2.2: icontains 'refund'"),
        (refund, "assertion 3: not-contains 'I cannot'"),
        (refund, "assertion 4: llm-judge by lab/judge"),
        ("lab/bot.support-bot/outage", "support-bot/outage: no answer"),
        ("lab/bot.support-bot/greeting", "assertion 1: greets"),
    ]
    failed: dict[str | None, ET.Element] = {}
    for case in cases:
        failure = case.find("failure")
        if failure is not None:
            failed[case.get("name")] = failure
    assert set(failed) == {
        "streaming",
        "assertion 3: not-contains 'I cannot'",
        "assertion 4: llm-judge by lab/judge",
        "support-bot/outage: no answer",
    }
    assert failed["streaming"].get("type") == "RATE_LIMIT"
    assert "429 Too Many Requests" in (failed["streaming"].get("message") or "")
    not_contains = failed["assertion 3: not-contains 'I cannot'"]
    assert not_contains.get("message") == "'I cannot' found in answer 'I cannot say: 30 days'"
    assert not_contains.get("type") == "not-contains"
    judge = failed["assertion 4: llm-judge by lab/judge"]
    assert judge.get("message") == "score 0.20 < threshold 0.50"
    assert REASONING in (judge.text or "")
    assert failed["support-bot/outage: no answer"].get("type") == "TIMEOUT"
    # An alternative that failed under an any-of that passed is not a failure.
    spared = next(c for c in cases if c.get("name") == "assertion 2.1: contains 'thirty'")
    assert "another alternative" in (spared.findtext("system-out") or "")
    skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
    assert skipped == ["vision"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("11", "4", "1")
    assert (root.get("tests"), root.get("failures")) == ("11", "4")


def test_junit_has_a_testcase_per_assertion_over_the_api(
    client: TestClient, viewer: dict[str, str], run_id: int
) -> None:
    one = client.get(f"/api/runs/{run_id}/junit", headers=viewer)
    assert one.status_code == 200, one.text
    assert one.headers["content-type"].startswith("application/xml")
    _check_junit(one.text, run_id)

    for kind in ("tests", "runs"):
        export = client.get(
            "/api/runs/export", params={"kind": kind, "format": "junit"}, headers=viewer
        )
        assert export.status_code == 200, export.text
        assert export.headers["content-type"].startswith("application/xml")
        assert f'filename="modelcert-{kind}.xml"' in export.headers["content-disposition"]
        _check_junit(export.text, run_id)

    missing = client.get("/api/runs/999999/junit", headers=viewer)
    assert missing.status_code == 404 and missing.json()["field"] == "runId"
    assert client.get(f"/api/runs/{run_id}/junit").status_code == 401


def test_the_dashboard_export_downloads_junit(
    client: TestClient, catalog: sessionmaker[Session], run_id: int
) -> None:
    client.post(f"{D}/login", data={"api_key": new_key(catalog, "ops", Role.operator)})
    assert 'value="junit"' in client.get(f"{D}/export").text
    export = client.get(f"{D}/export", params={"download": "true", "format": "junit"})
    assert export.status_code == 200, export.text[:300]
    assert export.headers["content-type"].startswith("application/xml")
    assert 'filename="modelcert-runs.xml"' in export.headers["content-disposition"]
    _check_junit(export.text, run_id)


def test_junit_text_is_xml_safe_and_names_assertions_without_a_definition() -> None:
    run = {
        "run_id": 7,
        "deployment": "lab/bot",
        "region": "eu-west-1",
        "started_at": "2026-12-03T10:00:00+00:00",
        "duration_ms": 1500.0,
        "status": "FAILED",
        "suites": [SUITE],
        "simulated": False,
        "cost_usd": None,
    }
    test = {
        "run_id": 7,
        "position": 0,
        "test_id": "support-bot/refund-policy",
        "outcome": "FAILED",
        "suite": "support-bot@ffffffffffffffff",  # a version no longer stored
        "assertions": [
            {"type": "contains", "passed": False, "detail": "answer 'a\x00b\x1b[31m'"},
            {
                "type": "all-of",
                "passed": False,
                "detail": "1 of 2 failed",
                "children": [
                    {"type": "regex", "passed": True, "detail": "matched"},
                    {"type": "equals", "passed": False, "detail": "not 'OK'"},
                ],
            },
        ],
    }
    document = render_runs_junit([run], [test])
    root = ET.fromstring(document)  # parses: no control characters left
    (suite,) = root.findall("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["cost_usd"] == "unknown" and properties["simulated"] == "false"
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names == [
        "assertion 1: contains",
        "assertion 2: all-of",
        "assertion 2.1: regex",
        "assertion 2.2: equals",
    ]
    failures = [c.find("failure") for c in suite.findall("testcase")]
    assert [f is not None for f in failures] == [True, True, False, True]  # all-of: no spare
    assert "\ufffd" in (failures[0].get("message") or "")  # type: ignore[union-attr]


# --- the CLI --------------------------------------------------------------------------


def _cli(database_url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("MODELCERT_DATABASE_URL", database_url)
    result = invoke(*args)
    return result.code, result.stdout, result.stderr


def test_runs_export_as_junit_from_the_cli(
    database_url: str, run_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _cli(
        database_url, monkeypatch, "runs", "export", "--tests", "--format", "junit"
    )
    assert code == 0, err
    _check_junit(out, run_id)
    code, out, err = _cli(database_url, monkeypatch, "runs", "export", "--format", "junit")
    assert code == 0, err
    assert len(_cases(out)) == 11
    code, out, err = _cli(database_url, monkeypatch, "runs", "export", "--tests")
    assert code == 0, err
    rows = {r["test_id"]: r for r in _csv(out)}
    assert json.loads(rows["support-bot/refund-policy"]["assertions"]) == REFUND_ASSERTIONS


def outcome(
    results: Sequence[TestResult], *, price: Price | None, refusal: str | None = None
) -> CertificationOutcome:
    plan = CertificationPlan(
        deployment_id=1,
        deployment_label="lab/bot",
        provider_slug="lab",
        provider_kind="sim",
        provider_config={},
        target=Target("bot", "us-east-1"),
        streaming=True,
        tests=tuple((r.test_id, None) for r in results),
        policy=RetryPolicy(),
        test_timeout_s=None,
        quota=QuotaKey("lab", "us-east-1", "bot"),
        suites=tuple(SUITES),
        price=price,
    )
    return CertificationOutcome(
        run_id=42,
        plan=plan,
        results=tuple(results),
        score=score_results(results),
        simulated=True,
        duration_s=1.5,
        refusal=refusal,
    )


def _printed(found: CertificationOutcome) -> str:
    console = Console(record=True, width=200, force_terminal=False)
    render.print_outcome(console, found)
    return console.export_text()


def test_the_cli_prints_suites_failed_assertions_and_the_cost_line() -> None:
    price = Price(0.25, 1.25, source="seed:2025-10-01")
    printed = _printed(outcome(suite_results(), price=price))
    assert f"suites: builtin@0.2.0, {SUITE}" in printed
    lines = printed.splitlines()
    failed = [line for line in lines if line.startswith("  support-bot/")]
    assert failed == [
        "  support-bot/refund-policy: assertion 3 not-contains: "
        "'I cannot' found in answer 'I cannot say: 30 days'",
        "  support-bot/refund-policy: assertion 4 llm-judge: score 0.20 < threshold 0.50",
    ]
    cost = next(line for line in lines if line.startswith("cost: "))
    assert cost == (
        "cost: $0.000136 (8 calls, 47 input + 35 output tokens, seed:2025-10-01 prices)"
    )
    assert "support-bot/refund-policy ×2 required" in printed

    unknown = [r for r in suite_results() if r.test_id == "basic-prompt"]
    unknown[0].cost_usd = None
    priceless = _printed(outcome(unknown, price=None))
    assert "cost: unknown (no price for lab/bot" in priceless

    refused = _printed(
        outcome(
            [],
            price=price,
            refusal="the job's budget $0.0100 would be exceeded [spent $0.0100]",
        )
    )
    assert "lab/bot in us-east-1: NOT STARTED (run #42): the job's budget" in refused
    assert "[spent $0.0100]" in refused  # not taken for markup
    assert "Tests" not in refused


def test_outcome_json_carries_suites_cost_and_assertions() -> None:
    document = render.outcome_json(outcome(suite_results(), price=None))
    assert document["suites"] == SUITES
    assert document["cost_usd"] == pytest.approx(0.000136)
    assert document["refusal"] is None
    tests = {t["test_id"]: t for t in document["tests"]}
    refund = tests["support-bot/refund-policy"]
    assert (refund["suite"], refund["weight"], refund["required"]) == (SUITE, 2.0, True)
    assert refund["assertions"] == REFUND_ASSERTIONS
    assert refund["cost_usd"] == pytest.approx(0.000123)
    assert tests["basic-prompt"]["suite"] is None
    json.dumps(document)  # JSON-able
