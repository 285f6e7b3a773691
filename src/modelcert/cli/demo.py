"""`modelcert demo`: the SIMULATED demo catalog certified through the real path — the
API (HTTP, bearer key) queues a batch, worker processes run it from the durable queue,
the terminal shows a progress bar, then the matrix. `--in-process` runs the same engine
in this process instead, without API and workers."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from modelcert.cli.common import CLI_DATABASE_PATIENCE_S, run, session_factory
from modelcert.cli.common import console as cli_console
from modelcert.errors import UserError

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session

    from modelcert.settings import Settings

LOG_DIR = Path(".modelcert/logs")


def demo_command(
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    port: Annotated[int, typer.Option(min=1, max=65535, help="API port.")] = 8000,
    serve: Annotated[bool, typer.Option(help="Keep the API and workers running.")] = False,
    in_process: Annotated[
        bool, typer.Option(help="Certify in this process, without API and workers.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="With --in-process.")] = 16,
) -> None:
    """Certify the SIMULATED demo catalog in three regions and print the matrix."""
    from modelcert.settings import get_settings

    if in_process:
        demo_in_process(concurrency)
    else:
        run_demo(get_settings(), cli_console, workers=workers, port=port, serve=serve)


def demo_in_process(concurrency: int) -> None:
    """The demo catalog certified by the engine in this process, `concurrency` at once."""
    from modelcert.catalog.demo import (
        DEMO_DEPLOYMENTS,
        DEMO_PROVIDER,
        DEMO_REGIONS,
        seed_demo_catalog,
    )
    from modelcert.certify.engine import CertificationEngine, CertificationRequest, InFlight
    from modelcert.cli import render
    from modelcert.cli.cost import demo_cost_line
    from modelcert.settings import get_settings
    from modelcert.store import db, repo
    from modelcert.store.cost_report import cost_report
    from modelcert.store.models import utcnow
    from modelcert.store.runs import RunStore

    settings = get_settings()
    factory = session_factory(migrate=True)
    with db.transaction(factory) as session:
        ids = seed_demo_catalog(session)
    pairs = [(i, r) for i in ids for r in DEMO_REGIONS]
    cli_console.print(
        f"[bold]modelcert demo[/]: {len(DEMO_DEPLOYMENTS)} simulated deployments × "
        f"{len(DEMO_REGIONS)} regions = {len(pairs)} certifications "
        f"(provider '{DEMO_PROVIDER}', database {settings.database_url})"
    )
    started = time.perf_counter()
    engine = CertificationEngine(
        RunStore(factory, patience_s=CLI_DATABASE_PATIENCE_S),
        settings,
        in_flight=InFlight(limit=concurrency),
    )

    async def one(deployment_id: int, region: str) -> None:
        outcome = await engine.certify(CertificationRequest(deployment_id, region))
        score = outcome.score
        cli_console.print(
            f"  {outcome.plan.deployment_label:28} {region:15} "
            f"{render.styled(score.status.value)} {render.verdict_figures(score)} "
            f"{score.error_category or ''}"
        )

    async def go() -> None:
        try:
            await asyncio.gather(*(one(i, r) for i, r in pairs))
        finally:
            await engine.aclose()

    since = utcnow()
    run(go)
    cli_console.print(f"{len(pairs)} certifications in {time.perf_counter() - started:.1f} s")
    with db.transaction(factory) as session:
        cli_console.print(render.matrix_table(repo.certifications(session)))
        cli_console.print(suite_line(session, since))
        cli_console.print(demo_cost_line(cost_report(session, since=since).total))
    cli_console.print(render.SIMULATION_NOTE)


def suite_line(session: Session, since: datetime) -> str:
    """What the demo's own suite decided, beside the battery, in the runs since `since`."""
    from sqlalchemy import select

    from modelcert.store.models import CertificationRun, TestResultRow

    rows = session.execute(
        select(TestResultRow.suite, TestResultRow.outcome)
        .join(CertificationRun, CertificationRun.id == TestResultRow.run_id)
        .where(CertificationRun.started_at >= since, TestResultRow.suite.is_not(None))
    ).all()
    if not rows:
        return "suites: none ran beside the battery"
    refs = sorted({str(suite) for suite, _ in rows})
    passed = sum(outcome == "PASSED" for _, outcome in rows)
    return (
        f"suites: {', '.join(refs)} ran beside the battery: {passed} of {len(rows)} "
        "suite tests passed (modelcert suite show demo-support)"
    )


