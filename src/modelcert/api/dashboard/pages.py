"""The dashboard's pages (GET): overview, matrix, certification, run, jobs, job, and the
job's live progress stream."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from pydantic import BeforeValidator, Field

from modelcert.api import queries, sse
from modelcert.api.dashboard import data
from modelcert.api.dashboard.charts import SparklineCache
from modelcert.api.dashboard.compare_page import run_before
from modelcert.api.dashboard.web import HERE, LoginDep, error_page, render
from modelcert.api.deps import FactoryDep, SessionDep, SettingsDep
from modelcert.domain import CertificationStatus, JobStatus
from modelcert.errors import UserError
from modelcert.jobs.control import paused_regions
from modelcert.jobs.job_summary import job_summary
from modelcert.reports import trends
from modelcert.store.models import utcnow
from modelcert.validation import (
    FormDay,
    JobId,
    RefText,
    RegionName,
    RowId,
    SearchText,
    ShortText,
)

router = APIRouter()


def _blank_is_first_page(value: object) -> object:
    # The pager's links always send a page; a hand-edited or empty `page=` is page 1.
    return 1 if isinstance(value, str) and not value.strip() else value


# Every query parameter of a dashboard page is a form field a browser may send empty:
# text filters are "" (any), dates go through FormDay ("" is none), the page is FormPage.
FormPage = Annotated[int, BeforeValidator(_blank_is_first_page), Field(ge=1, le=100_000)]

STATIC_FILES = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    # uPlot, vendored (uplot.VERSION, uplot.LICENSE.txt): the certification page's charts.
    "uplot.min.js": "text/javascript",
    "uplot.min.css": "text/css",
}
# The matrix's sparklines: pass rate over the last week, in 6 h buckets.
SPARK_RANGE = "7d"
PAGE_SIZE = 25


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    """The stylesheet and the script, from the package (no CDN, no build step)."""
    if name not in STATIC_FILES:
        return Response(status_code=404)
    return FileResponse(
        HERE / "static" / name,
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "max-age=300"},
    )


@router.get("/", response_class=HTMLResponse)
def overview(
    request: Request, login: LoginDep, session: SessionDep, settings: SettingsDep
) -> Response:
    """Counts by state and region, workers alive, throughput and failures, throttling."""
    now = utcnow()
    return render(
        request, login, "overview.html", page="overview", now=now,
        overview=data.overview(session, settings, now),
    )  # fmt: skip


def _sparklines(request: Request) -> SparklineCache:
    """This app's cache of the matrix's sparkline series (one per app: tests run several)."""
    cache = getattr(request.app.state, "sparklines", None)
    if cache is None:
        cache = request.app.state.sparklines = SparklineCache(SPARK_RANGE)
    return cache


@router.get("/matrix", response_class=HTMLResponse)
def matrix(
    request: Request,
    login: LoginDep,
    session: SessionDep,
    q: Annotated[SearchText, Query()] = "",
    provider: Annotated[ShortText, Query()] = "",
    vendor: Annotated[ShortText, Query()] = "",
    status: Annotated[ShortText, Query()] = "",
    region: Annotated[ShortText, Query()] = "",
    sort: Annotated[ShortText, Query()] = "",
) -> Response:
    """Deployments × regions with their current verdicts; filters, search and sort."""
    filters = data.MatrixFilters(
        q=q.strip(), provider=provider, vendor=vendor, status=status, region=region,
        sort=sort if sort in data.MATRIX_SORTS else "name",
    )  # fmt: skip
    found = data.matrix(session, filters)
    now = utcnow()
    sparks = _sparklines(request).cells(
        session, [row.deployment.id for row in found.rows], found.regions, now
    )
    return render(
        request, login, "matrix.html", page="matrix", matrix=found, regions=found.regions,
        rows=found.rows, now=now, label=data.label, filters=filters, sparks=sparks,
        spark_range=SPARK_RANGE,
        active=filters.active(), sorts=data.MATRIX_SORTS, never=data.NEVER,
        statuses=[s.value for s in CertificationStatus if s.value != "SKIPPED"],
    )  # fmt: skip


def _blank_is_default_range(value: object) -> object:
    return trends.DEFAULT_RANGE if isinstance(value, str) and not value.strip() else value


FormRange = Annotated[Literal["24h", "7d", "30d", "90d"], BeforeValidator(_blank_is_default_range)]
RANGE_LABELS = {"24h": "24 h", "7d": "7 days", "30d": "30 days", "90d": "90 days"}


@router.get("/certifications/{deployment_id}/{region}", response_class=HTMLResponse)
def certification(
    deployment_id: RowId,
    region: RegionName,
    request: Request,
    login: LoginDep,
    session: SessionDep,
    range_name: Annotated[FormRange, Query(alias="range")] = "7d",
) -> Response:
    """One deployment's certification in one region, its trends over the chosen range
    (charts drawn by uPlot from the same series as GET /api/trends) and run history."""
    try:
        current, history = queries.certification_detail(
            session, str(deployment_id), region, runs=50
        )
    except UserError as exc:
        return error_page(request, login, 404, exc.message)
    now = utcnow()
    return render(
        request, login, "certification.html", page="matrix", cert=current, runs=history,
        label=data.label(current.deployment), now=now,
        paused=region in paused_regions(session),
        trend=trends.series(session, current.deployment_id, region, range_name, now=now),
        ranges=RANGE_LABELS,
    )  # fmt: skip


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run(run_id: RowId, request: Request, login: LoginDep, session: SessionDep) -> Response:
    """One run: every test with its outcome, latency, retries and classified error."""
    try:
        found, deployment = queries.run_detail(session, run_id)
    except UserError as exc:
        return error_page(request, login, 404, exc.message)
    return render(
        request, login, "run.html", page="matrix", run=found, deployment=deployment,
        label=data.label(deployment), answered=data.answered_latency(found.tests),
        run_before=run_before(session, found),
    )  # fmt: skip


@router.get("/jobs", response_class=HTMLResponse)
def jobs(
    request: Request,
    login: LoginDep,
    session: SessionDep,
    q: Annotated[SearchText, Query()] = "",
    provider: Annotated[ShortText, Query()] = "",
    model: Annotated[RefText, Query()] = "",
    region: Annotated[ShortText, Query()] = "",
    status: Annotated[ShortText, Query()] = "",
    requester: Annotated[SearchText, Query()] = "",
    # The form sends an empty date field as "": no bound, not an error.
    date_from: Annotated[FormDay, Query()] = None,
    date_to: Annotated[FormDay, Query()] = None,
    page: Annotated[FormPage, Query()] = 1,
) -> Response:
    """Every job, newest first, with search and filters."""
    filters = data.JobFilters(
        q=q.strip(), provider=provider, model=model.strip(), region=region, status=status,
        requester=requester, date_from=date_from, date_to=date_to,
    )  # fmt: skip
    rows, total = data.job_page(session, filters, queries.Paging(page, PAGE_SIZE))
    return render(
        request, login, "jobs.html", page="jobs", jobs=rows, total=total, page_number=page,
        pages=max(1, -(-total // PAGE_SIZE)), filters=filters, active=filters.active(),
        choices=data.filter_choices(session), statuses=[s.value for s in JobStatus],
    )  # fmt: skip


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(job_id: JobId, request: Request, login: LoginDep, session: SessionDep) -> Response:
    """A job: its certifications, each run's tests, the timeline; live while it runs."""
    try:
        found = queries.require_job(session, job_id)
        summary = job_summary(session, job_id)
    except UserError as exc:
        return error_page(request, login, 404, exc.message)
    runs = data.job_runs(session, job_id)
    unfinished = (
        CertificationStatus.FAILED,
        CertificationStatus.ERROR,
        CertificationStatus.INCOMPLETE,
    )
    failed = [r for r in runs if r.run.status in unfinished]
    rows = summary["certifications"]
    done = sum(row.get("testsDone") or 0 for row in rows)
    tests = {
        "done": done,
        "planned": max(done, sse.planned_tests(session, job_id)),
        "running": sum(row.get("status") == CertificationStatus.RUNNING for row in rows),
    }
    return render(
        request, login, "job.html", page="jobs", job=found, summary=summary, runs=runs,
        failed=failed, timeline=data.timeline(found, runs), label=data.label, tests=tests,
        finished=found.status in (JobStatus.COMPLETED, JobStatus.CANCELLED),
    )  # fmt: skip


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse)
def job_events(
    job_id: JobId, request: Request, login: LoginDep, session: SessionDep, factory: FactoryDep
) -> Response:
    """The job's progress as Server-Sent Events (the API's stream, behind the session
    cookie: a browser's EventSource cannot send a bearer header)."""
    try:
        queries.require_job(session, job_id)
    except UserError as exc:
        return Response(exc.message, status_code=404)
    # The stream opens its own sessions: hold no transaction open for its whole life.
    session.close()
    # The same per-key cap and lifetime as the API's stream.
    return sse.stream_response(request, factory, job_id, login.key_name)
