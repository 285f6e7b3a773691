"""`modelcert report` as a CI pipeline runs it: real processes on a database populated by
certifying sim deployments with the real command, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from modelcert.store import repo
from modelcert.store.db import transaction
from tests.conftest import SavedDatabases
from tests.e2e.test_cli import run


@pytest.fixture
def catalog_url(database_url: str, factory: sessionmaker[Session]) -> str:
    """Sim providers `lab` (a healthy and a denied deployment) and `edge` (one healthy),
    added in-process; the certifications and reports go through the real command."""
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1"])
        repo.add_provider(session, slug="edge", kind="sim", regions=["eu-west-1"])
        for provider, model_id, profile in (
            ("lab", "quick", "healthy-fast"),
            ("lab", "denied", "access-denied"),
            ("edge", "tiny", "healthy-fast"),
        ):
            repo.add_deployment(
                session,
                provider_slug=provider,
                provider_model_id=model_id,
                options={"profile": profile, "latency_ms": 5},
            )
    return database_url


@pytest.fixture
def certified_url(catalog_url: str, saved_databases: SavedDatabases) -> str:
    """lab/quick CERTIFIED and lab/denied FAILED in us-east-1; edge/tiny never certified.

    Certified by the real command once per session and backend; every test then gets its
    own copy of that database (`SavedDatabases`). Its tests share an xdist group, so that
    "once" holds under xdist too."""

    def certify() -> None:
        for deployment in ("lab/quick", "lab/denied"):
            done = run(catalog_url, "certify", "--deployment", deployment, "--region", "us-east-1")
            # Exit 1: not certified (lab/denied is refused access).
            assert done.returncode == (1 if deployment == "lab/denied" else 0), done.stderr

    saved_databases.ensure("report-cli-certified", certify)
    return catalog_url


certified = pytest.mark.xdist_group("report-cli-certified")


@certified
def test_json_report_and_a_passing_gate(certified_url: str) -> None:
    result = run(certified_url, "report", "--format", "json", "--require", "quick@us-east-1")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "certified: quick@us-east-1"
    body = json.loads(result.stdout)
    states = {(c["deployment"], c["region"]): c["state"] for c in body["certifications"]}
    assert states == {
        ("edge/tiny", "eu-west-1"): "NEVER_CERTIFIED",
        ("lab/denied", "us-east-1"): "FAILED",
        ("lab/quick", "us-east-1"): "CERTIFIED",
    }
    assert body["simulated"] is True
    assert {(c["deployment"], c["to"]) for c in body["changes"]} == {
        ("lab/quick", "CERTIFIED"),
        ("lab/denied", "FAILED"),
    }


@certified
def test_the_gate_fails_naming_what_is_not_certified(certified_url: str) -> None:
    result = run(
        certified_url,
        *("report", "--format", "markdown"),
        *("--require", "lab/quick@us-east-1"),
        *("--require", "lab/denied@us-east-1"),
        *("--require", "edge/tiny@eu-west-1"),
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "not certified: lab/denied@us-east-1: FAILED (PERMISSION_ERROR, badge UNAVAILABLE): "
        "You don't have access to the model with the specified model ID. (simulated)",
        "not certified: edge/tiny@eu-west-1: never certified in eu-west-1",
    ]
    # The report is written all the same, for the pipeline's artefacts.
    assert "| lab/quick (simulated) | – | ✅ CERTIFIED 5.0 PREMIUM |" in result.stdout


@certified
def test_junit_to_a_file_with_filters(certified_url: str, tmp_path: Path) -> None:
    target = tmp_path / "certifications.xml"
    result = run(
        certified_url,
        *("report", "--format", "junit", "--output", str(target)),
        *("--provider", "lab", "--region", "us-east-1", "--since", "1h"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert f"report written to {target}" in result.stderr
    root = ET.parse(target).getroot()
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    failed = [c.get("classname") for c in root.iter("testcase") if c.find("failure") is not None]
    assert failed == ["lab/denied"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--require", "ghost@us-east-1"), "unknown deployment 'ghost'"),
        (("--require", "lab/quick@mars-1"), "region 'mars-1' is not served by provider 'lab'"),
        (("--require", "lab/quick"), "--require: expected MODEL@REGION"),
        (("--format", "html"), "--format: 'html' is not one of json, markdown, junit"),
        (("--since", "last week"), "--since 'last week': must be a window (30m, 12h, 7d, 2w)"),
        (("--provider", "ghost"), "unknown provider 'ghost'"),
        (("--region", "mars-1"), "unknown region 'mars-1'"),
        (("--output", "/nonexistent/dir/report.md"), "--output: cannot write"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    catalog_url: str, args: tuple[str, ...], message: str
) -> None:
    result = run(catalog_url, "report", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
