"""Report decisions and renderings, without a database: states, reasons, the change
history, the CI requirement syntax, and the JSON, Markdown and JUnit documents."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelcert.errors import UserError
from modelcert.reports.build import (
    EXPIRED,
    NEVER_CERTIFIED,
    Change,
    Entry,
    Report,
    ReportFilters,
    Requirement,
    RunVerdict,
    certification_state,
    derive_changes,
    parse_since,
)
from modelcert.reports.formats import render, render_junit, render_markdown, report_json

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


_IDS: dict[str, int] = {}  # one stable id per model id


def entry(model_id: str, region: str, state: str, **fields: Any) -> Entry:
    valid = state in ("CERTIFIED", "QUALITY_WARNING")
    values: dict[str, Any] = dict(
        deployment_id=_IDS.setdefault(model_id, len(_IDS) + 1),
        provider="lab",
        model_id=model_id,
        model=model_id.title(),
        region=region,
        status=None if state == NEVER_CERTIFIED else state,
        state=state,
        valid=valid,
        simulated=False,
    )
    if valid:
        values.update(rating=4.7, score=94, badge="RECOMMENDED", expires_at=NOW + 3 * DAY)
    values.update(fields)
    return Entry(**values)


def report(entries: list[Entry], changes: list[Change] | None = None) -> Report:
    labels = {e.deployment_id: e.deployment for e in entries}
    return Report(NOW, NOW - 7 * DAY, ReportFilters(), entries, changes or [], labels)


MIXED = [
    entry("alpha", "us-east-1", "CERTIFIED"),
    entry(
        "beta",
        "us-east-1",
        "FAILED",
        badge="UNAVAILABLE",
        rating=0.0,
        error_category="PERMISSION_ERROR",
        error_message="You don't have access to the model.",
    ),
    entry("beta", "eu-west-1", NEVER_CERTIFIED),
    entry("gamma", "eu-west-1", EXPIRED, status="CERTIFIED", expires_at=NOW - DAY),
]


# Since, states, requirements


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("12h", NOW - timedelta(hours=12)),
        ("7d", NOW - 7 * DAY),
        ("2w", NOW - 14 * DAY),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T10:00:00+02:00", datetime(2026, 11, 1, 8, tzinfo=UTC)),
    ],
)
def test_since_takes_a_duration_or_a_date(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7", "-7d", "7x", ""])
def test_since_refuses_anything_else_naming_the_field(text: str) -> None:
    with pytest.raises(UserError) as raised:
        parse_since(text, NOW)
    assert raised.value.field == "since"


def test_state_tells_expired_and_never_certified_from_stored_status() -> None:
    assert certification_state(None, None, NOW) == NEVER_CERTIFIED
    assert certification_state("CERTIFIED", NOW + DAY, NOW) == "CERTIFIED"
    assert certification_state("QUALITY_WARNING", NOW + DAY, NOW) == "QUALITY_WARNING"
    assert certification_state("CERTIFIED", NOW, NOW) == EXPIRED
    assert certification_state("CERTIFIED", None, NOW) == EXPIRED
    assert certification_state("FAILED", None, NOW) == "FAILED"
    assert certification_state("RUNNING", NOW + DAY, NOW) == "RUNNING"


def test_reasons_say_why_a_pair_is_not_certified() -> None:
    alpha, beta, never, expired = MIXED
    assert alpha.reason is None
    assert beta.reason == (
        "FAILED (PERMISSION_ERROR, badge UNAVAILABLE): You don't have access to the model."
    )
    assert never.reason == "never certified in eu-west-1"
    assert expired.reason == "certification expired at 2026-11-29T12:00:00+00:00"
    running = entry("delta", "us-east-1", "RUNNING")
    assert running.reason is not None and "in progress" in running.reason
    cancelled = entry("delta", "us-east-1", "CANCELLED", error_message="cancelled")
    assert cancelled.reason == "CANCELLED: the last certification was cancelled before its verdict"


def test_requirements_are_model_at_region() -> None:
    assert Requirement.parse("sim/aurora-fast@us-east-1") == Requirement(
        "sim/aurora-fast", "us-east-1"
    )
    # The region is after the last @: a model id may hold one.
    assert Requirement.parse("lab/x@2@eu-west-1") == Requirement("lab/x@2", "eu-west-1")
    assert str(Requirement("7", "global")) == "7@global"
    for bad in ("aurora", "@us-east-1", "aurora@"):
        with pytest.raises(UserError, match="MODEL@REGION"):
            Requirement.parse(bad)


# Changes from the run history


def verdict(run_id: int, status: str, at: datetime, region: str = "us-east-1") -> RunVerdict:
    return RunVerdict(run_id, 1, region, status, at)


def transitions(changes: list[Change]) -> list[tuple[str | None, str, datetime]]:
    return [(c.from_state, c.to_state, c.changed_at) for c in changes]


def test_a_certified_deployment_that_fails_is_a_change_and_a_repeat_is_not() -> None:
    runs = [
        verdict(1, "CERTIFIED", NOW - 10 * DAY),  # before the window: the "from"
        verdict(2, "CERTIFIED", NOW - 4 * DAY),
        verdict(3, "FAILED", NOW - 2 * DAY),
        verdict(4, "FAILED", NOW - DAY),
    ]
    changes = derive_changes(runs, NOW - 7 * DAY, NOW)
    assert transitions(changes) == [("CERTIFIED", "FAILED", NOW - 2 * DAY)]
    assert changes[0].run_id == 3


def test_first_verdicts_and_newest_first() -> None:
    runs = [
        verdict(1, "FAILED", NOW - 3 * DAY),
        verdict(2, "QUALITY_WARNING", NOW - DAY, region="eu-west-1"),
        verdict(3, "CERTIFIED", NOW - 2 * DAY),
    ]
    assert transitions(derive_changes(runs, NOW - 7 * DAY, NOW)) == [
        (None, "QUALITY_WARNING", NOW - DAY),
        ("FAILED", "CERTIFIED", NOW - 2 * DAY),
        (None, "FAILED", NOW - 3 * DAY),
    ]


def test_a_verdict_not_renewed_in_time_expires() -> None:
    # Certified 9 days ago: expired 2 days ago, inside the window; no run caused it.
    lapsed = derive_changes([verdict(1, "CERTIFIED", NOW - 9 * DAY)], NOW - 7 * DAY, NOW)
    assert transitions(lapsed) == [("CERTIFIED", EXPIRED, NOW - 2 * DAY)]
    assert lapsed[0].run_id is None
    # Renewed after a gap: it expired, then was certified again.
    renewed = [verdict(1, "CERTIFIED", NOW - 12 * DAY), verdict(2, "CERTIFIED", NOW - DAY)]
    assert transitions(derive_changes(renewed, NOW - 7 * DAY, NOW)) == [
        (EXPIRED, "CERTIFIED", NOW - DAY),
        ("CERTIFIED", EXPIRED, NOW - 5 * DAY),
    ]
    # Renewed in time: nothing happened.
    steady = [verdict(1, "CERTIFIED", NOW - 8 * DAY), verdict(2, "CERTIFIED", NOW - 3 * DAY)]
    assert derive_changes(steady, NOW - 7 * DAY, NOW) == []
    # A failure does not expire.
    assert derive_changes([verdict(1, "FAILED", NOW - 30 * DAY)], NOW - 7 * DAY, NOW) == []


def test_changes_before_the_window_are_left_out() -> None:
    runs = [verdict(1, "FAILED", NOW - 6 * DAY), verdict(2, "CERTIFIED", NOW - 5 * DAY)]
    assert transitions(derive_changes(runs, NOW - 5 * DAY, NOW)) == [
        ("FAILED", "CERTIFIED", NOW - 5 * DAY)
    ]
    assert derive_changes(runs, NOW - 4 * DAY, NOW) == []


# Renderings


def test_json_schema_is_stable() -> None:
    change = Change(MIXED[1].deployment_id, "us-east-1", "CERTIFIED", "FAILED", NOW - DAY, 9)
    body = json.loads(render(report(MIXED, [change]), "json"))
    assert list(body) == [
        "schema",
        "generated_at",
        "since",
        "filters",
        "simulated",
        "summary",
        "certifications",
        "changes",
    ]
    assert body["schema"] == "modelcert.report/1"
    assert body["summary"] == {"total": 4, "valid": 1, "not_valid": 3, "changes": 1}
    assert list(body["certifications"][0]) == [
        "deployment_id",
        "deployment",
        "provider",
        "model_id",
        "model",
        "region",
        "status",
        "state",
        "valid",
        "reason",
        "rating",
        "score",
        "badge",
        "simulated",
        "certified_at",
        "expires_at",
        "error_category",
        "error_message",
        "last_run_id",
        "suites",  # added fields keep the schema's version (none changed meaning)
        "last_run_cost_usd",
    ]
    assert body["changes"] == [
        {
            "deployment_id": MIXED[1].deployment_id,
            "deployment": "lab/beta",
            "region": "us-east-1",
            "from": "CERTIFIED",
            "to": "FAILED",
            "changed_at": "2026-11-29T12:00:00+00:00",
            "run_id": 9,
            "error_category": None,
            "error_message": None,
        }
    ]
    never = body["certifications"][2]
    assert (never["status"], never["state"], never["valid"]) == (None, NEVER_CERTIFIED, False)


def junit(entries: list[Entry]) -> ET.Element:
    return ET.fromstring(render_junit(report(entries)).encode())


def test_junit_has_one_case_per_pair_and_a_failure_for_each_not_certified() -> None:
    edge = entry("delta", "ap-southeast-1", "CERTIFIED", provider="edge")
    root = junit([*MIXED, edge])
    assert (root.get("tests"), root.get("failures")) == ("5", "3")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"lab", "edge"}
    assert (suites["lab"].get("tests"), suites["lab"].get("failures")) == ("4", "3")
    assert (suites["edge"].get("tests"), suites["edge"].get("failures")) == ("1", "0")
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert cases[("lab/alpha", "us-east-1")].find("failure") is None
    failed = cases[("lab/beta", "us-east-1")].find("failure")
    assert failed is not None and failed.get("type") == "FAILED"
    assert failed.text == "You don't have access to the model."
    never = cases[("lab/beta", "eu-west-1")].find("failure")
    assert never is not None and never.get("type") == NEVER_CERTIFIED
    expired = cases[("lab/gamma", "eu-west-1")].find("failure")
    assert expired is not None and expired.get("type") == EXPIRED


def test_junit_survives_hostile_provider_messages() -> None:
    message = 'bad <tag> & "quotes" \x00\x1b[31m ]]> end'
    root = junit([entry("beta", "us-east-1", "FAILED", error_message=message)])
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None and failure.text is not None
    # Everything XML can carry comes back intact; the control characters are replaced.
    assert failure.text == 'bad <tag> & "quotes" \ufffd\ufffd[31m ]]> end'
    assert 'bad <tag> & "quotes"' in (failure.get("message") or "")


def test_junit_labels_simulation() -> None:
    root = junit([entry("alpha", "us-east-1", "CERTIFIED", simulated=True)])
    prop = root.find("testsuite/properties/property")
    assert prop is not None and (prop.get("name"), prop.get("value")) == ("simulated", "true")
    out = root.find("testsuite/testcase/system-out")
    assert out is not None and "SIMULATION" in (out.text or "")


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_markdown_matrix_failures_and_changes() -> None:
    change = Change(MIXED[1].deployment_id, "us-east-1", "CERTIFIED", "FAILED", NOW - DAY, 9)
    text = render_markdown(report(MIXED, [change]))
    assert "SIMULATION" not in text
    assert "1 of 4 deployment × region pairs are certified" in text
    assert table_rows(text) == [
        "| deployment | eu-west-1 | us-east-1 |",
        "| lab/alpha | – | ✅ CERTIFIED 4.7 RECOMMENDED |",
        "| lab/beta | ❌ NEVER\\_CERTIFIED | ❌ FAILED (PERMISSION\\_ERROR) |",
        "| lab/gamma | ❌ EXPIRED | – |",
    ]
    assert "- lab/beta in us-east-1: FAILED (PERMISSION\\_ERROR, badge UNAVAILABLE)" in text
    assert "- 1 deployment × region pairs were never certified." in text
    assert "- 2026-11-29T12:00:00+00:00: lab/beta in us-east-1: CERTIFIED → FAILED" in text


def test_markdown_labels_simulation_and_keeps_tables_intact() -> None:
    hostile = entry(
        "pipe|model",
        "us-east-1",
        "FAILED",
        simulated=True,
        error_category="QUALITY_ISSUE",
        error_message="answer was | not | json\nsecond line <script>",
    )
    text = render_markdown(report([hostile]))
    assert "**SIMULATION**" in text
    header, row = table_rows(text)  # (the |---| rule line is left out)
    unescaped_pipes = len(re.findall(r"(?<!\\)\|", row))
    assert unescaped_pipes == len(re.findall(r"(?<!\\)\|", header))
    assert "(simulated)" in row
    failure = next(line for line in text.splitlines() if line.startswith("- lab/pipe"))
    assert "answer was \\| not \\| json second line \\<script\\>" in failure


def test_empty_report_and_unknown_format() -> None:
    text = render_markdown(report([]))
    assert "No deployments match." in text and "No changes." in text
    assert report_json(report([]))["summary"]["total"] == 0
    assert junit([]).get("tests") == "0"
    with pytest.raises(UserError) as raised:
        render(report([]), "html")
    assert raised.value.field == "format"
