"""Shared harness of the queue benchmarks B1–B4 (see docs/benchmarks.md).

Not a benchmark itself: `b1_throughput.py`, `b2_quota.py`, `b3_concurrency.py` and
`b4_recovery.py` next to it import it (`bench/` is not a package; a script run as
`python bench/bN_….py` has its own directory on `sys.path`).

Every run creates its own database (a SQLite file in a temporary directory, or a fresh
PostgreSQL database on 127.0.0.1), seeds a catalog of simulated deployments, starts real
`python -m modelcert worker` processes (`modelcert.worker.process.WorkerProcess`, the
harness `modelcert up` and the tests use), enqueues one job through `Enqueuer.enqueue`
(the call the API and CLI make), waits, reads its figures from the database, stops its
workers and removes what it created. Each run prints one `RESULT {json}` line; with
--runs > 1 a `MEDIAN {json}` line follows. Nothing here is a timed test: these are
measurements on whatever machine runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import Capabilities, JobKind
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.queues import dbos_table
from modelcert.settings import Settings
from modelcert.store import db, repo
from modelcert.store.db import transaction
from modelcert.worker.process import WorkerProcess

POSTGRES_ADMIN_URL = os.environ.get(
    "MODELCERT_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SIX_REGIONS = (
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-northeast-1",
)
# Every capability the battery tests, so that all 12 tests run (13 provider calls).
BATTERY_CAPABILITIES = Capabilities(
    streaming=True, tools=True, json_output=True, system_prompt=True, stop_sequences=True
)
CALLS_PER_CERTIFICATION = 13  # 12 tests; `availability` calls twice, AVAILABILITY_GAP_S apart
# The pause of the `availability` test: the production default, set explicitly so that an
# inherited MODELCERT_AVAILABILITY_GAP_S (the test suite's 0.01 s) cannot change a figure.
AVAILABILITY_GAP_S = 2.0
# What every benchmark worker gets besides its Limits.
WORKER_ENV = {
    "MODELCERT_LOG_JSON": "1",
    "MODELCERT_SHUTDOWN_GRACE_S": "20",
    "MODELCERT_AVAILABILITY_GAP_S": f"{AVAILABILITY_GAP_S:g}",
}
WORKER_STOP_TIMEOUT_S = 40.0

Target = tuple[str | int, str]


# --------------------------------------------------------------------------- database


@contextmanager
def bench_database(kind: str, workdir: Path) -> Iterator[str]:
    """A new, empty database for one run; removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir}/bench.db"
        return
    url = make_url(POSTGRES_ADMIN_URL)
    if url.host not in ("127.0.0.1", "localhost"):
        raise SystemExit("benchmarks run on 127.0.0.1 only")
    name = f"modelcert_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --------------------------------------------------------------------------- machine


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total else None


# --------------------------------------------------------------------------- limits


@dataclass
class Limits:
    """The queue limits, given identically to the workers and to the enqueuer (the
    enqueuer re-registers each region queue with its own settings)."""

    certification_concurrency: int
    region_concurrency: int
    region_start_rate: float
    poll_s: float = 0.2
    dead_after_s: float = 60.0

    def env(self) -> dict[str, str]:
        return {
            "CERTIFICATION_CONCURRENCY": str(self.certification_concurrency),
            "MODELCERT_REGION_CONCURRENCY": str(self.region_concurrency),
            "MODELCERT_REGION_START_RATE": f"{self.region_start_rate:g}",
            "MODELCERT_QUEUE_POLL_S": f"{self.poll_s:g}",
            "MODELCERT_WORKER_DEAD_AFTER_S": f"{self.dead_after_s:g}",
        }

    def settings(self, url: str) -> Settings:
        return Settings(
            database_url=url,
            certification_concurrency=self.certification_concurrency,
            region_concurrency=self.region_concurrency,
            region_start_rate_per_second=self.region_start_rate,
            queue_polling_interval_s=self.poll_s,
            worker_dead_after_s=self.dead_after_s,
            availability_gap_s=AVAILABILITY_GAP_S,
        )

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.env().items() if k != "MODELCERT_WORKER_DEAD_AFTER_S"}


# --------------------------------------------------------------------------- a run


