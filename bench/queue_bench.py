"""Queue benchmarks B1–B4 with real `modelcert worker` processes (see docs/benchmarks.md).

    python bench/queue_bench.py b1 --db sqlite --workers 2 --count 2000
    python bench/queue_bench.py b2 --runs 3
    python bench/queue_bench.py b3 --db postgres
    python bench/queue_bench.py b4 --runs 3

Every run creates its own database (a SQLite file in a temporary directory, or a fresh
PostgreSQL database on 127.0.0.1), starts and stops its own workers, and removes what it
created. Each run prints one `RESULT {json}` line; with --runs > 1 a `MEDIAN {json}` line
follows. Nothing here is a timed test: these are measurements on whatever machine runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
CALLS_PER_CERTIFICATION = 13  # 12 tests; `availability` calls twice, 2 s apart


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


# --------------------------------------------------------------------------- workers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total else None


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class BenchWorker:
    """One `python -m modelcert worker` process."""

    def __init__(
        self,
        url: str,
        executor_id: str,
        workdir: Path,
        regions: Sequence[str],
        env: dict[str, str],
    ) -> None:
        self.executor_id = executor_id
        self.port = _free_port()
        self.log_path = workdir / f"{executor_id}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.args = [
            sys.executable,
            "-m",
            "modelcert",
            "worker",
            "--executor-id",
            executor_id,
            "--health-port",
            str(self.port),
            *[arg for region in regions for arg in ("--region", region)],
        ]
        self.env = {
            **os.environ,
            "MODELCERT_DATABASE_URL": url,
            "MODELCERT_LOG_JSON": "1",
            "MODELCERT_SHUTDOWN_GRACE_S": "20",
            **env,
        }
        self.workdir = workdir
        self.cpu_s: float | None = None
        self.peak_rss_kb: int | None = None
        self.killed = False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> BenchWorker:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir
            )
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log()[-3000:]}")
            if self.get("/ready")[0] == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready: {self.log()[-3000:]}")

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except OSError:
            return 0, None

    def sample(self) -> None:
        """Record CPU time and peak RSS while the process is still there."""
        try:
            self.cpu_s = _cpu_seconds(self.pid)
            self.peak_rss_kb = _status_kb(self.pid, "VmHWM")
        except (OSError, IndexError, ValueError):
            pass

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.killed = True
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


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
    workers: list[BenchWorker] = field(default_factory=list)
    job_id: str = ""
    enqueue_s: float = 0.0
    enqueued_at: float = 0.0  # wall clock when the enqueue transaction had committed

    def session(self) -> Any:
        assert self.factory is not None
        return transaction(self.factory)

    def seed(self, deployments: int, options: dict[str, Any]) -> list[str]:
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

    def start_workers(self, count: int, extra_env: dict[str, str] | None = None) -> None:
        env = {**self.limits.env(), **(extra_env or {})}
        started = [
            BenchWorker(self.url, f"bench-w{i + 1}", self.workdir, self.regions, env).start()
            for i in range(count)
        ]
        for worker in started:
            worker.wait_ready()
        self.workers.extend(started)

    def enqueue(self, targets: list[tuple[str | int, str]]) -> None:
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
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            processed, total = self.progress()
            if processed >= total:
                return True
            if on_tick:
                on_tick()
            for worker in self.workers:
                if worker.process and worker.process.poll() is not None and not worker.killed:
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
                    "started": _epoch(row[5]),
                    "completed": _epoch(row[6]),
                    "retries": row[7],
                    "created": created_ms / 1000 if created_ms else None,
                    "claimed": claimed_ms / 1000 if claimed_ms else None,
                }
            )
        return out

    def test_totals(self) -> dict[str, int]:
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
        for worker in self.workers:
            if worker.process and worker.process.poll() is None:
                worker.sample()
            worker.stop()
        if self.engine is not None:
            self.engine.dispose()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    stamp: float = value.timestamp()
    return stamp


@contextmanager
def bench_run(db_kind: str, limits: Limits, regions: Sequence[str], keep: bool) -> Iterator[Run]:
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


def worker_resources(workers: Sequence[BenchWorker]) -> dict[str, Any]:
    return {
        w.executor_id: {
            "cpu_s": r(w.cpu_s, 1),
            "peak_rss_mb": r((w.peak_rss_kb or 0) / 1024, 1),
        }
        for w in workers
    }


def emit(tag: str, payload: dict[str, Any]) -> None:
    print(f"{tag} {json.dumps(payload, sort_keys=False)}", flush=True)


def medians(results: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(results)}
    for key in keys:
        values = [res[key] for res in results if isinstance(res.get(key), int | float)]
        out[key] = r(statistics.median(values), 3) if values else None
    return out


# --------------------------------------------------------------------------- B1


def b1(args: argparse.Namespace) -> dict[str, Any]:
    """Queue overhead: N certifications of a zero-latency sim model."""
    regions = SIX_REGIONS[: args.regions]
    limits = Limits(
        certification_concurrency=args.concurrency,
        region_concurrency=args.concurrency * args.workers,
        region_start_rate=args.start_rate,
        poll_s=args.poll,
    )
    deployments = -(-args.count // len(regions))
    with bench_run(args.db, limits, regions, args.keep) as run:
        refs = run.seed(deployments, {"profile": "healthy-fast", "latency_ms": 0})
        targets: list[tuple[str | int, str]] = [(d, g) for d in refs for g in regions]
        run.start_workers(args.workers)
        stats_before = run.db_stats()
        cpu_before = machine_jiffies()
        run.enqueue(targets[: args.count])
        done = run.wait_done(args.timeout)
        machine_busy = busy_fraction(cpu_before, machine_jiffies())
        for worker in run.workers:
            worker.sample()
        stats_after = run.db_stats()
        runs = run.runs()
        finished = [x for x in runs if x["completed"] is not None]
        waits = [x["started"] - x["created"] for x in runs if x["created"] and x["started"]]
        claims = [x["claimed"] - x["created"] for x in runs if x["created"] and x["claimed"]]
        durations = [x["completed"] - x["started"] for x in finished]
        last = max((x["completed"] for x in finished), default=time.time())
        span = last - run.enqueued_at
        lags = run.recorded_latencies_ms()
        return {
            "bench": "b1",
            "db": args.db,
            "workers": args.workers,
            "count": args.count,
            "started": sum(1 for x in runs if x["started"]),
            "completed": len(finished),
            "all_done": done,
            "regions": len(regions),
            "deployments": deployments,
            "limits": limits.describe(),
            "enqueue_s": r(run.enqueue_s),
            "enqueue_per_s": r(args.count / run.enqueue_s, 1),
            "drain_s": r(span),
            "cert_per_s": r(len(finished) / span if span > 0 else None),
            "wait_p50_s": r(pct(waits, 50)),
            "wait_p95_s": r(pct(waits, 95)),
            "claim_p50_s": r(pct(claims, 50)),
            "claim_p95_s": r(pct(claims, 95)),
            "cert_duration_p50_s": r(pct(durations, 50)),
            "cert_duration_p95_s": r(pct(durations, 95)),
            "recorded_latency_p50_ms": r(pct(lags, 50), 1),
            "recorded_latency_p95_ms": r(pct(lags, 95), 1),
            "statuses": status_counts(runs),
            "per_executor": per_executor(runs),
            "resources": worker_resources(run.workers),
            "db_stats": _delta(stats_before, stats_after),
            "machine_cpu_busy": machine_busy,
        }


def _delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {key: after[key] - before[key] for key in after}


B1_KEYS = (
    "enqueue_s",
    "enqueue_per_s",
    "drain_s",
    "cert_per_s",
    "wait_p50_s",
    "wait_p95_s",
    "claim_p50_s",
    "claim_p95_s",
    "cert_duration_p50_s",
    "cert_duration_p95_s",
    "recorded_latency_p95_ms",
)


# --------------------------------------------------------------------------- B2


def b2(args: argparse.Namespace) -> dict[str, Any]:
    """Quota-bound throughput: a shared per-region quota, two workers."""
    regions = SIX_REGIONS[: args.regions]
    limits = Limits(
        certification_concurrency=args.concurrency,
        region_concurrency=args.region_concurrency,
        region_start_rate=args.start_rate,
        poll_s=args.poll,
    )
    deployments = -(-args.count // len(regions))
    with bench_run(args.db, limits, regions, args.keep) as run:
        options = {
            "profile": "healthy-fast",
            "latency_ms": [args.latency_low, args.latency_high],
            "quota_rps": args.quota,
            "quota_scope": "host",
            "quota_key": "bench-account",
            "quota_dir": str(run.workdir / "quota"),
        }
        refs = run.seed(deployments, options)
        targets: list[tuple[str | int, str]] = [(d, g) for d in refs for g in regions]
        run.start_workers(args.workers)
        cpu_before = machine_jiffies()
        run.enqueue(targets[: args.count])
        done = run.wait_done(args.timeout)
        machine_busy = busy_fraction(cpu_before, machine_jiffies())
        for worker in run.workers:
            worker.sample()
        runs = run.runs()
        totals = run.test_totals()
        finished = [x for x in runs if x["completed"] is not None]
        last = max((x["completed"] for x in finished), default=time.time())
        wall = last - run.enqueued_at
        # Calls that got through the quota: attempts minus the refused (retried) ones.
        served = int(totals["attempts"] - totals["retries"])
        durations = [x["completed"] - x["started"] for x in finished]
        bound = served / (args.quota * len(regions))
        return {
            "bench": "b2",
            "db": args.db,
            "workers": args.workers,
            "count": args.count,
            "completed": len(finished),
            "all_done": done,
            "regions": len(regions),
            "quota_rps_per_region": args.quota,
            "latency_ms": [args.latency_low, args.latency_high],
            "limits": limits.describe(),
            "wall_s": r(wall),
            "provider_calls": served,
            "bound_s": r(bound),
            "ratio": r(wall / bound, 3),
            "rate_limit_failed": int(totals["rate_limit_failed"]),
            "retries": int(totals["retries"]),
            "tests": int(totals["tests"]),
            "tests_passed": int(totals["passed"]),
            "throttled_s_total": totals["throttled_s"],
            "test_duration_mean_ms": totals["test_duration_ms"],
            "latency_mean_ms": totals["latency_ms"],
            "cert_duration_p50_s": r(pct(durations, 50)),
            "machine_cpu_busy": machine_busy,
            "statuses": status_counts(runs),
            "per_executor": per_executor(runs),
            "resources": worker_resources(run.workers),
        }


B2_KEYS = ("wall_s", "bound_s", "ratio", "rate_limit_failed", "retries")


# --------------------------------------------------------------------------- B3


def b3(args: argparse.Namespace) -> dict[str, Any]:
    """One worker, N concurrent certifications of a slow (2 s) sim model."""
    regions = SIX_REGIONS[: args.regions]
    limits = Limits(
        certification_concurrency=args.count,
        region_concurrency=args.count,
        region_start_rate=max(args.start_rate, float(args.count)),
        poll_s=args.poll,
    )
    deployments = -(-args.count // len(regions))
    with bench_run(args.db, limits, regions, args.keep) as run:
        refs = run.seed(deployments, {"profile": "healthy-fast", "latency_ms": args.latency})
        targets: list[tuple[str | int, str]] = [(d, g) for d in refs for g in regions]
        run.start_workers(1)
        worker = run.workers[0]
        baseline_rss = _status_kb(worker.pid, "VmRSS")
        samples: list[int] = []

        def sample_rss() -> None:
            samples.append(_status_kb(worker.pid, "VmRSS"))

        cpu_before = machine_jiffies()
        run.enqueue(targets[: args.count])
        done = run.wait_done(args.timeout, on_tick=sample_rss)
        machine_busy = busy_fraction(cpu_before, machine_jiffies())
        worker.sample()
        runs = run.runs()
        finished = [x for x in runs if x["completed"] is not None]
        last = max((x["completed"] for x in finished), default=time.time())
        wall = last - run.enqueued_at
        ideal = (CALLS_PER_CERTIFICATION * args.latency + 2000) / 1000
        durations = [x["completed"] - x["started"] for x in finished]
        starts = [x["started"] - run.enqueued_at for x in runs if x["started"]]
        return {
            "bench": "b3",
            "db": args.db,
            "count": args.count,
            "completed": len(finished),
            "all_done": done,
            "regions": len(regions),
            "latency_ms": args.latency,
            "limits": limits.describe(),
            "wall_s": r(wall),
            "ideal_s": ideal,
            "ratio": r(wall / ideal, 3),
            "last_start_s": r(max(starts, default=None)),
            "cert_duration_p50_s": r(pct(durations, 50)),
            "cert_duration_max_s": r(max(durations, default=None)),
            "rss_idle_mb": r(baseline_rss / 1024, 1),
            "rss_max_sampled_mb": r(max(samples, default=0) / 1024, 1),
            "peak_rss_mb": r((worker.peak_rss_kb or 0) / 1024, 1),
            "worker_cpu_s": r(worker.cpu_s, 1),
            "machine_cpu_busy": machine_busy,
            "statuses": status_counts(runs),
        }


B3_KEYS = ("wall_s", "ideal_s", "ratio", "last_start_s", "peak_rss_mb", "worker_cpu_s")


# --------------------------------------------------------------------------- B4


def _test_rows(run: Run) -> dict[tuple[int, str], int]:
    with run.session() as session:
        rows = session.execute(
            text(
                "SELECT t.id, t.run_id, t.test_id FROM test_results t "
                "JOIN certification_runs r ON r.id = t.run_id WHERE r.job_id = :job"
            ),
            {"job": run.job_id},
        ).all()
    return {(int(row[1]), str(row[2])): int(row[0]) for row in rows}


def _run_of_workflow(run: Run) -> dict[str, int]:
    with run.session() as session:
        rows = session.execute(
            text(
                "SELECT id, deployment_id, region FROM certification_runs WHERE job_id = :job "
                "ORDER BY id"
            ),
            {"job": run.job_id},
        ).all()
    # The first run of each workflow is the one its checkpointed `prepare` step created.
    out: dict[str, int] = {}
    for row in rows:
        out.setdefault(f"{run.job_id}:{row[1]}@{row[2]}", int(row[0]))
    return out


def _checkpointed_test_steps(run: Run) -> int:
    assert run.engine is not None
    outputs = dbos_table(run.engine.dialect.name, "operation_outputs")
    with run.session() as session:
        value = session.execute(
            text(
                f"SELECT count(*) FROM {outputs} WHERE function_name = 'test' "
                "AND workflow_uuid LIKE :prefix"
            ),
            {"prefix": f"{run.job_id}:%"},
        ).scalar()
    return int(value or 0)


def b4(args: argparse.Namespace) -> dict[str, Any]:
    """Recovery: kill -9 one of two workers mid-way; the survivor's reaper takes over."""
    regions = SIX_REGIONS[: args.regions]
    limits = Limits(
        certification_concurrency=args.concurrency,
        region_concurrency=args.concurrency * 2,
        region_start_rate=args.start_rate,
        poll_s=args.poll,
        dead_after_s=args.dead_after,
    )
    deployments = -(-args.count // len(regions))
    with bench_run(args.db, limits, regions, args.keep) as run:
        refs = run.seed(deployments, {"profile": "healthy-fast", "latency_ms": args.latency})
        targets: list[tuple[str | int, str]] = [(d, g) for d in refs for g in regions]
        run.start_workers(2)
        victim, survivor = run.workers
        run.enqueue(targets[: args.count])
        time.sleep(args.kill_after)
        # In-flight work of the victim an instant before the kill: which test each
        # certification is in (or last finished).
        _, health = victim.get("/health")
        victim.kill()
        killed_at = time.time()
        before = _test_rows(run)
        in_flight = (health or {}).get("in_flight", [])
        workflow_runs = _run_of_workflow(run)
        interrupted = [
            (item["workflow_id"], item["test"])
            for item in in_flight
            if item.get("test")
            and (workflow_runs.get(item["workflow_id"]), item["test"]) not in before
        ]
        processed_at_kill = run.progress()[0]
        done = run.wait_done(args.timeout)
        survivor.sample()
        after = _test_rows(run)
        runs = run.runs()
        finished = [x for x in runs if x["completed"] is not None]
        last = max((x["completed"] for x in finished), default=time.time())
        # A test stored on the victim but whose step was not checkpointed runs again:
        # its row is replaced (a new id). A test in flight at the kill made its provider
        # calls on the victim and makes them again on the survivor.
        replaced = [key for key, row_id in before.items() if after.get(key) != row_id]
        reran_in_flight = [
            (wf, test) for wf, test in interrupted if (workflow_runs.get(wf), test) in after
        ]
        stalled = [
            json.loads(line)
            for line in survivor.log().splitlines()
            if '"stalled"' in line and line.startswith("{")
        ]
        detected = (
            _epoch(datetime.fromisoformat(stalled[0]["timestamp"].replace("Z", "+00:00")))
            if stalled
            else None
        )
        orphans = [x for x in runs if x["status"] == "RUNNING"]
        return {
            "bench": "b4",
            "db": args.db,
            "count": args.count,
            "completed": len(finished) - len(orphans),
            "all_done": done,
            "latency_ms": args.latency,
            "limits": limits.describe(),
            "dead_after_s": args.dead_after,
            "kill_after_s": args.kill_after,
            "processed_at_kill": processed_at_kill,
            "victim_in_flight_at_kill": len(in_flight),
            "requeued": sum(int(s.get("requeued", 0)) for s in stalled),
            "detected_after_kill_s": r(detected - killed_at if detected else None),
            "done_after_kill_s": r(last - killed_at),
            # The victim's certifications keep its executor id (their `prepare` step is
            # not run again): when the last of them was finished by the survivor.
            "victims_work_done_after_kill_s": r(
                max(
                    (x["completed"] for x in finished if x["executor"] == victim.executor_id),
                    default=killed_at,
                )
                - killed_at
            ),
            # When the survivor claimed the victim's requeued certifications.
            "victims_work_claimed_after_kill_s": sorted(
                r(x["claimed"] - killed_at, 1)
                for x in runs
                if x["executor"] == victim.executor_id and x["claimed"] and x["claimed"] > killed_at
            ),
            "total_s": r(last - run.enqueued_at),
            "tests_reexecuted": len(replaced) + len(reran_in_flight),
            "reexecuted_in_flight": len(reran_in_flight),
            "reexecuted_stored_not_checkpointed": len(replaced),
            "test_rows": len(after),
            "checkpointed_test_steps": _checkpointed_test_steps(run),
            "orphan_runs": len(orphans),
            "statuses": status_counts(runs),
            "per_executor": per_executor(runs),
        }


B4_KEYS = ("detected_after_kill_s", "done_after_kill_s", "total_s", "tests_reexecuted")


# --------------------------------------------------------------------------- main

BENCHES: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]], Sequence[str]]] = {
    "b1": (b1, B1_KEYS),
    "b2": (b2, B2_KEYS),
    "b3": (b3, B3_KEYS),
    "b4": (b4, B4_KEYS),
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "b1": {"db": "sqlite", "workers": 1, "count": 2000, "regions": 6, "concurrency": 200},
    "b2": {"db": "postgres", "workers": 2, "count": 300, "regions": 3, "concurrency": 60},
    "b3": {"db": "postgres", "workers": 1, "count": 500, "regions": 1, "concurrency": 500},
    "b4": {"db": "postgres", "workers": 2, "count": 100, "regions": 1, "concurrency": 10},
}


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="bench", required=True)
    for name, defaults in DEFAULTS.items():
        p = sub.add_parser(name)
        p.add_argument("--db", choices=("sqlite", "postgres"), default=defaults["db"])
        p.add_argument("--workers", type=int, default=defaults["workers"])
        p.add_argument("--count", type=int, default=defaults["count"])
        p.add_argument("--regions", type=int, default=defaults["regions"])
        p.add_argument("--concurrency", type=int, default=defaults["concurrency"])
        p.add_argument("--start-rate", type=float, default=1000.0)
        p.add_argument("--poll", type=float, default=0.2, help="MODELCERT_QUEUE_POLL_S")
        p.add_argument("--runs", type=int, default=1)
        p.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
        p.add_argument("--keep", action="store_true", help="keep the run's directory (logs)")
        if name == "b2":
            p.add_argument("--region-concurrency", type=int, default=20)
            p.add_argument("--quota", type=float, default=20.0)
            p.add_argument("--latency-low", type=float, default=200.0)
            p.add_argument("--latency-high", type=float, default=800.0)
        if name == "b3":
            p.add_argument("--latency", type=float, default=2000.0)
        if name == "b4":
            p.add_argument("--latency", type=float, default=200.0)
            p.add_argument("--dead-after", type=float, default=10.0)
            p.add_argument("--kill-after", type=float, default=8.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    bench, keys = BENCHES[args.bench]
    results = []
    for index in range(args.runs):
        result = bench(args)
        result["run"] = index + 1
        emit("RESULT", result)
        results.append(result)
    if args.runs > 1:
        emit("MEDIAN", {"bench": args.bench, "db": args.db, **medians(results, keys)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
