"""CLI commands of the service: the durable queue (enqueue, jobs, re-certification), the
worker, the API, and `up` (both on one machine)."""

from __future__ import annotations

import json
import math
import sys
import time
import uuid
from typing import Annotated

import typer

from modelcert.cli.common import (
    check_can_listen,
    console,
    database_unavailable_message,
    deployment_ref,
    open_engine,
    region_name,
)
from modelcert.domain import JobKind, Priority
from modelcert.errors import UserError
from modelcert.settings import get_settings
from modelcert.store import db
from modelcert.store.outage import hide_password, is_database_unavailable

jobs_app = typer.Typer(help="Queued certification jobs.", no_args_is_help=True)


def api_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs). Requests need an API key."""
    import uvicorn

    from modelcert.api.app import create_app

    settings = get_settings()
    path = db.sqlite_file(settings.database_url)
    # A SQLite file whose directory is there but not the file: checking its schema would
    # create it, empty. (A missing directory is an outage: served, 503 until it appears.)
    engine = db.make_engine(
        settings.database_url, must_exist=path is not None and path.parent.is_dir()
    )
    try:
        current = db.is_current(engine)
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
        if not current:  # a database that answers without a schema: refused, as ever
            raise UserError(
                f"database {hide_password(settings.database_url)} has no schema yet: "
                "run `modelcert db upgrade`"
            )
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
    wait: Annotated[bool, typer.Option(help="Wait until the job completes.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Queue certifications (deployments × regions) for the workers."""
    from modelcert.api.schemas import MAX_DELAY_S  # the API's cap: one limit for both
    from modelcert.jobs.enqueue import Enqueuer

    # NaN compares false to everything: refused here, not stored as a start time.
    if not (math.isfinite(delay) and 0 <= delay <= MAX_DELAY_S):
        raise UserError(
            f"--delay: expected 0 to {MAX_DELAY_S} seconds ({MAX_DELAY_S // 86400} days), "
            f"not {delay:g}",
            field="delay",
        )
    deployments = [deployment_ref(d) for d in deployment]
    regions = [region_name(r) for r in region]
    settings = get_settings()
    engine = open_engine(settings)
    factory = db.make_session_factory(engine)
    enqueuer = Enqueuer(engine, settings)
    try:
        targets = [(d, r) for d in deployments for r in regions]
        kind = JobKind.SINGLE if len(targets) == 1 else JobKind.MULTIPLE
        result = enqueuer.enqueue(
            factory, targets, kind=kind, priority=priority, created_by="cli", delay_s=delay
        )
    finally:
        enqueuer.close()
    if as_json:
        print(
            json.dumps(
                {
                    "jobId": result.job_id,
                    "queued": [q.__dict__ for q in result.queued],
                    "refused": [r.__dict__ for r in result.refused],
                },
                indent=2,
            )
        )
    else:
        for q in result.queued:
            console.print(f"queued {q.deployment} in {q.region} ({q.workflow_id})")
        for r in result.refused:
            console.print(f"[yellow]refused[/] {r.deployment} in {r.region}: {r.reason}")
        if result.job_id:
            console.print(f"job {result.job_id}: {len(result.queued)} certifications queued")
    if wait and result.job_id:
        _wait_for(factory, result.job_id)


def recertify_due_command(
    dry_run: Annotated[bool, typer.Option(help="Show what is due; queue nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Queue, at low priority, the certifications the re-certification schedule would
    (expiring within the window, failed ones past the retry interval), once."""
    from modelcert.jobs.enqueue import Enqueuer
    from modelcert.jobs.schedule import recertify_due

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


def _wait_for(factory: object, job_id: str) -> None:
    from modelcert.jobs.job_summary import job_summary

    while True:
        with db.transaction(factory) as session:  # type: ignore[arg-type]
            summary = job_summary(session, job_id)
        if summary["status"] in ("COMPLETED", "CANCELLED"):
            console.print(
                f"job {job_id} {summary['status']}: {summary['succeeded']} succeeded, "
                f"{summary['failed']} failed"
            )
            return
        time.sleep(0.5)


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A job's status, totals and certifications."""
    from modelcert.jobs.job_summary import job_summary

    try:
        uuid.UUID(job_id)
    except ValueError:  # job ids are UUIDs: anything else names no job
        shown = job_id if len(job_id) <= 40 else f"{job_id[:40]}…"
        raise UserError(f"{shown!r} is not a job id (a UUID)", field="job_id") from None
    factory = db.make_session_factory(open_engine(get_settings()))
    with db.transaction(factory) as session:
        summary = job_summary(session, str(uuid.UUID(job_id)))
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console.print(
        f"job {summary['jobId']} {summary['kind']} {summary['status']} "
        f"priority {summary['priority']}: {summary['processed']}/{summary['total']} "
        f"processed, {summary['succeeded']} succeeded, {summary['failed']} failed"
    )
    for row in summary["certifications"]:
        console.print(
            f"  {row.get('deployment')} {row['region']}: {row['status']} "
            f"{row.get('rating') or ''} {row.get('errorCategory') or ''}"
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
