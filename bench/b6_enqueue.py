"""B6 — enqueue: a 2,000-certification batch, and the API's enqueue under concurrent clients.

Batch (`--part batch`, SQLite and PostgreSQL): one `Enqueuer.enqueue` of --count
(deployment, region) pairs (what `certify-all` and the CLI call), against, in the same run
and A B A B interleaved:
- `bare`: --count DBOS `enqueue_in_transaction` calls in one transaction (a queue, a
  deduplication id each, nothing else): DBOS's own floor for the same rows;
- `per-row`: the enqueue as it was before the set-based one (a look-up per target, then per
  pair a SAVEPOINT, DBOS's one-row enqueue and an ORM get-or-create of the certification):
  the "before" figure, measured on the same machine in the same run.
Between rounds every workflow, job and certification is deleted, so each round writes the
same rows into the same (empty) tables. Reported: median seconds of each, and the medians of
the per-round ratios to `bare`.

API (`--part api`, PostgreSQL): `modelcert`'s API under uvicorn in a subprocess, real HTTP,
--clients threads each on a keep-alive connection sending `POST certify-model` for pairs
of their own (each request a new pair: 201, never 409), --requests in all; latency p50 and
p95. Baseline, A B A B: a bare FastAPI app under uvicorn (`def` route, one SQLAlchemy
engine on the same database) whose POST writes one row, the same way.

Run:
    python bench/b6_enqueue.py --part batch --db postgres --runs 3
    python bench/b6_enqueue.py --part batch --db sqlite --runs 3
    python bench/b6_enqueue.py --part api --runs 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness
from harness import bench_database, emit, pct, r
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import JobKind, Priority
from modelcert.jobs.enqueue import Enqueuer, deduplication_id, workflow_id_for
from modelcert.jobs.queues import PRIORITY_VALUES, dbos_table, queue_name
from modelcert.jobs.workflows import certification_options, enqueue_certification
from modelcert.settings import Settings
from modelcert.store import api_keys, db, repo
from modelcert.store.db import transaction
from modelcert.store.models import Job

REGIONS = harness.SIX_REGIONS


def seed(factory: sessionmaker[Session], pairs: int) -> list[tuple[str | int, str]]:
    """A sim provider in six regions and enough deployments for `pairs` targets."""
    with transaction(factory) as session:
        repo.add_provider(session, slug="bench", kind="sim", regions=list(REGIONS))
        for index in range(harness.deployments_for(pairs, REGIONS)):
            repo.add_deployment(
                session, provider_slug="bench", provider_model_id=f"m{index:05d}", options={}
            )
    targets: list[tuple[str | int, str]] = []
    index = 0
    while len(targets) < pairs:
        for region in REGIONS:
            if len(targets) < pairs:
                targets.append((f"bench/m{index:05d}", region))
        index += 1
    return targets


def clear(engine: Engine) -> None:
    """Every workflow, job and certification gone: the next round writes the same rows."""
    dialect = engine.dialect.name
    with engine.begin() as connection:
        for table in ("workflow_input", "workflow_status"):
            connection.execute(text(f"DELETE FROM {dbos_table(dialect, table)}"))
        connection.execute(text("DELETE FROM certifications"))
        connection.execute(text("DELETE FROM jobs"))
    if dialect == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))


def bare(enqueuer: Enqueuer, factory: sessionmaker[Session], count: int) -> None:
    """`count` DBOS enqueues in one transaction: the floor for the same rows."""
    name = queue_name(enqueuer.settings, REGIONS[0])
    with transaction(factory) as session:
        connection = session.connection()
        for index in range(count):
            options = certification_options(
                queue_name=name,
                workflow_id=f"bare-{index}",
                deduplication_id=f"bare-{index}",
                priority=PRIORITY_VALUES[Priority.NORMAL],
            )
            enqueuer.client.enqueue_in_transaction(connection, options, None, index, REGIONS[0])


def per_row(
    enqueuer: Enqueuer, factory: sessionmaker[Session], targets: Sequence[tuple[str | int, str]]
) -> None:
    """The enqueue as it was before the set-based one (commit 625abcd), for the same rows."""
    from dbos._error import DBOSQueueDeduplicatedError

    with transaction(factory) as session:
        resolved = []
        for ref, region in targets:
            deployment = repo.find_deployment(session, ref)
            repo.check_region(deployment.provider, region)
            resolved.append((deployment.id, region))
    with transaction(factory) as session:
        job = Job(kind=JobKind.ALL.value, priority=Priority.NORMAL.value, scope={})
        session.add(job)
        session.flush()
        for deployment_id, region in resolved:
            options = certification_options(
                queue_name=queue_name(enqueuer.settings, region),
                workflow_id=workflow_id_for(job.id, deployment_id, region),
                deduplication_id=deduplication_id(deployment_id, region),
                priority=PRIORITY_VALUES[Priority.NORMAL],
            )
            try:
                with session.begin_nested():
                    enqueue_certification(
                        enqueuer.client,
                        session.connection(),
                        options,
                        job_id=job.id,
                        deployment_id=deployment_id,
                        region=region,
                    )
            except DBOSQueueDeduplicatedError:
                continue
            certification = repo.certification_row(session, deployment_id, region)
            certification.status = "QUEUED"
            certification.job_id = job.id
            session.flush()
        job.total = len(resolved)


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def part_batch(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir, bench_database(args.db, Path(workdir)) as url:
        engine = db.make_engine(url)
        db.upgrade(engine)
        factory = db.make_session_factory(engine)
        settings = Settings(database_url=url)
        targets = seed(factory, args.count)
        enqueuer = Enqueuer(engine, settings)
        for region in REGIONS:
            enqueuer.ensure_queue(region)
        times: dict[str, list[float]] = {"enqueue": [], "bare": [], "per_row": []}
        try:
            for _ in range(args.runs):
                for variant in ("enqueue", "bare", "per_row"):
                    clear(engine)
                    if variant == "enqueue":
                        seconds = timed(
                            lambda: enqueuer.enqueue(factory, targets, kind=JobKind.ALL)
                        )
                    elif variant == "bare":
                        seconds = timed(lambda: bare(enqueuer, factory, len(targets)))
                    else:
                        seconds = timed(lambda: per_row(enqueuer, factory, targets))
                    times[variant].append(seconds)
                    emit("ROUND", {"variant": variant, "db": args.db, "s": r(seconds, 3)})
        finally:
            enqueuer.close()
            engine.dispose()
    ratio = [e / b for e, b in zip(times["enqueue"], times["bare"], strict=True)]
    before = [p / b for p, b in zip(times["per_row"], times["bare"], strict=True)]
    return {
        "bench": "b6-batch",
        "db": args.db,
        "count": args.count,
        "rounds": args.runs,
        "enqueue_s": r(statistics.median(times["enqueue"]), 3),
        "bare_s": r(statistics.median(times["bare"]), 3),
        "per_row_s": r(statistics.median(times["per_row"]), 3),
        "enqueue_vs_bare": r(statistics.median(ratio), 2),
        "per_row_vs_bare": r(statistics.median(before), 2),
    }


# --------------------------------------------------------------------------- API

BARE_APP = textwrap.dedent(
    """
    import os
    from fastapi import FastAPI
    from pydantic import BaseModel
    from sqlalchemy import create_engine, text

    engine = create_engine(os.environ["BARE_URL"], pool_size=10, pool_pre_ping=True)
    app = FastAPI()

    class Body(BaseModel):
        modelId: str
        region: str

    @app.post("/api/certification-queue/certify-model", status_code=201)
    def certify_model(body: Body) -> dict:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO bare_rows (model, region) VALUES (:m, :r)"),
                {"m": body.modelId, "r": body.region},
            )
        return {"ok": True}
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(app: str, env: dict[str, str], cwd: str | None = None) -> Iterator[int]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"]
    if app.endswith("create_app"):
        command.append("--factory")
    process = subprocess.Popen(command, env={**os.environ, **env}, cwd=cwd)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def load(port: int, key: str | None, bodies: Sequence[dict[str, str]], clients: int) -> list[float]:
    """`clients` threads, each on one keep-alive connection, share `bodies`: latencies (s)."""
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(bodies)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    errors: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if not queue:
                    break
                body = queue.pop()
            start = time.perf_counter()
            connection.request(
                "POST", "/api/certification-queue/certify-model", json.dumps(body), headers
            )
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if response.status != 201:
                    errors.append(str(response.status))
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} requests failed: {sorted(set(errors))}")
    return latencies


