"""CLI commands of the service: the durable queue (enqueue, jobs, re-certification), the
worker, the API, and `up` (both on one machine)."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from modelcert.cli.choices import JobStatus, Priority
from modelcert.cli.common import (
    EXIT_NOT_CERTIFIED,
    BudgetOption,
    SmokeOption,
    SuiteOption,
    certify_options,
    check_can_listen,
    cli_actor,
    console,
    database_unavailable_message,
    deployment_ref,
    open_engine,
    region_name,
    resolve_job,
    schema_problem,
)
from modelcert.errors import UserError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from modelcert.api.operations import Actor

# Progress and notices of `enqueue --wait` go to stderr: stdout keeps the command's own
# output (`--json` stays parseable).
progress_console = Console(stderr=True, soft_wrap=True)
# How often `enqueue --wait` reads the job, and how often it looks for a paused region.
WAIT_POLL_S = 0.5
PAUSE_CHECK_S = 5.0

jobs_app = typer.Typer(help="Queued certification jobs.", no_args_is_help=True)


def api_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs). Requests need an API key."""
    import uvicorn

    from modelcert.api.app import create_app
    from modelcert.settings import get_settings
    from modelcert.store import db
    from modelcert.store.outage import is_database_unavailable

    settings = get_settings()
    path = db.sqlite_file(settings.database_url)
    # A SQLite file whose directory is there but not the file: checking its schema would
    # create it, empty. (A missing directory is an outage: served, 503 until it appears.)
    engine = db.make_engine(
        settings.database_url, must_exist=path is not None and path.parent.is_dir()
    )
    try:
        problem = schema_problem(engine, settings.database_url)
    except Exception as exc:
        # Started during an outage: serve anyway. /api/health answers 503 (with the reason)
        # and every route 503 with Retry-After until the database answers, then all is
        # ready by itself: each request checks again, nothing is done once at start.
        if not is_database_unavailable(exc):
            raise
        then = "serving anyway: every route answers 503 until it is back"
        print(
            f"warning: {database_unavailable_message(exc, settings.database_url, then)}",
            file=sys.stderr,
        )
    else:
        if problem is not None:  # no schema, or an older one: refused, in one line
            raise UserError(problem)
    finally:
        engine.dispose()
    check_can_listen(host, port, "choose another with --host and --port")
    # The app makes its own engine (and disposes of it at shutdown).
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower())