@dataclass
class Run:
    """One benchmark run: database, catalog, workers, the enqueued job."""

    db_kind: str
    limits: Limits
    regions: tuple[str, ...]
    keep: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mcbench-")))
    url: str = ""
    engine: Engine | None = None
    factory: sessionmaker[Session] | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    # executor id -> {"cpu_s", "peak_rss_kb"}, read while its process was still there
    resources: dict[str, dict[str, float]] = field(default_factory=dict)
    job_id: str = ""
    enqueue_s: float = 0.0
    enqueued_at: float = 0.0  # wall clock when the enqueue transaction had committed

    def session(self) -> Any:
        assert self.factory is not None
        return transaction(self.factory)

    def seed(self, deployments: int, options: dict[str, Any]) -> list[str]:
        """`deployments` sim deployments (all of the battery's capabilities) serving every
        region of the run; returns their references."""
        assert self.factory is not None
        with self.session() as session:
            repo.add_provider(
                session, slug="bench", kind="sim", regions=list(self.regions), config={"seed": 1}
            )
            refs = []
            for index in range(deployments):
                model_id = f"m{index:05d}"
                repo.add_deployment(
                    session,
                    provider_slug="bench",
                    provider_model_id=model_id,
                    options=options,
                    capabilities=BATTERY_CAPABILITIES,
                )
                refs.append(f"bench/{model_id}")
        return refs

    def targets(self, refs: Sequence[str], count: int) -> list[Target]:
        """The first `count` (deployment, region) pairs, deployment by deployment."""
        pairs: list[Target] = [(ref, region) for ref in refs for region in self.regions]
        return pairs[:count]

    def worker(self, executor_id: str, extra_env: dict[str, str] | None = None) -> WorkerProcess:
        return WorkerProcess(
            self.url,
            executor_id,
            log_path=self.workdir / f"{executor_id}.log",
            regions=self.regions,
            env={**WORKER_ENV, **self.limits.env(), **(extra_env or {})},
            cwd=self.workdir,
        )

    def start_workers(self, count: int, extra_env: dict[str, str] | None = None) -> None:
        """Start `count` workers at once and wait until each is ready."""
        first = len(self.workers) + 1
        started = [self.worker(f"bench-w{first + i}", extra_env).spawn() for i in range(count)]
        self.workers.extend(started)  # stopped by close() even if one is never ready
        for worker in started:
            worker.wait_ready()

    def sample(self, worker: WorkerProcess) -> None:
        """Record the worker's CPU time and peak RSS while its process is still there."""
        with suppress(AssertionError, OSError, IndexError, ValueError):
            self.resources[worker.executor_id] = {
                "cpu_s": worker.cpu_seconds(),
                "peak_rss_kb": worker.peak_rss_kb(),
            }

    def sample_all(self) -> None:
        for worker in self.workers:
            if worker.running():
                self.sample(worker)

    def cpu_s(self, worker: WorkerProcess) -> float | None:
        return self.resources.get(worker.executor_id, {}).get("cpu_s")

    def peak_rss_kb(self, worker: WorkerProcess) -> float | None:
        return self.resources.get(worker.executor_id, {}).get("peak_rss_kb")

    def enqueue(self, targets: list[Target]) -> None:
        assert self.engine is not None and self.factory is not None
        enqueuer = Enqueuer(self.engine, self.limits.settings(self.url))
        try:
            for region in self.regions:  # registration is not part of the enqueue cost
                enqueuer.ensure_queue(region)
            started = time.perf_counter()
            result = enqueuer.enqueue(self.factory, targets, kind=JobKind.MULTIPLE)
            self.enqueue_s = time.perf_counter() - started
            self.enqueued_at = time.time()
        finally:
            enqueuer.close()
        if result.refused or not result.job_id:
            raise RuntimeError(f"{len(result.refused)} targets refused")
        self.job_id = result.job_id

    def progress(self) -> tuple[int, int]:
        with self.session() as session:
            row = session.execute(
                text("SELECT processed, total FROM jobs WHERE id = :id"), {"id": self.job_id}
            ).one()
            return int(row[0]), int(row[1])

    def wait_done(self, timeout_s: float, on_tick: Callable[[], None] | None = None) -> bool:
        """Until the job has processed all its certifications (True) or `timeout_s` has
        passed (False); a worker that dies without having been killed is an error."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            processed, total = self.progress()
            if processed >= total:
                return True
            if on_tick:
                on_tick()
            for worker in self.workers:
                if worker.process is not None and not worker.running() and not worker.killed:
                    raise RuntimeError(f"{worker.executor_id} died: {worker.log()[-3000:]}")
            time.sleep(0.5)
        return False

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the job, with its workflow's enqueue and claim instants."""
        assert self.engine is not None
        ws = dbos_table(self.engine.dialect.name, "workflow_status")
        with self.session() as session:
            flows = {
                row[0]: (row[1], row[2])
                for row in session.execute(
                    text(
                        f"SELECT workflow_uuid, created_at, started_at_epoch_ms FROM {ws} "
                        "WHERE workflow_uuid LIKE :prefix"
                    ),
                    {"prefix": f"{self.job_id}:%"},
                )
            }
            rows = session.execute(
                text(
                    "SELECT id, deployment_id, region, status, executor_id, started_at, "
                    "completed_at, total_retries FROM certification_runs WHERE job_id = :job"
                ),
                {"job": self.job_id},
            ).all()
        out = []
        for row in rows:
            created_ms, claimed_ms = flows.get(f"{self.job_id}:{row[1]}@{row[2]}", (None, None))
            out.append(
                {
                    "id": row[0],
                    "status": row[3],
                    "executor": row[4],
                    "started": epoch(row[5]),
                    "completed": epoch(row[6]),
                    "retries": row[7],
                    "created": created_ms / 1000 if created_ms else None,
                    "claimed": claimed_ms / 1000 if claimed_ms else None,
                }
            )
        return out

    def test_totals(self) -> dict[str, float]:
        """Sums over the job's test results: attempts, retries, RATE_LIMIT failures, …"""
        with self.session() as session:
            row = session.execute(
                text(
                    "SELECT count(*), coalesce(sum(t.attempts), 0), coalesce(sum(t.retries), 0), "
                    "coalesce(sum(CASE WHEN t.error_category = 'RATE_LIMIT' THEN 1 ELSE 0 END),"
                    " 0), coalesce(sum(CASE WHEN t.outcome = 'PASSED' THEN 1 ELSE 0 END), 0), "
                    "coalesce(sum(t.throttled_s), 0), coalesce(avg(t.duration_ms), 0), "
                    "coalesce(avg(t.latency_ms), 0) "
                    "FROM test_results t JOIN certification_runs r ON r.id = t.run_id "
                    "WHERE r.job_id = :job"
                ),
                {"job": self.job_id},
            ).one()
        keys = (
            "tests",
            "attempts",
            "retries",
            "rate_limit_failed",
            "passed",
            "throttled_s",
            "test_duration_ms",
            "latency_ms",
        )
        return {key: round(float(value), 1) for key, value in zip(keys, row, strict=True)}

    def test_outcomes(self) -> dict[str, int]:
        """The job's test results by outcome (PASSED, FAILED, NOT_RUN, …)."""
        with self.session() as session:
            rows = session.execute(
                text(
                    "SELECT t.outcome, count(*) FROM test_results t "
                    "JOIN certification_runs r ON r.id = t.run_id WHERE r.job_id = :job "
                    "GROUP BY t.outcome"
                ),
                {"job": self.job_id},
            ).all()
        return {str(row[0]): int(row[1]) for row in sorted(rows, key=lambda row: str(row[0]))}

    def recorded_latencies_ms(self) -> list[float]:
        """Provider latency as the runner recorded it (one-call tests): for a 0 ms model,
        anything above ~0 is time the worker's event loop was busy or blocked."""
        with self.session() as session:
            rows = session.execute(
                text(
                    "SELECT t.latency_ms FROM test_results t "
                    "JOIN certification_runs r ON r.id = t.run_id "
                    "WHERE r.job_id = :job AND t.latency_ms IS NOT NULL "
                    "AND t.test_id != 'availability'"
                ),
                {"job": self.job_id},
            ).all()
        return [float(row[0]) for row in rows]

    def db_stats(self) -> dict[str, int] | None:
        """PostgreSQL only: sessions opened and transactions committed in this database."""
        if self.db_kind != "postgres":
            return None
        with self.session() as session:
            session.execute(text("SELECT pg_stat_clear_snapshot()"))
            row = session.execute(
                text(
                    "SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database "
                    "WHERE datname = current_database()"
                )
            ).one()
        return {"sessions": int(row[0]), "commits": int(row[1]), "rollbacks": int(row[2])}

    def close(self) -> None:
        self.sample_all()
        for worker in self.workers:
            worker.stop(timeout=WORKER_STOP_TIMEOUT_S)
        if self.engine is not None:
            self.engine.dispose()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def epoch(value: Any) -> float | None:
    """A stored timestamp (datetime, or ISO text on SQLite) as seconds since the epoch."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    stamp: float = value.timestamp()
    return stamp


@contextmanager
def bench_run(db_kind: str, limits: Limits, regions: Sequence[str], keep: bool) -> Iterator[Run]:
    """A Run with its database migrated; workers stopped and everything removed after."""
    run = Run(db_kind, limits, tuple(regions), keep=keep)
    try:
        with bench_database(db_kind, run.workdir) as url:
            run.url = url
            run.engine = db.make_engine(url)
            db.upgrade(run.engine)
            run.factory = db.make_session_factory(run.engine)
            try:
                yield run
            finally:
                if keep:
                    print(f"# kept {run.workdir}", file=sys.stderr)
                run.close()
    finally:
        if not keep:
            shutil.rmtree(run.workdir, ignore_errors=True)


# --------------------------------------------------------------------------- figures


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def status_counts(runs: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    return counts


def per_executor(runs: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        counts[str(run["executor"])] = counts.get(str(run["executor"]), 0) + 1
    return dict(sorted(counts.items()))


def worker_resources(run: Run) -> dict[str, Any]:
    """CPU seconds and peak RSS (MB) of each of the run's workers, as last sampled."""
    return {
        w.executor_id: {
            "cpu_s": r(run.cpu_s(w), 1),
            "peak_rss_mb": r((run.peak_rss_kb(w) or 0) / 1024, 1),
        }
        for w in run.workers
    }


