"""`modelcert demo`: the SIMULATED demo catalog certified through the real path — the
API (HTTP, bearer key) queues a batch, worker processes run it from the durable queue,
the terminal shows a progress bar, then the matrix."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from modelcert import auth, render
from modelcert.demo import DEMO_PROVIDER, DEMO_REGIONS, seed_demo_catalog
from modelcert.errors import UserError
from modelcert.launcher import LocalCluster
from modelcert.settings import Settings
from modelcert.store import db, repo

LOG_DIR = Path(".modelcert/logs")


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
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    factory = db.make_session_factory(engine)
    key_name = f"demo-{uuid.uuid4().hex[:8]}"
    with db.transaction(factory) as session:
        seed_demo_catalog(session)
        _, key = auth.create_api_key(session, key_name, auth.Role.operator)
    cluster = LocalCluster(settings, workers=workers, port=port, log_dir=LOG_DIR)
    console.print(
        f"[bold]modelcert demo[/]: starting the API and {workers} workers "
        f"on {settings.database_url} (worker logs in {LOG_DIR}/)"
    )
    cluster.start()
    try:
        base = f"{cluster.url}/api/certification-queue"
        started = time.perf_counter()
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
        console.print(render.SIMULATION_NOTE)
        if serve:
            console.print(f"serving: dashboard {cluster.url}/dashboard, API {cluster.url}/docs")
            # Never wrapped: the key must stay whole on its line, to copy or to parse.
            console.print(f"operator key for this session: {key}  (Ctrl+C stops)", soft_wrap=True)
            cluster.wait()
    finally:
        cluster.stop()
        with db.transaction(factory) as session:
            auth.revoke_api_key(session, key_name)
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