def part_api(args: argparse.Namespace) -> dict[str, Any]:
    if args.db != "postgres":
        raise SystemExit("--part api runs on PostgreSQL")
    with tempfile.TemporaryDirectory() as workdir, bench_database("postgres", Path(workdir)) as url:
        engine = db.make_engine(url)
        db.upgrade(engine)
        factory = db.make_session_factory(engine)
        targets = seed(factory, args.requests + 1)
        with transaction(factory) as session:
            _, key = api_keys.create_api_key(session, "bench", "operator")
        with engine.begin() as connection:
            connection.execute(
                text("CREATE TABLE bare_rows (id SERIAL PRIMARY KEY, model TEXT, region TEXT)")
            )
        bodies = [{"modelId": str(ref), "region": region} for ref, region in targets]
        env = {"MODELCERT_DATABASE_URL": url, "BARE_URL": url, "MODELCERT_LOG_LEVEL": "WARNING"}
        Path(workdir, "bare_app.py").write_text(BARE_APP)
        results: dict[str, list[list[float]]] = {"api": [], "bare": []}
        with (
            server("modelcert.api.app:create_app", env) as api_port,
            server("bare_app:app", env, cwd=workdir) as bare_port,
        ):
            load(api_port, key, bodies[-1:], 1)  # first enqueue: the queues get registered
            load(bare_port, None, bodies[-1:], 1)
            for _ in range(args.runs):
                for variant in ("api", "bare"):
                    clear(engine)
                    port, use_key = (api_port, key) if variant == "api" else (bare_port, None)
                    latencies = load(port, use_key, bodies[: args.requests], args.clients)
                    results[variant].append(latencies)
                    emit(
                        "ROUND",
                        {"variant": variant, "p50_ms": r(1000 * (pct(latencies, 50) or 0), 1)},
                    )
        engine.dispose()

    def summary(variant: str, q: float) -> float | None:
        return r(1000 * statistics.median(pct(lat, q) or 0 for lat in results[variant]), 1)

    ratios = [
        (pct(a, 50) or 0) / (pct(b, 50) or 1)
        for a, b in zip(results["api"], results["bare"], strict=True)
    ]
    return {
        "bench": "b6-api",
        "db": "postgres",
        "clients": args.clients,
        "requests": args.requests,
        "rounds": args.runs,
        "api_p50_ms": summary("api", 50),
        "api_p95_ms": summary("api", 95),
        "bare_p50_ms": summary("bare", 50),
        "bare_p95_ms": summary("bare", 95),
        "api_vs_bare_p50": r(statistics.median(ratios), 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=("batch", "api"), default="batch")
    p.add_argument("--db", choices=("sqlite", "postgres"), default="postgres")
    p.add_argument("--count", type=int, default=2000, help="pairs in the batch")
    p.add_argument("--runs", type=int, default=3, help="A B A B rounds")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--requests", type=int, default=300, help="API requests per round")
    args = p.parse_args()
    result = part_batch(args) if args.part == "batch" else part_api(args)
    emit("RESULT", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