def finished(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in runs if x["completed"] is not None]


def last_completion(runs: Sequence[dict[str, Any]]) -> float:
    return max((x["completed"] for x in finished(runs)), default=time.time())


def durations(runs: Sequence[dict[str, Any]]) -> list[float]:
    """Each finished certification's duration, from its start (in a worker slot)."""
    return [x["completed"] - x["started"] for x in finished(runs)]


def emit(tag: str, payload: dict[str, Any]) -> None:
    print(f"{tag} {json.dumps(payload, sort_keys=False)}", flush=True)


def medians(results: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(results)}
    for key in keys:
        values = [res[key] for res in results if isinstance(res.get(key), int | float)]
        out[key] = r(statistics.median(values), 3) if values else None
    return out


# --------------------------------------------------------------------------- arguments


def parser(
    doc: str | None,
    *,
    db: str,
    workers: int,
    count: int,
    regions: int,
    concurrency: int,
) -> argparse.ArgumentParser:
    """The arguments every benchmark takes, with its own defaults; a benchmark adds its
    own to the parser returned."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", choices=("sqlite", "postgres"), default=db)
    p.add_argument("--workers", type=int, default=workers)
    p.add_argument("--count", type=int, default=count, help="certifications in the job")
    p.add_argument("--regions", type=int, default=regions, choices=range(1, 7), metavar="1-6")
    p.add_argument("--concurrency", type=int, default=concurrency)
    p.add_argument("--start-rate", type=float, default=1000.0)
    p.add_argument("--poll", type=float, default=0.2, help="MODELCERT_QUEUE_POLL_S")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
    p.add_argument("--keep", action="store_true", help="keep the run's directory (logs)")
    return p


def deployments_for(count: int, regions: Sequence[str]) -> int:
    """Deployments to seed so that `count` (deployment, region) pairs exist."""
    return -(-count // len(regions))


def run_benchmark(
    name: str,
    measure: Callable[[argparse.Namespace], dict[str, Any]],
    keys: Sequence[str],
    args: argparse.Namespace,
) -> int:
    """`--runs` runs of `measure`: a RESULT line each, then the MEDIAN of `keys`."""
    results = []
    for index in range(args.runs):
        result = measure(args)
        result["run"] = index + 1
        emit("RESULT", result)
        results.append(result)
    if args.runs > 1:
        emit("MEDIAN", {"bench": name, "db": args.db, **medians(results, keys)})
    return 0
