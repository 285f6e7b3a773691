"""The `modelcert` command as a user runs it: a real process on a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from modelcert.store import repo
from modelcert.store.db import transaction
from tests.support.inprocess import FAST_AVAILABILITY_GAP_S

# The commands' own waits, shortened through their settings (as the in-process tests do):
# the pause inside the `availability` test and the retry back-off.
FAST_ENV = {
    "MODELCERT_AVAILABILITY_GAP_S": str(FAST_AVAILABILITY_GAP_S),
    "MODELCERT_RETRY_BASE_MS": "10",
    "MODELCERT_RETRY_MAX_MS": "100",
}


def run(db_url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **FAST_ENV, "MODELCERT_DATABASE_URL": db_url, "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "modelcert", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=cwd,
    )


@pytest.fixture
def db_url(database_url: str) -> str:
    assert run(database_url, "db", "upgrade").returncode == 0
    return database_url


@pytest.fixture
def lab_url(database_url: str, factory: sessionmaker[Session]) -> str:
    """A database (schema applied in-process) holding a sim provider `lab` and a deployment."""
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1"])
        repo.add_deployment(session, provider_slug="lab", provider_model_id="healthy-fast")
    return database_url


def test_catalog_and_certify_json(db_url: str) -> None:
    assert (
        run(
            db_url,
            "catalog",
            "add-provider",
            "lab",
            "--kind",
            "sim",
            "--region",
            "us-east-1",
            "--region",
            "eu-west-1",
            "--config",
            '{"retry_base_ms": 10}',
        ).returncode
        == 0
    )
    added = run(
        db_url,
        "catalog",
        "add-deployment",
        "--provider",
        "lab",
        "--model-id",
        "healthy-fast:chat-1",
        "--vendor",
        "Anthropic",
        "--capabilities",
        '{"tools": true}',
    )
    assert added.returncode == 0, added.stderr

    listed = json.loads(run(db_url, "catalog", "list", "--json").stdout)
    assert listed[0]["provider_model_id"] == "healthy-fast:chat-1"

    result = run(
        db_url,
        "certify",
        "--deployment",
        "lab/healthy-fast:chat-1",
        "--region",
        "eu-west-1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "CERTIFIED" and report["simulated"] is True
    tests = {t["test_id"]: t for t in report["tests"]}
    assert tests["json-output"]["outcome"] == "SKIPPED"  # json_output not declared
    assert tests["tool-calling"]["outcome"] == "PASSED"
    assert tests["streaming"]["ttft_ms"] > 0

    table = run(db_url, "certify", "--deployment", "1", "--region", "us-east-1")
    assert table.returncode == 0
    for column in ("test", "verdict", "latency ms", "TTFT ms", "retries", "category"):
        assert column in table.stdout
    assert "SIMULATION" in table.stdout

    matrix = json.loads(run(db_url, "matrix", "--json").stdout)
    assert {m["region"] for m in matrix} == {"us-east-1", "eu-west-1"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("certify", "--deployment", "nope", "--region", "us-east-1"), "unknown deployment 'nope'"),
        (
            ("certify", "--deployment", "lab/healthy-fast", "--region", "mars-1"),
            "region 'mars-1' is not served by provider 'lab'",
        ),
        (
            ("catalog", "add-deployment", "--provider", "ghost", "--model-id", "m"),
            "unknown provider 'ghost'",
        ),
        (("catalog", "add-provider", "x", "--kind", "carrier-pigeon"), "unknown provider kind"),
        (
            ("catalog", "add-provider", "y", "--kind", "openai", "--config", '{"api_key": "sk-1"}'),
            "secrets are not stored",
        ),
        (
            ("catalog", "add-provider", "z", "--kind", "sim", "--config", "{oops"),
            "config: invalid JSON",
        ),
        (
            (
                "catalog",
                "add-deployment",
                "--provider",
                "lab",
                "--model-id",
                "m",
                "--capabilities",
                '{"telepathy": true}',
            ),
            "capabilities",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    lab_url: str, args: tuple[str, ...], message: str
) -> None:
    result = run(lab_url, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_missing_schema_is_explained(tmp_path: Path) -> None:
    result = run(f"sqlite:///{tmp_path}/empty.db", "catalog", "list")
    assert result.returncode == 2
    assert "modelcert db upgrade" in result.stderr


def test_secret_values_never_reach_the_database(db_url: str) -> None:
    os.environ["MODELCERT_TEST_SECRET_KEY"] = "sk-very-secret-value"
    result = run(
        db_url,
        "catalog",
        "add-provider",
        "oa",
        "--kind",
        "openai",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--api-key-env",
        "MODELCERT_TEST_SECRET_KEY",
    )
    assert result.returncode == 0
    listed = run(db_url, "catalog", "list", "--json")
    assert "sk-very-secret-value" not in listed.stdout
    if db_url.startswith("sqlite"):
        path = db_url.removeprefix("sqlite:///")
        assert b"sk-very-secret-value" not in Path(path).read_bytes()
