"""Run history out of the service and two runs compared, from the API (`/api/runs/export`,
`/api/runs/diff`) and the CLI (`modelcert runs export`, `modelcert runs diff`), on real
runs (certified by the engine in this process) on SQLite and PostgreSQL. Start times are
set on the stored runs (time injected, not waited for)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.reports import runs as history
from modelcert.settings import Settings
from modelcert.store import api_keys, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import CertificationRun, TestResultRow
from tests.support.cli_inprocess import invoke
from tests.support.inprocess import certify_here

DAY = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture
def runs(factory: sessionmaker[Session], settings: Settings) -> dict[str, int]:
    """Four runs: lab/quick in us-east-1 on day 0 and day 2, in eu-west-1 on day 1;
    lab/denied (FAILED) in us-east-1 on day 3. Returns their ids by name."""
    import asyncio

    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1", "eu-west-1"])
        for name, profile in (("quick", "healthy-fast"), ("denied", "access-denied")):
            repo.add_deployment(
                session,
                provider_slug="lab",
                provider_model_id=name,
                options={"profile": profile, "latency_ms": 5},
            )
    plan = [
        ("quick-us-0", "lab/quick", "us-east-1", 0),
        ("quick-eu-1", "lab/quick", "eu-west-1", 1),
        ("quick-us-2", "lab/quick", "us-east-1", 2),
        ("denied-us-3", "lab/denied", "us-east-1", 3),
    ]
    ids: dict[str, int] = {}
    for name, ref, region, day in plan:
        outcome = asyncio.run(certify_here(settings, ref, region))
        ids[name] = outcome.run_id
        with transaction(factory) as session:
            session.execute(
                update(CertificationRun)
                .where(CertificationRun.id == outcome.run_id)
                .values(started_at=DAY + timedelta(days=day))
            )
    return ids


@pytest.fixture
def client(settings: Settings, factory: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, session_factory=factory)) as test_client:
        yield test_client


@pytest.fixture
def viewer(factory: sessionmaker[Session]) -> dict[str, str]:
    with transaction(factory) as session:
        _, plain = api_keys.create_api_key(session, "analyst", Role.viewer)
    return {"Authorization": f"Bearer {plain}"}


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_runs_and_tests_by_date_range_over_http(
    client: TestClient, viewer: dict[str, str], runs: dict[str, int]
) -> None:
    answer = client.get("/api/runs/export", headers=viewer)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert 'filename="modelcert-runs.csv"' in answer.headers["content-disposition"]
    assert answer.text.splitlines()[0] == ",".join(history.RUN_FIELDS)
    rows = _csv(answer.text)
    assert [int(r["run_id"]) for r in rows] == [
        runs["quick-us-0"],
        runs["quick-eu-1"],
        runs["quick-us-2"],
        runs["denied-us-3"],
    ]  # oldest first
    assert [r["status"] for r in rows] == ["CERTIFIED", "CERTIFIED", "CERTIFIED", "FAILED"]
    assert rows[3]["error_category"] == "PERMISSION_ERROR" and rows[3]["simulated"] == "true"

    window = client.get(
        "/api/runs/export",
        params={"format": "json", "since": "2026-11-21", "until": "2026-11-23"},
        headers=viewer,
    ).json()
    assert window["schema"] == "modelcert.runs/1" and window["truncated"] is False
    assert [r["run_id"] for r in window["rows"]] == [runs["quick-eu-1"], runs["quick-us-2"]]

    one = client.get(
        "/api/runs/export",
        params={"format": "json", "modelId": "lab/quick", "region": "us-east-1"},
        headers=viewer,
    ).json()
    assert [r["run_id"] for r in one["rows"]] == [runs["quick-us-0"], runs["quick-us-2"]]

    tests = client.get(
        "/api/runs/export", params={"kind": "tests", "until": "2026-11-21"}, headers=viewer
    )
    test_rows = _csv(tests.text)
    assert {int(r["run_id"]) for r in test_rows} == {runs["quick-us-0"]}
    assert [r["test_id"] for r in test_rows][:2] == ["basic-prompt", "streaming"]
    assert all(r["outcome"] in ("PASSED", "SKIPPED") for r in test_rows)

    capped = client.get(
        "/api/runs/export", params={"kind": "tests", "limit": 3, "format": "json"}, headers=viewer
    )
    assert capped.headers["x-modelcert-truncated"] == "true"
    assert len(capped.json()["rows"]) == 3 and capped.json()["truncated"] is True


def test_export_refuses_bad_input_naming_the_field(
    client: TestClient, viewer: dict[str, str], runs: dict[str, int]
) -> None:
    cases = [
        ({"since": "yesterday"}, 422, "since"),
        ({"format": "xlsx"}, 422, "format"),
        ({"kind": "jobs"}, 422, "kind"),
        ({"limit": 0}, 422, "limit"),
        ({"modelId": "lab/nope"}, 404, "modelId"),
        ({"modelId": "99999999999999"}, 404, "modelId"),
        ({"since": "2026-11-22", "until": "2026-11-21"}, 400, "until"),
    ]
    for params, code, field in cases:
        answer = client.get("/api/runs/export", params=params, headers=viewer)
        assert answer.status_code == code, (params, answer.text)
        assert answer.json()["field"] == field, (params, answer.json())
    assert client.get("/api/runs/export").status_code == 401


def test_a_formula_in_a_message_is_not_a_formula_in_the_csv(
    client: TestClient, viewer: dict[str, str], runs: dict[str, int], factory: sessionmaker[Session]
) -> None:
    with transaction(factory) as session:
        session.execute(
            update(TestResultRow)
            .where(TestResultRow.run_id == runs["denied-us-3"], TestResultRow.position == 0)
            .values(error_message='=HYPERLINK("http://evil.example","click")')
        )
    rows = _csv(client.get("/api/runs/export", params={"kind": "tests"}, headers=viewer).text)
    denied = [r for r in rows if int(r["run_id"]) == runs["denied-us-3"]]
    assert denied[0]["error_message"] == '\'=HYPERLINK("http://evil.example","click")'


def test_diff_two_runs_test_by_test_over_http(
    client: TestClient, viewer: dict[str, str], runs: dict[str, int], factory: sessionmaker[Session]
) -> None:
    a, b = runs["quick-us-0"], runs["quick-eu-1"]  # one deployment in two regions
    with transaction(factory) as session:
        session.execute(
            update(TestResultRow)
            .where(TestResultRow.run_id == b, TestResultRow.test_id == "basic-prompt")
            .values(latency_ms=1500.0, retries=2, ttft_ms=None)
        )
        before = session.scalars(
            select(TestResultRow).where(
                TestResultRow.run_id == a, TestResultRow.test_id == "basic-prompt"
            )
        ).one()
        latency_a = before.latency_ms
    answer = client.get("/api/runs/diff", params={"a": a, "b": b}, headers=viewer)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["deployment"] == "lab/quick"
    assert (found["a"]["region"], found["b"]["region"]) == ("us-east-1", "eu-west-1")
    basic = next(t for t in found["tests"] if t["test_id"] == "basic-prompt")
    assert basic["a"]["outcome"] == basic["b"]["outcome"] == "PASSED"
    assert "latency_ms" in basic["changed"] and "retries" in basic["changed"]
    assert basic["delta"]["retries"] == 2 - basic["a"]["retries"]
    assert basic["delta"]["latency_ms"] == round(1500.0 - latency_a, 3)
    assert basic["delta"]["ttft_ms"] is None  # B has none
    assert found["changedTests"] >= 1
    assert {t["test_id"] for t in found["tests"]} >= {"basic-prompt", "streaming"}

    other = client.get("/api/runs/diff", params={"a": a, "b": runs["denied-us-3"]}, headers=viewer)
    assert other.status_code == 400 and other.json()["field"] == "b"
    missing = client.get("/api/runs/diff", params={"a": 999999, "b": b}, headers=viewer)
    assert missing.status_code == 404 and missing.json()["field"] == "a"
    bad = client.get("/api/runs/diff", params={"a": "x", "b": b}, headers=viewer)
    assert bad.status_code == 422 and bad.json()["field"] == "a"


def test_compare_tests_shows_a_test_only_one_run_has() -> None:
    a = [{"test_id": "basic-prompt", "outcome": "PASSED", "latency_ms": 10.0, "retries": 0}]
    b = [
        {"test_id": "basic-prompt", "outcome": "FAILED", "latency_ms": None, "retries": 1},
        {"test_id": "tool-calling", "outcome": "PASSED", "latency_ms": 5.0, "retries": 0},
    ]
    compared = history.compare_tests(a, b)
    assert [c["test_id"] for c in compared] == ["basic-prompt", "tool-calling"]
    assert compared[0]["changed"] == ["outcome", "latency_ms", "retries"]
    assert compared[0]["delta"] == {"latency_ms": None, "ttft_ms": None, "retries": 1}
    assert compared[1]["a"] is None and compared[1]["changed"] == ["missing"]


@pytest.mark.parametrize(
    ("latency_a", "latency_b", "differs"),
    [(256.0, 258.0, False), (250.0, 299.0, False), (250.0, 300.0, True), (2000.0, 2350.0, False),
     (2000.0, 2400.0, True), (None, 30.0, True)],
)  # fmt: skip
def test_a_timing_differs_beyond_jitter_only(
    latency_a: float | None, latency_b: float, differs: bool
) -> None:
    # Two healthy runs a few ms apart on every test are not "10 tests differ".
    a = [{"test_id": "t", "outcome": "PASSED", "latency_ms": latency_a, "ttft_ms": latency_a}]
    b = [{"test_id": "t", "outcome": "PASSED", "latency_ms": latency_b, "ttft_ms": latency_b}]
    (compared,) = history.compare_tests(a, b)
    expected = ["latency_ms", "ttft_ms"] if differs else []
    assert compared["changed"] == expected
    if latency_a is not None:
        assert compared["delta"]["latency_ms"] == latency_b - latency_a


# --- the CLI --------------------------------------------------------------------------


def _cli(database_url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("MODELCERT_DATABASE_URL", database_url)
    result = invoke(*args)
    return result.code, result.stdout, result.stderr


def test_runs_export_and_diff_from_the_cli(
    database_url: str,
    runs: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    code, out, err = _cli(database_url, monkeypatch, "runs", "export", "--since", "2026-11-22")
    assert code == 0, err
    assert [int(r["run_id"]) for r in _csv(out)] == [runs["quick-us-2"], runs["denied-us-3"]]

    target = tmp_path / "tests.json"
    code, out, err = _cli(
        database_url,
        monkeypatch,
        "runs", "export", "--tests", "--format", "json", "--deployment", "lab/denied",
        "--output", str(target),
    )  # fmt: skip
    assert code == 0, err
    assert "written to" in err and out == ""
    document = json.loads(target.read_text())
    assert {r["run_id"] for r in document["rows"]} == {runs["denied-us-3"]}
    assert document["rows"][0]["error_category"] == "PERMISSION_ERROR"

    code, out, err = _cli(database_url, monkeypatch, "runs", "export", "--limit", "1")
    assert code == 0 and len(_csv(out)) == 1 and "more than 1 runs matched" in err

    a, b = str(runs["quick-us-0"]), str(runs["quick-us-2"])
    code, out, err = _cli(database_url, monkeypatch, "runs", "diff", a, b)
    assert code == 0, err
    assert "lab/quick: run" in out and "basic-prompt" in out and "latency ms A→B" in out
    code, out, _ = _cli(database_url, monkeypatch, "runs", "diff", a, b, "--json")
    assert json.loads(out)["b"]["run_id"] == runs["quick-us-2"]

    for args, fragment in (
        (("runs", "diff", a, str(runs["denied-us-3"])), "compare two runs of one deployment"),
        (("runs", "diff", a, "0"), "B: 0 is not a run id"),
        (("runs", "diff", "999999", b), "unknown run 999999"),
        (("runs", "export", "--since", "soon"), "--since"),
        (("runs", "export", "--format", "xlsx"), "--format"),
        (("runs", "export", "--deployment", "lab/nope"), "unknown deployment"),
    ):
        code, out, err = _cli(database_url, monkeypatch, *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert fragment in lines[0], (args, lines[0])
