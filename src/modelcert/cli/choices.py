"""The choices the CLI's options take, as light enums.

Typer reads every command's annotations to build `modelcert --help`, so the types named
there must not import pydantic, SQLAlchemy or the engine (`modelcert.domain` imports
pydantic). These mirror the domain's enums value for value; tests/unit/test_cli_startup.py
checks that they stay equal. Commands convert them with `domain.Priority(choice.value)`.
"""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class InferenceType(StrEnum):
    ON_DEMAND = "ON_DEMAND"
    INFERENCE_PROFILE = "INFERENCE_PROFILE"
    PROVISIONED = "PROVISIONED"


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class ExportFormat(StrEnum):
    """`reports.runs.FORMATS`: JUnit is a testsuite per run, a testcase per built-in test
    and per assertion of a suite's test."""

    CSV = "csv"
    JSON = "json"
    JUNIT = "junit"