def enqueue_command(
    deployment: Annotated[
        list[str], typer.Option(help="Deployment id or provider/model-id (repeat).")
    ],
    region: Annotated[list[str], typer.Option(help="Region (repeat).")],
    priority: Annotated[Priority, typer.Option()] = Priority.NORMAL,
    delay: Annotated[float, typer.Option(help="Seconds before the work may start.")] = 0.0,
    wait: Annotated[
        bool,
        typer.Option(
            help="Wait until the job completes, showing progress; exit 0 only if every "
            "certification is valid (1 otherwise)."
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="With --wait: give up after this many seconds (exit 1; the job goes on).",
            show_default="no limit",
        ),
    ] = None,
    suite: SuiteOption = None,
    smoke: SmokeOption = False,
    budget_usd: BudgetOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Queue certifications (deployments × regions) for the workers."""
    from modelcert.api import operations
    from modelcert.api.schemas import MAX_DELAY_S  # the API's cap: one limit for both
    from modelcert.domain import JobKind
    from modelcert.domain import Priority as DomainPriority
    from modelcert.jobs.enqueue import Enqueuer
    from modelcert.settings import get_settings
    from modelcert.store import db

    # NaN compares false to everything: refused here, not stored as a start time.
    if not (math.isfinite(delay) and 0 <= delay <= MAX_DELAY_S):
        raise UserError(
            f"--delay: expected 0 to {MAX_DELAY_S} seconds ({MAX_DELAY_S // 86400} days), "
            f"not {delay:g}",
            field="delay",
        )
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UserError(f"--timeout: expected a number of seconds > 0, not {timeout:g}")
    if timeout is not None and not wait:
        raise UserError("--timeout goes with --wait", field="timeout")
    deployments = [deployment_ref(d) for d in deployment]
    regions = [region_name(r) for r in region]
    options = certify_options(suite, smoke, budget_usd)
    settings = get_settings()
    engine = open_engine(settings)
    factory = db.make_session_factory(engine)
    targets = [(d, r) for d in deployments for r in regions]
    with db.transaction(factory) as session:
        operations.check_active(session, targets)
    enqueuer = Enqueuer(engine, settings)
    try:
        kind = JobKind.SINGLE if len(targets) == 1 else JobKind.MULTIPLE
        result = enqueuer.enqueue(
            factory,
            targets,
            kind=kind,
            priority=DomainPriority(priority.value),
            created_by="cli",
            delay_s=delay,
            options=options,
        )
    finally:
        enqueuer.close()
    if as_json and not wait:
        print(json.dumps(_enqueued_json(result), indent=2))
    elif not as_json:
        for q in result.queued:
            console.print(f"queued {q.deployment} in {q.region} ({q.workflow_id})")
        for r in result.refused:
            console.print(f"[yellow]refused[/] {r.deployment} in {r.region}: {r.reason}")
        if result.job_id:
            console.print(f"job {result.job_id}: {len(result.queued)} certifications queued")
    if not wait:
        return
    if result.job_id is None:
        if as_json:
            print(json.dumps({**_enqueued_json(result), "job": None}, indent=2))
        progress_console.print("nothing was queued: nothing to wait for")
        raise typer.Exit(EXIT_NOT_CERTIFIED)
    summary = wait_for_job(
        factory, result.job_id, timeout_s=timeout, dead_after_s=settings.worker_dead_after_s
    )
    if as_json:
        print(json.dumps({**_enqueued_json(result), "job": summary}, indent=2))
    raise typer.Exit(job_exit_code(summary))


def _enqueued_json(result: Any) -> dict[str, Any]:
    return {
        "jobId": result.job_id,
        "queued": [q.__dict__ for q in result.queued],
        "refused": [r.__dict__ for r in result.refused],
    }


_VALID = ("CERTIFIED", "QUALITY_WARNING")
_FINAL_JOB = ("COMPLETED", "CANCELLED")


def job_exit_code(summary: dict[str, Any]) -> int:
    """0 when the job is over and every certification it asked for is valid, else 1."""
    rows = summary["certifications"]
    done = summary["status"] == "COMPLETED"
    return 0 if done and rows and all(r["status"] in _VALID for r in rows) else EXIT_NOT_CERTIFIED


def wait_for_job(
    factory: sessionmaker[Session],
    job_id: str,
    *,
    timeout_s: float | None = None,
    dead_after_s: float = 60.0,
    clock: Any = time.monotonic,
    sleep: Any = time.sleep,
) -> dict[str, Any]:
    """Follow a job until it completes or is cancelled, or `timeout_s` passes: progress on
    stderr (a line each time a certification finishes), a notice when its queued work
    waits on a paused region or on a region no live worker serves (none heard from
    within `dead_after_s`), and its summary at the end."""
    from modelcert.jobs import control
    from modelcert.jobs.job_summary import job_summary
    from modelcert.store import db

    started = clock()
    shown_processed = -1
    warned: set[tuple[str, str]] = set()
    next_check = started
    short = job_id[:8]
    while True:
        notices: list[tuple[str, str, str]] = []  # (kind, region, line)
        with db.transaction(factory) as session:
            summary = job_summary(session, job_id)
            now = clock()
            waiting: dict[str, int] = {}
            for row in summary["certifications"]:
                if row["status"] in ("QUEUED", "PENDING"):
                    waiting[row["region"]] = waiting.get(row["region"], 0) + 1
            if waiting and now >= next_check:
                next_check = now + PAUSE_CHECK_S
                paused = control.paused_regions(session)
                served = _served_by_live_workers(session, dead_after_s)
                for name, count in sorted(waiting.items()):
                    pause = paused.get(name)
                    if pause is not None:
                        notices.append(
                            (
                                "paused",
                                name,
                                f"[yellow]waiting[/]: region {name} is paused (by "
                                f"{pause.paused_by or '?'} at {pause.paused_at:%Y-%m-%d %H:%M} "
                                f"UTC): its {count} queued certification(s) start when it is "
                                f"resumed (`modelcert region resume {name}`)",
                            )
                        )
                    elif name not in served:
                        notices.append(
                            (
                                "no-worker",
                                name,
                                f"[yellow]waiting[/]: no live worker serves region {name}: its "
                                f"{count} queued certification(s) start when one does "
                                f"(`modelcert worker`, or `modelcert up`)",
                            )
                        )
        for kind, name, line in notices:
            if (kind, name) not in warned:
                progress_console.print(line)
                warned.add((kind, name))
        if summary["processed"] != shown_processed:
            shown_processed = summary["processed"]
            progress_console.print(_progress_line(short, summary, now - started))
        if summary["status"] in _FINAL_JOB:
            certified = sum(1 for r in summary["certifications"] if r["status"] in _VALID)
            progress_console.print(
                f"job {job_id} {summary['status']}: {certified} certified, "
                f"{len(summary['certifications']) - certified} not "
                f"({summary['succeeded']} succeeded, {summary['failed']} failed)"
                + _cost_note(summary)
            )
            for line in _why_not(summary):
                progress_console.print(line)
            return summary
        if timeout_s is not None and now - started >= timeout_s:
            progress_console.print(
                f"[red]timed out[/] after {timeout_s:g} s: job {job_id} is {summary['status']} "
                f"({summary['processed']}/{summary['total']} done); it goes on: "
                f"`modelcert jobs show {short}`"
            )
            return summary
        sleep(WAIT_POLL_S)


def _cost_note(summary: dict[str, Any]) -> str:
    from modelcert.cli.render import usd

    cost = summary.get("costUsd")
    return f", cost {usd(cost)}" if cost is not None else ""


def _why_not(summary: dict[str, Any]) -> list[str]:
    """A line for each certification of the job that is not valid, saying why (its
    decisive error, or that a budget kept it from starting)."""
    return [
        f"  {row.get('deployment')} {row['region']}: {row.get('status')}{_reason(row)}"
        for row in summary["certifications"]
        if row.get("status") not in _VALID
    ]


def _reason(row: dict[str, Any]) -> str:
    """`: <why>` for a certification that is not valid (its decisive error's message, or
    why it did not start), shortened; nothing for a valid one."""
    from rich.markup import escape

    if row.get("status") in _VALID or not row.get("errorMessage"):
        return ""
    return f" — {escape(str(row['errorMessage'])[:200])}"


def _served_by_live_workers(session: Session, dead_after_s: float) -> set[str]:
    """The regions of the workers heard from within `dead_after_s` and not stopped."""
    from datetime import timedelta

    from sqlalchemy import select

    from modelcert.store.models import utcnow
    from modelcert.store.worker_models import WorkerHeartbeat

    since = utcnow() - timedelta(seconds=dead_after_s)
    rows = session.scalars(
        select(WorkerHeartbeat.regions).where(
            WorkerHeartbeat.stopped_at.is_(None), WorkerHeartbeat.heartbeat_at >= since
        )
    )
    return {region for regions in rows for region in regions or []}


def _progress_line(short: str, summary: dict[str, Any], elapsed: float) -> str:
    rows = summary["certifications"]
    running = sum(1 for r in rows if r["status"] == "RUNNING")
    queued = sum(1 for r in rows if r["status"] in ("QUEUED", "PENDING"))
    return (
        f"job {short}: {summary['processed']}/{summary['total']} done "
        f"({summary['succeeded']} succeeded, {summary['failed']} failed), {running} running, "
        f"{queued} queued, {elapsed:.0f} s"
    )


def recertify_due_command(
    dry_run: Annotated[bool, typer.Option(help="Show what is due; queue nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Queue, at low priority, the certifications the re-certification schedule would
    (expiring within the window, failed ones past the retry interval), once."""
    from modelcert.jobs.enqueue import Enqueuer
    from modelcert.jobs.schedule import recertify_due
    from modelcert.settings import get_settings
    from modelcert.store import db

    settings = get_settings()
    engine = open_engine(settings)
    factory = db.make_session_factory(engine)
    enqueuer = None if dry_run else Enqueuer(engine, settings)
    try:
        report = recertify_due(
            factory, settings, enqueuer, dry_run=dry_run, requested_by="cli:recertify-due"
        )
    finally:
        if enqueuer is not None:
            enqueuer.close()
    if as_json:
        print(json.dumps({"dryRun": dry_run, **report.log_fields()}, indent=2))
        return
    for problem in report.misconfigured:
        console.print(f"[red]skipped provider[/] {problem}")
    if not report.due:
        console.print("nothing is due for re-certification")
        return
    if dry_run:
        for due in report.due:
            console.print(f"due {due.deployment} in {due.region} ({due.reason})")
        console.print(f"{len(report.due)} due; dry run: nothing queued")
        return
    for due in report.queued:
        console.print(f"queued {due.deployment} in {due.region} ({due.reason})")
    for due in report.refused:
        console.print(
            f"[yellow]refused[/] {due.deployment} in {due.region}: already queued or running"
        )
    if report.job_id:
        console.print(f"job {report.job_id}: {len(report.queued)} re-certifications queued (low)")


def _factory() -> sessionmaker[Session]:
    from modelcert.settings import get_settings
    from modelcert.store import db

    return db.make_session_factory(open_engine(get_settings()))


def _actor() -> Actor:
    from modelcert.api.operations import Actor

    return Actor(cli_actor(), "cli")


JobIdArgument = Annotated[
    str, typer.Argument(help="A job id, or its first characters (8, as the dashboard shows).")
]


@jobs_app.command("show")
def jobs_show(
    job_id: JobIdArgument, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """A job's status, totals and certifications."""
    from modelcert.cli.common import job_id_prefix
    from modelcert.jobs.job_summary import job_summary
    from modelcert.store import db

    job_id_prefix(job_id)  # a malformed id is refused before the database is opened
    factory = _factory()
    with db.transaction(factory) as session:
        summary = job_summary(session, resolve_job(session, job_id))
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console.print(
        f"job {summary['jobId']} {summary['kind']} {summary['status']} "
        f"priority {summary['priority']}: {summary['processed']}/{summary['total']} "
        f"processed, {summary['succeeded']} succeeded, {summary['failed']} failed"
        + _cost_note(summary)
    )
    for row in summary["certifications"]:
        console.print(
            f"  {row.get('deployment')} {row['region']}: {row['status']} "
            f"{row.get('rating') or ''} {row.get('errorCategory') or ''}{_reason(row)}"
        )


MAX_LIST_LIMIT = 1000


@jobs_app.command("list")
def jobs_list(
    status: Annotated[
        list[JobStatus] | None, typer.Option(help="Only jobs in this status (repeat).")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_LIST_LIMIT, help="At most this many, newest first.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Jobs, newest first: id, kind, status, priority, progress, who asked and when."""
    from rich.table import Table
    from sqlalchemy import select

    from modelcert.store import db
    from modelcert.store.models import Job

    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if status:
        query = query.where(Job.status.in_(sorted({s.value for s in status})))
    with db.transaction(_factory()) as session:
        jobs = list(session.scalars(query))
        rows: list[dict[str, Any]] = [
            {
                "jobId": job.id,
                "kind": job.kind,
                "status": job.status,
                "priority": job.priority,
                "total": job.total,
                "processed": job.processed,
                "succeeded": job.succeeded,
                "failed": job.failed,
                "createdBy": job.created_by,
                "createdAt": job.created_at.isoformat(),
                "completedAt": job.completed_at.isoformat() if job.completed_at else None,
            }
            for job in jobs
        ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(
            "no jobs" + (f" in status {', '.join(s.value for s in status)}" if status else "")
        )
        return
    table = Table(
        "id", "kind", "status", "priority", "done", "succeeded", "failed", "by", "created"
    )
    for row in rows:
        table.add_row(
            row["jobId"][:8],
            row["kind"],
            row["status"],
            row["priority"],
            f"{row['processed']}/{row['total']}",
            str(row["succeeded"]),
            str(row["failed"]),
            row["createdBy"] or "",
            row["createdAt"][:19].replace("T", " "),
        )
    console.print(table)


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobIdArgument) -> None:
    """Cancel a job: its queued certifications never start, running ones stop after their
    current test. Recorded in the audit log."""
    from modelcert.api import operations
    from modelcert.jobs.enqueue import Enqueuer
    from modelcert.settings import get_settings
    from modelcert.store import db

    settings = get_settings()
    engine = open_engine(settings)
    factory = db.make_session_factory(engine)
    with db.transaction(factory) as session:
        full_id = resolve_job(session, job_id)
    enqueuer = Enqueuer(engine, settings)
    try:
        count = operations.cancel_job(factory, enqueuer.client, _actor(), full_id)
    finally:
        enqueuer.close()
    console.print(f"job {full_id} cancelled ({count} unfinished certification(s) stopped)")


@jobs_app.command("retry")
def jobs_retry(
    job_id: JobIdArgument,
    priority: Annotated[Priority, typer.Option()] = Priority.NORMAL,
) -> None:
    """Queue again, as a new job, the certifications of a job that failed, errored or were
    incomplete (of deployments still active). Recorded in the audit log."""
    from modelcert.api import operations
    from modelcert.domain import Priority as DomainPriority
    from modelcert.jobs.enqueue import Enqueuer
    from modelcert.settings import get_settings
    from modelcert.store import db

    settings = get_settings()
    engine = open_engine(settings)
    factory = db.make_session_factory(engine)
    with db.transaction(factory) as session:
        full_id = resolve_job(session, job_id)
    enqueuer = Enqueuer(engine, settings)
    try:
        result = operations.retry_failed(
            factory, enqueuer, _actor(), full_id, DomainPriority(priority.value)
        )
    finally:
        enqueuer.close()
    for r in result.refused:
        console.print(f"[yellow]refused[/] {r.deployment} in {r.region}: {r.reason}")
    if result.job_id is None:
        console.print(f"nothing queued: the failures of job {full_id} are already queued again")
        return
    console.print(
        f"job {result.job_id}: {len(result.queued)} certification(s) of job {full_id} queued again"
    )


@jobs_app.command("priority")
def jobs_priority(job_id: JobIdArgument, priority: Annotated[Priority, typer.Argument()]) -> None:
    """Move a job's still-queued certifications up or down their queues. Recorded in the
    audit log."""
    from modelcert.api import operations
    from modelcert.domain import Priority as DomainPriority
    from modelcert.store import db

    factory = _factory()
    with db.transaction(factory) as session:
        full_id = resolve_job(session, job_id)
    count = operations.set_priority(factory, _actor(), full_id, DomainPriority(priority.value))
    console.print(
        f"job {full_id}: {count} queued certification(s) now have {priority.value} priority"
    )


def worker_command(
    region: Annotated[
        list[str] | None, typer.Option(help="Region queue to serve (repeat; default all).")
    ] = None,
    executor_id: Annotated[
        str | None, typer.Option(help="Stable unique id of this worker.")
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Health server port (WORKER_HEALTH_PORT)."),
    ] = None,
) -> None:
    """Run a worker: certifications from the region queues, health on WORKER_HEALTH_PORT."""
    from modelcert.settings import get_settings
    from modelcert.worker.main import run_worker

    run_worker(
        get_settings(), regions=region or (), executor_id=executor_id, health_port=health_port
    )


def up_command(
    workers: Annotated[int, typer.Option(min=1, help="Worker processes to start.")] = 2,
    host: Annotated[str, typer.Option(help="API host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="API port.")] = 8000,
) -> None:
    """Start the API and N workers on this machine (the embedded database by default)."""
    from modelcert.cli.launcher import LocalCluster
    from modelcert.settings import get_settings

    settings = get_settings()
    cluster = LocalCluster(settings, workers=workers, host=host, port=port)
    cluster.start()
    console.print(f"modelcert is up on {settings.database_url}")
    console.print(f"  dashboard {cluster.url}/dashboard")
    console.print(f"  API       {cluster.url}/docs")
    for index, health_port in enumerate(cluster.health_ports, start=1):
        console.print(f"  worker {index}  http://127.0.0.1:{health_port}/health")
    console.print("  API keys: `modelcert apikey create NAME --role operator`; Ctrl+C stops")
    try:
        cluster.wait()
    finally:
        console.print("stopping: workers finish their in-flight certifications")
        cluster.stop()