def _call(method: str, url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


def run_demo(
    settings: Settings,
    console: Console,
    *,
    workers: int = 2,
    port: int = 8000,
    serve: bool = False,
) -> None:
    """The demo through the service: API and worker processes, a batch over HTTP."""
    from modelcert.catalog.demo import DEMO_PROVIDER, DEMO_REGIONS, seed_demo_catalog
    from modelcert.cli import render
    from modelcert.cli.cost import demo_cost_line
    from modelcert.cli.launcher import LocalCluster  # the API app: only this command needs it
    from modelcert.store import api_keys, db, repo
    from modelcert.store.cost_report import job_cost
    from modelcert.store.models import utcnow

    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    factory = db.make_session_factory(engine)
    key_name = f"demo-{uuid.uuid4().hex[:8]}"
    with db.transaction(factory) as session:
        seed_demo_catalog(session)
        _, key = api_keys.create_api_key(session, key_name, api_keys.Role.operator)
    cluster = LocalCluster(settings, workers=workers, port=port, log_dir=LOG_DIR)
    console.print(
        f"[bold]modelcert demo[/]: starting the API and {workers} workers "
        f"on {settings.database_url} (worker logs in {LOG_DIR}/)"
    )
    cluster.start()
    try:
        base = f"{cluster.url}/api/certification-queue"
        started = time.perf_counter()
        started_at = utcnow()
        code, answer = _call(
            "POST",
            f"{base}/certify-all",
            key,
            {"regions": list(DEMO_REGIONS), "provider": DEMO_PROVIDER},
        )
        if code == 409:
            raise UserError("the demo batch is already queued or running (another demo?)")
        if code != 201:
            raise UserError(f"the API refused the batch: {code} {answer}")
        job_id = answer["jobId"]
        console.print(
            f"job {job_id}: {len(answer['queued'])} simulated certifications queued "
            f"through POST /certify-all"
        )
        _follow(console, base, key, job_id, len(answer["queued"]))
        console.print(f"done in {time.perf_counter() - started:.1f} s")
        with db.transaction(factory) as session:
            console.print(render.matrix_table(repo.certifications(session)))
            console.print(suite_line(session, started_at))
            console.print(demo_cost_line(job_cost(session, job_id)))
        console.print(render.SIMULATION_NOTE)
        if serve:
            console.print(f"serving: dashboard {cluster.url}/dashboard, API {cluster.url}/docs")
            # Never wrapped: the key must stay whole on its line, to copy or to parse.
            console.print(f"operator key for this session: {key}  (Ctrl+C stops)", soft_wrap=True)
            cluster.wait()
    finally:
        cluster.stop()
        with db.transaction(factory) as session:
            api_keys.revoke_api_key(session, key_name)
        engine.dispose()


def _follow(console: Console, base: str, key: str, job_id: str, total: int) -> None:
    columns = (
        TextColumn("certifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("job", total=total, detail="")
        while True:
            code, job = _call("GET", f"{base}/jobs/{job_id}", key)
            if code != 200:
                raise UserError(f"could not read job {job_id}: {code} {job}")
            progress.update(
                task,
                completed=job["processed"],
                detail=f"{job['succeeded']} certified, {job['failed']} failed",
            )
            if job["status"] in ("COMPLETED", "CANCELLED"):
                return
            time.sleep(0.5)
