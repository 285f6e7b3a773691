"""Run history for people and spreadsheets: every run (or every test of every run) in a
date range as CSV, JSON or JUnit XML, and two runs compared test by test.

`export_rows` and `diff_runs` read the database; `to_csv` / `to_json`, the JUnit
rendering (`reports.run_junit`) and the comparison of two runs' tests (`compare_tests`)
are pure. Used by the API (`/api/runs/export`, `/api/runs/diff`) and the CLI
(`modelcert runs export`, `modelcert runs diff`).

A suite's own test (`suite/test` ids) is a test like any other here: its row names its
suite version, weight, `required` flag and cost; its assertions' outcomes are a list in
JSON and a compact JSON string in the CSV's `assertions` column."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelcert.errors import NotFoundError, UserError
from modelcert.store.models import CertificationRun, Deployment, Provider, Suite, TestResultRow

SCHEMA = "modelcert.runs/1"
KINDS = ("runs", "tests")
FORMATS = ("csv", "json", "junit")
# How each format is served (the API's export and the dashboard's).
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "junit": "application/xml",
}
EXTENSIONS = {"csv": "csv", "json": "json", "junit": "xml"}
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000

RUN_FIELDS = (
    "run_id",
    "deployment_id",
    "deployment",
    "region",
    "job_id",
    "status",
    "rating",
    "badge",
    "score",
    "success_rate",
    "tests_total",
    "tests_passed",
    "tests_failed",
    "tests_skipped",
    "avg_latency_ms",
    "p50_latency_ms",
    "max_latency_ms",
    "total_retries",
    "error_category",
    "error_message",
    "simulated",
    "executor_id",
    "started_at",
    "completed_at",
    "duration_ms",
    "suites",
    "cost_usd",
)
TEST_FIELDS = (
    "run_id",
    "deployment_id",
    "deployment",
    "region",
    "run_started_at",
    "position",
    "test_id",
    "outcome",
    "latency_ms",
    "ttft_ms",
    "retries",
    "attempts",
    "error_category",
    "error_code",
    "http_status",
    "error_message",
    "input_tokens",
    "output_tokens",
    "throttled_s",
    "rate_limited",
    "started_at",
    "duration_ms",
    "suite",
    "weight",
    "required",
    "cost_usd",
    "assertions",
)
# What a comparison shows of each test, and the numbers it gives a difference of. A
# suite's test is compared like a built-in one (by test id); `suite` differs when the two
# runs ran different versions of its suite.
COMPARED = (
    "outcome",
    "latency_ms",
    "ttft_ms",
    "retries",
    "error_category",
    "error_message",
    "suite",
)
NUMERIC = ("latency_ms", "ttft_ms", "retries")
# A latency or TTFT "differs" when it moved by at least this much and this share of A's:
# a few milliseconds either way is every network's jitter, and flagging it would mark
# every test of two healthy runs as changed.
TIMING_NOISE_MS = 50.0
TIMING_NOISE_SHARE = 0.2
TIMINGS = frozenset({"latency_ms", "ttft_ms", "avg_latency_ms"})


@dataclass(frozen=True)
class ExportFilter:
    """Runs started from `since` (inclusive) to `until` (exclusive), of one deployment
    and one region when given."""

    since: datetime | None = None
    until: datetime | None = None
    deployment_id: int | None = None
    region: str | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _label(slug: str, model_id: str) -> str:
    return f"{slug}/{model_id}"


def _runs_query(filters: ExportFilter) -> Any:
    query = (
        select(CertificationRun, Provider.slug, Deployment.provider_model_id)
        .join(Deployment, Deployment.id == CertificationRun.deployment_id)
        .join(Provider, Provider.id == Deployment.provider_id)
    )
    if filters.since is not None:
        query = query.where(CertificationRun.started_at >= filters.since)
    if filters.until is not None:
        query = query.where(CertificationRun.started_at < filters.until)
    if filters.deployment_id is not None:
        query = query.where(CertificationRun.deployment_id == filters.deployment_id)
    if filters.region is not None:
        query = query.where(CertificationRun.region == filters.region)
    return query


def run_row(run: CertificationRun, deployment: str) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "deployment_id": run.deployment_id,
        "deployment": deployment,
        "region": run.region,
        "job_id": run.job_id,
        "status": run.status,
        "rating": run.rating,
        "badge": run.badge,
        "score": run.score,
        "success_rate": run.success_rate,
        "tests_total": run.tests_total,
        "tests_passed": run.tests_passed,
        "tests_failed": run.tests_failed,
        "tests_skipped": run.tests_skipped,
        "avg_latency_ms": run.avg_latency_ms,
        "p50_latency_ms": run.p50_latency_ms,
        "max_latency_ms": run.max_latency_ms,
        "total_retries": run.total_retries,
        "error_category": run.error_category,
        "error_message": run.error_message,
        "simulated": run.simulated,
        "executor_id": run.executor_id,
        "started_at": _iso(run.started_at),
        "completed_at": _iso(run.completed_at),
        "duration_ms": run.duration_ms,
        "suites": list(run.suites or ()),
        "cost_usd": run.cost_usd,
    }


def result_row(test: TestResultRow, run: CertificationRun, deployment: str) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "deployment_id": run.deployment_id,
        "deployment": deployment,
        "region": run.region,
        "run_started_at": _iso(run.started_at),
        "position": test.position,
        "test_id": test.test_id,
        "outcome": test.outcome,
        "latency_ms": test.latency_ms,
        "ttft_ms": test.ttft_ms,
        "retries": test.retries,
        "attempts": test.attempts,
        "error_category": test.error_category,
        "error_code": test.error_code,
        "http_status": test.http_status,
        "error_message": test.error_message,
        "input_tokens": test.input_tokens,
        "output_tokens": test.output_tokens,
        "throttled_s": test.throttled_s,
        "rate_limited": test.rate_limited,
        "started_at": _iso(test.started_at),
        "duration_ms": test.duration_ms,
        "suite": test.suite,
        "weight": test.weight if test.weight is not None else 1.0,
        "required": bool(test.required),
        "cost_usd": test.cost_usd,
        "assertions": test.assertions,
    }


@dataclass
class Export:
    kind: str
    rows: list[dict[str, Any]]
    truncated: bool  # more rows matched than `limit`
    # For JUnit (`export_rows(..., with_tests=True)`): the runs and their tests' rows.
    runs: list[dict[str, Any]] = field(default_factory=list)
    tests: list[dict[str, Any]] = field(default_factory=list)
    with_tests: bool = False
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name@version

    @property
    def fields(self) -> tuple[str, ...]:
        return RUN_FIELDS if self.kind == "runs" else TEST_FIELDS


def export_rows(
    session: Session,
    kind: str,
    filters: ExportFilter,
    *,
    limit: int = DEFAULT_LIMIT,
    with_tests: bool = False,
) -> Export:
    """The runs (kind `runs`) or their tests (kind `tests`) that match, oldest first, at
    most `limit` rows (`truncated` says whether more matched). `with_tests` (what JUnit
    renders from): also the runs and every test row of them, in `runs` and `tests` (kind
    `runs`: every test of the runs exported; kind `tests`: the runs of the tests)."""
    if kind not in KINDS:
        raise UserError(f"kind {kind!r} is not one of {', '.join(KINDS)}", field="kind")
    limit = max(1, min(limit, MAX_LIMIT))
    if kind == "runs":
        query = _runs_query(filters).order_by(CertificationRun.started_at, CertificationRun.id)
        found = list(session.execute(query.limit(limit + 1)))
        rows = [run_row(run, _label(slug, model)) for run, slug, model in found[:limit]]
        export = Export(kind, rows, len(found) > limit, with_tests=with_tests)
        if with_tests:
            export.runs = rows
            export.tests = [
                result_row(test, run, _label(slug, model))
                for run, slug, model in found[:limit]
                for test in run.tests
            ]
            export.definitions = suite_definitions(session, (t["suite"] for t in export.tests))
        return export
    query = (
        _runs_query(filters)
        .add_columns(TestResultRow)
        .join(TestResultRow, TestResultRow.run_id == CertificationRun.id)
        .order_by(CertificationRun.started_at, CertificationRun.id, TestResultRow.position)
    )
    found = list(session.execute(query.limit(limit + 1)))
    rows = [result_row(test, run, _label(slug, model)) for run, slug, model, test in found[:limit]]
    export = Export(kind, rows, len(found) > limit, with_tests=with_tests)
    if with_tests:
        runs: dict[int, dict[str, Any]] = {}
        for run, slug, model, _test in found[:limit]:
            if run.id not in runs:
                runs[run.id] = run_row(run, _label(slug, model))
        export.runs, export.tests = list(runs.values()), rows
        export.definitions = suite_definitions(session, (t["suite"] for t in rows))
    return export


def suite_definitions(session: Session, refs: Iterable[str | None]) -> dict[str, dict[str, Any]]:
    """The stored definitions of the suite versions `refs` names (`name@version`), by
    ref; a version no longer stored is left out."""
    wanted = {ref for ref in refs if ref and "@" in ref}
    if not wanted:
        return {}
    names = sorted({ref.split("@", 1)[0] for ref in wanted})
    found = session.execute(
        select(Suite.name, Suite.version, Suite.definition).where(Suite.name.in_(names))
    )
    return {
        f"{name}@{version}": definition
        for name, version, definition in found
        if f"{name}@{version}" in wanted
    }


# Spreadsheets run a cell that starts with one of these as a formula: a provider's error
# message is not trusted text (OWASP "CSV injection"), so such a cell gets a leading '.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        # Suites run, assertions' outcomes: compact JSON in one cell. It starts with `[`
        # or `{`, never a formula, and a provider's text inside it is quoted.
        value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return f"'{value}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def to_csv(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: _cell(row.get(name)) for name in fields})
    return buffer.getvalue()


def to_json(export: Export, filters: ExportFilter) -> str:
    document = {
        "schema": SCHEMA,
        "kind": export.kind,
        "since": _iso(filters.since),
        "until": _iso(filters.until),
        "deploymentId": filters.deployment_id,
        "region": filters.region,
        "truncated": export.truncated,
        "rows": export.rows,
    }
    return json.dumps(document, indent=2) + "\n"


def render(export: Export, filters: ExportFilter, fmt: str) -> str:
    """The export as CSV, JSON or JUnit XML (which needs `export_rows(with_tests=True)`)."""
    if fmt not in FORMATS:
        raise UserError(f"format {fmt!r} is not one of {', '.join(FORMATS)}", field="format")
    if fmt == "junit":
        from modelcert.reports.run_junit import render_runs_junit

        if not export.with_tests:
            raise ValueError("a JUnit export needs export_rows(..., with_tests=True)")
        return render_runs_junit(export.runs, export.tests, export.definitions)
    return to_csv(export.rows, export.fields) if fmt == "csv" else to_json(export, filters)


# --- comparing two runs ---------------------------------------------------------------


def _test_view(test: dict[str, Any] | None) -> dict[str, Any] | None:
    if test is None:
        return None
    return {name: test.get(name) for name in COMPARED}


def _differs(name: str, a: Any, b: Any) -> bool:
    if name in TIMINGS and a is not None and b is not None:
        return bool(abs(b - a) >= max(TIMING_NOISE_MS, TIMING_NOISE_SHARE * abs(a)))
    return bool(a != b)


def compare_tests(
    tests_a: Sequence[dict[str, Any]], tests_b: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per test of either run (in A's order, then B's new ones): what each run
    recorded, the fields that differ (a latency or TTFT only beyond the noise bounds
    above), and B - A for latency, TTFT and retries."""
    by_a = {t["test_id"]: t for t in tests_a}
    by_b = {t["test_id"]: t for t in tests_b}
    order = [t["test_id"] for t in tests_a] + [
        t["test_id"] for t in tests_b if t["test_id"] not in by_a
    ]
    compared = []
    for test_id in order:
        a, b = _test_view(by_a.get(test_id)), _test_view(by_b.get(test_id))
        if a is None or b is None:
            changed = ["missing"]
        else:
            changed = [name for name in COMPARED if _differs(name, a[name], b[name])]
        deltas: dict[str, float | None] = {}
        for name in NUMERIC:
            va = a.get(name) if a else None
            vb = b.get(name) if b else None
            deltas[name] = round(vb - va, 3) if va is not None and vb is not None else None
        compared.append({"test_id": test_id, "a": a, "b": b, "changed": changed, "delta": deltas})
    return compared


