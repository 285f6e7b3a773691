"""B7 — what an idle worker costs, by number of regions, and how soon it starts new work.

What it measures, on PostgreSQL (and SQLite with --db sqlite):
- idle CPU: a `modelcert worker` serving --regions-list regions (1, 6, 20 by default),
  with nothing queued, after --settle-s of start-up (65 s: DBOS's scheduler polls every
  second for its first minute): its process CPU (user + sys) over --window-s, as a
  fraction of one core;
- idle commits: the database's `pg_stat_database.xact_commit` over the same window, per
  second (every transaction counts, read-only ones too), PostgreSQL only;
- start latency when idle: --samples single certifications enqueued one at a time, a few
  seconds apart, each timed from its enqueue's commit to DBOS's claim
  (`started_at_epoch_ms`); p50 and p95.

Baseline in the same run, A B A B: a bare DBOS process (`DBOS.launch()` listening to one
queue with the same polling interval, nothing else) — the floor of any DBOS worker —
measured the same way over the same window. Reported: each figure and the ratio of the
worker's CPU to the baseline's.

Run:
    python bench/b7_idle.py --runs 2                 # PostgreSQL, 1/6/20 regions
    python bench/b7_idle.py --db sqlite --runs 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import harness
from harness import Limits, bench_run, pct, r
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from modelcert.domain import JobKind
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.queues import dbos_table

REGION_POOL = tuple(f"bench-{index:02d}" for index in range(40))
CLK_TCK = os.sysconf("SC_CLK_TCK")

BARE_DBOS = textwrap.dedent(
    """
    import sys, time
    from dbos import DBOS
    url, poll = sys.argv[1], float(sys.argv[2])
    DBOS(config={"name": "bare-idle", "system_database_url": url, "log_level": "WARNING"})
    DBOS.listen_queues(["bare"])
    DBOS.launch()
    DBOS.register_queue("bare", polling_interval_sec=poll, on_conflict="always_update")
    print("ready", flush=True)
    time.sleep(3600)
    """
)


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def commits(url: str) -> int | None:
    if not url.startswith("postgresql"):
        return None
    name = make_url(url).database
    engine = create_engine(harness.POSTGRES_ADMIN_URL)
    try:
        with engine.connect() as connection:
            value = connection.execute(
                text("SELECT xact_commit FROM pg_stat_database WHERE datname = :name"),
                {"name": name},
            ).scalar_one()
        return int(value)
    finally:
        engine.dispose()


def window(pid: int, url: str, seconds: float) -> dict[str, float | None]:
    """CPU fraction of one core and commits/s of `pid` over `seconds`."""
    cpu0, commits0, t0 = process_cpu_s(pid), commits(url), time.monotonic()
    time.sleep(seconds)
    cpu1, commits1, t1 = process_cpu_s(pid), commits(url), time.monotonic()
    elapsed = t1 - t0
    per_s = None
    if commits0 is not None and commits1 is not None:
        per_s = (commits1 - commits0 - 2) / elapsed  # less this function's own two reads
    return {"cpu_core": (cpu1 - cpu0) / elapsed, "commits_per_s": per_s}


def bare_dbos(url: str, poll_s: float, seconds: float, settle_s: float) -> dict[str, Any]:
    database_url = url.replace("postgresql+psycopg://", "postgresql://")
    process = subprocess.Popen(
        [sys.executable, "-c", BARE_DBOS, database_url, f"{poll_s:g}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()
        time.sleep(settle_s)
        return window(process.pid, url, seconds)
    finally:
        process.kill()
        process.wait()


def start_latencies(run: harness.Run, refs: list[str], samples: int) -> list[float]:
    """Enqueue → claim, one certification at a time on an idle worker."""
    assert run.engine is not None and run.factory is not None
    enqueuer = Enqueuer(run.engine, run.limits.settings(run.url))
    table = dbos_table(run.engine.dialect.name, "workflow_status")
    latencies = []
    try:
        for region in run.regions:
            enqueuer.ensure_queue(region)
        for index in range(samples):
            target = (refs[index % len(refs)], run.regions[index % len(run.regions)])
            result = enqueuer.enqueue(run.factory, [target], kind=JobKind.SINGLE)
            committed = time.time()
            workflow_id = result.queued[0].workflow_id
            deadline = time.monotonic() + 30
            claimed_ms = None
            while time.monotonic() < deadline and claimed_ms is None:
                with run.engine.connect() as connection:
                    claimed_ms = connection.execute(
                        text(f"SELECT started_at_epoch_ms FROM {table} WHERE workflow_uuid = :id"),
                        {"id": workflow_id},
                    ).scalar_one_or_none()
                time.sleep(0.01)
            if claimed_ms is None:
                raise RuntimeError(f"{workflow_id} not claimed within 30 s")
            latencies.append(max(0.0, claimed_ms / 1000 - committed))
            while time.monotonic() < deadline:  # done before the next one: idle again
                with run.engine.connect() as connection:
                    status = connection.execute(
                        text(f"SELECT status FROM {table} WHERE workflow_uuid = :id"),
                        {"id": workflow_id},
                    ).scalar_one()
                if status not in ("ENQUEUED", "PENDING"):
                    break
                time.sleep(0.05)
            time.sleep(1.5 + (index % 3) * 0.5)  # idle again, at no fixed phase of a poll
    finally:
        enqueuer.close()
    return latencies


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    limits = Limits(certification_concurrency=10, region_concurrency=20, region_start_rate=5)
    limits.poll_s = args.poll_s
    out: dict[str, Any] = {}
    for count in args.regions_list:
        regions = REGION_POOL[:count]
        with bench_run(args.db, limits, regions, keep=False) as run:
            refs = run.seed(2, {"profile": "healthy-fast", "latency_ms": 0})
            run.start_workers(1)
            time.sleep(args.settle_s)
            worker = window(run.workers[0].pid, run.url, args.window_s)
            baseline = bare_dbos(run.url, args.poll_s, args.window_s, args.settle_s)
            entry: dict[str, Any] = {
                "worker_cpu_core": r(worker["cpu_core"], 4),
                "worker_commits_per_s": r(worker["commits_per_s"], 1),
                "bare_dbos_cpu_core": r(baseline["cpu_core"], 4),
                "bare_dbos_commits_per_s": r(baseline["commits_per_s"], 1),
                "cpu_ratio": r(worker["cpu_core"] / baseline["cpu_core"], 2)
                if baseline["cpu_core"]
                else None,
            }
            if count == args.regions_list[-1] and args.samples:
                latencies = start_latencies(run, refs, args.samples)
                entry["start_p50_s"] = r(pct(latencies, 50), 3)
                entry["start_p95_s"] = r(pct(latencies, 95), 3)
            out[f"regions_{count}"] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--regions-list", type=int, nargs="+", default=[1, 6, 20])
    parser.add_argument("--poll-s", type=float, default=0.5)
    parser.add_argument("--settle-s", type=float, default=65.0)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    results = []
    for _ in range(args.runs):
        result = one_run(args)
        print("RESULT", harness.json.dumps(result), flush=True)
        results.append(result)
    if len(results) > 1:
        median = {
            key: {
                field: r(statistics.median(x[key][field] for x in results if x[key].get(field)), 4)
                for field in results[0][key]
            }
            for key in results[0]
        }
        print("MEDIAN", harness.json.dumps(median), flush=True)


if __name__ == "__main__":
    main()
