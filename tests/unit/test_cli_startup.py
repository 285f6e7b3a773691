"""`modelcert --help` starts fast: it imports none of the heavy libraries (they are
imported by the commands that use them), and the CLI's light option enums stay equal to
the domain's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from modelcert import domain
from modelcert.cli import choices

# What made `modelcert --help` take 1.2-2.8 s: none of it is needed to print the help.
HEAVY = (
    "sqlalchemy",
    "dbos",
    "fastapi",
    "starlette",
    "uvicorn",
    "boto3",
    "botocore",
    "openai",
    "httpx",
    "psycopg",
    "alembic",
    "pydantic",
    "pydantic_settings",
    "structlog",
    "prometheus_client",
    "modelcert.domain",
    "modelcert.settings",
    "modelcert.store",
    "modelcert.certify",
    "modelcert.jobs",
    "modelcert.api",
)

PROBE = """
import json, sys
from modelcert.cli import run_command
code = run_command(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _imports_of(*args: str) -> tuple[int, list[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], report["modules"], done.stdout


@pytest.mark.parametrize("args", [("--help",), ()])
def test_the_help_imports_no_heavy_module(args: tuple[str, ...]) -> None:
    code, modules, output = _imports_of(*args)
    assert code == 0 or (not args and code == 2), code  # bare `modelcert`: help, exit 2
    assert "certify" in output and "enqueue" in output and "audit" in output
    heavy = sorted(
        m for m in modules if any(m == name or m.startswith(f"{name}.") for name in HEAVY)
    )
    assert heavy == []


def test_the_help_of_every_group_imports_no_heavy_module() -> None:
    for group in ("jobs", "catalog", "region", "apikey", "db"):
        code, modules, output = _imports_of(group, "--help")
        assert code == 0, (group, output)
        assert "sqlalchemy" not in modules and "dbos" not in modules, group


@pytest.mark.parametrize(
    ("light", "real"),
    [
        (choices.Priority, domain.Priority),
        (choices.InferenceType, domain.InferenceType),
        (choices.JobStatus, domain.JobStatus),
    ],
)
def test_the_cli_choices_mirror_the_domain(light: type, real: type) -> None:
    assert [m.value for m in light] == [m.value for m in real]  # type: ignore[attr-defined]