def _run_and_tests(session: Session, run_id: int, field: str) -> tuple[dict[str, Any], list[Any]]:
    found = session.execute(
        select(CertificationRun, Provider.slug, Deployment.provider_model_id)
        .join(Deployment, Deployment.id == CertificationRun.deployment_id)
        .join(Provider, Provider.id == Deployment.provider_id)
        .where(CertificationRun.id == run_id)
    ).first()
    if found is None:
        raise NotFoundError(f"unknown run {run_id}", field=field)
    run, slug, model = found
    label = _label(slug, model)
    tests = [result_row(t, run, label) for t in run.tests]
    return run_row(run, label), tests


def run_junit(session: Session, run_id: int) -> str:
    """One run and its tests as JUnit XML (`reports.run_junit`)."""
    from modelcert.reports.run_junit import render_runs_junit

    run, tests = _run_and_tests(session, run_id, "runId")
    definitions = suite_definitions(session, (t["suite"] for t in tests))
    return render_runs_junit([run], tests, definitions)


def diff_runs(session: Session, a: int, b: int) -> dict[str, Any]:
    """Two runs of one deployment (in one region, or in two) compared test by test."""
    run_a, tests_a = _run_and_tests(session, a, "a")
    run_b, tests_b = _run_and_tests(session, b, "b")
    if run_a["deployment_id"] != run_b["deployment_id"]:
        raise UserError(
            f"run {a} is of {run_a['deployment']} and run {b} of {run_b['deployment']}: "
            "compare two runs of one deployment",
            field="b",
        )
    tests = compare_tests(tests_a, tests_b)
    summary_fields = (
        "status",
        "rating",
        "badge",
        "score",
        "tests_passed",
        "tests_failed",
        "tests_skipped",
        "avg_latency_ms",
        "total_retries",
        "error_category",
        "suites",
    )
    return {
        "schema": "modelcert.diff/1",
        "deployment": run_a["deployment"],
        "a": run_a,
        "b": run_b,
        "changedSummary": [f for f in summary_fields if _differs(f, run_a[f], run_b[f])],
        "changedTests": sum(1 for t in tests if t["changed"]),
        "tests": tests,
    }
