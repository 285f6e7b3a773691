"""B5 — cost per certification: the worker's CPU for one zero-latency certification
(12 tests, 13 provider calls; sim `healthy-fast`, `latency_ms: 0`), this tree against a
baseline tree in the same run.

What it measures: per round and per variant, a fresh database, one real worker process,
its idle CPU over --idle seconds (what it spends polling), then --count certifications;
CPU per certification = (worker user+sys over the drain − idle rate × drain time) ÷
count. Variants run A B A B (baseline, this tree) --rounds times; reported: each
variant's median and the median of the per-round ratios this/baseline.

The baseline is another source tree of modelcert (e.g. `git worktree add /tmp/mc-base
<commit>`): its worker runs with PYTHONPATH=<tree>/src, same venv, same database kind.

Or (--baseline-bare) the baseline is bare DBOS with the same durable shape: a worker
process the bench writes and launches (DBOS on the same kind of database, one queue, the
same concurrency and poll interval), an async workflow per "certification" doing 13
`await asyncio.sleep(0)` (the provider calls) and 14 small committed SQLAlchemy Core
inserts in a table of its own (open, 12 tests, finish), each through asyncio.to_thread;
--bare-shape steps (default) makes each write a DBOS step (as the tree's prepare / test /
finish steps), plain writes them from the workflow body with no step. Its CPU per
workflow is measured the same way (user+sys from /proc over the drain minus idle).

Or (--baseline-queue procrastinate|celery) the baseline is a plain task queue doing the
same calls and writes per task (13 zero-latency calls, 14 committed Core inserts in a
table of its own), in a worker process the bench launches: procrastinate (PostgreSQL
only; async task, --queue-concurrency jobs at once, jobs deferred in one batch) or Celery
(Redis broker at MODELCERT_BENCH_REDIS_URL, default redis://127.0.0.1:6379/0, results
ignored, threads pool of --queue-concurrency; writes to the bench's database, either
kind). See b5_queues.py; needs the `bench` extra (`pip install -e '.[bench]'`).

Run:
    python bench/b5_cost.py --db sqlite --baseline-src /tmp/mc-base/src --count 200 --rounds 3
    python bench/b5_cost.py --db postgres --baseline-src /tmp/mc-base/src --count 200 --rounds 3
    python bench/b5_cost.py --db sqlite --baseline-bare --count 100 --rounds 3
    python bench/b5_cost.py --db postgres --baseline-queue procrastinate --count 100 --rounds 3
    python bench/b5_cost.py --db sqlite --baseline-queue celery --count 100 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import b5_queues
import harness
from dbos import DBOSClient
from harness import SIX_REGIONS, Limits, bench_run, r
from sqlalchemy import create_engine, text

CONCURRENCY = 200
POLL_S = Limits(1, 1, 1).poll_s

BARE_WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    import sqlalchemy as sa
    from dbos import DBOS
    system_url, app_url, poll, concurrency, shape = sys.argv[1:6]
    DBOS(config={"name": "bare-cost", "system_database_url": system_url, "log_level": "WARNING"})
    engine = sa.create_engine(app_url, pool_size=10, max_overflow=20)
    if app_url.startswith("sqlite"):
        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
    metadata = sa.MetaData()
    writes = sa.Table(
        "bare_writes", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workflow_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("payload", sa.String(200), nullable=False),
    )
    metadata.create_all(engine)

    def write(workflow_id, seq):
        with engine.begin() as connection:
            connection.execute(
                writes.insert().values(workflow_id=workflow_id, seq=seq, payload="x" * 64)
            )

    @DBOS.step(name="bare_write")
    async def step_write(workflow_id, seq):
        await asyncio.to_thread(write, workflow_id, seq)

    @DBOS.workflow(name="bare_cert")
    async def bare_cert(index):
        workflow_id = DBOS.workflow_id
        for seq in range(14):  # open, 12 tests, finish
            if seq:
                await asyncio.sleep(0)  # a zero-latency provider call
            if shape == "steps":
                await step_write(workflow_id, seq)
            else:
                await asyncio.to_thread(write, workflow_id, seq)
        return index

    DBOS.listen_queues(["bare"])
    DBOS.launch()
    DBOS.register_queue(
        "bare", worker_concurrency=int(concurrency), polling_interval_sec=float(poll),
        on_conflict="always_update",
    )
    print("ready", flush=True)
    time.sleep(3600)
    """
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_bare(db_kind: str, count: int, idle_s: float, shape: str) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="b5-bare-") as workdir,
        harness.bench_database(db_kind, Path(workdir)) as url,
    ):
        system_url = url.replace("postgresql+psycopg://", "postgresql://")
        bare_args = (str(CONCURRENCY), shape)
        status = "dbos.workflow_status" if db_kind == "postgres" else "workflow_status"
        process = subprocess.Popen(
            [sys.executable, "-c", BARE_WORKER, *(system_url, url, f"{POLL_S:g}"), *bare_args],
            stdout=subprocess.PIPE,
            text=True,
        )
        engine = create_engine(url)
        client = DBOSClient(system_database_url=system_url)
        try:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise SystemExit("bare DBOS worker did not start")
            time.sleep(2.0)
            idle_from, idle_t0 = cpu_seconds(process.pid), time.monotonic()
            time.sleep(idle_s)
            busy_from, busy_t0 = cpu_seconds(process.pid), time.monotonic()
            idle_rate = (busy_from - idle_from) / (busy_t0 - idle_t0)
            for index in range(count):
                client.enqueue({"queue_name": "bare", "workflow_name": "bare_cert"}, index)
            finished = 0
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                with engine.connect() as connection:
                    finished = connection.execute(
                        text(f"SELECT count(*) FROM {status} WHERE status = 'SUCCESS'")
                    ).scalar_one()
                if finished >= count:
                    break
                time.sleep(0.05)
            busy_s = cpu_seconds(process.pid) - busy_from
            span = time.monotonic() - busy_t0
            with engine.connect() as connection:
                written = connection.execute(text("SELECT count(*) FROM bare_writes")).scalar_one()
            return {
                "all_done": finished >= count,
                "finished": finished,
                "writes": written,
                "idle_cpu_pct": r(idle_rate * 100, 2),
                "cpu_ms_per_cert": r((busy_s - idle_rate * span) / max(finished, 1) * 1000, 1),
            }
        finally:
            process.kill()
            process.wait()
            client.destroy()
            engine.dispose()


def measure(db_kind: str, count: int, idle_s: float, src: str | None) -> dict[str, Any]:
    regions = SIX_REGIONS[:2]
    limits = Limits(
        certification_concurrency=CONCURRENCY,
        region_concurrency=CONCURRENCY,
        region_start_rate=1000,
    )
    with bench_run(db_kind, limits, regions, False) as run:
        refs = run.seed(
            harness.deployments_for(count, regions), {"profile": "healthy-fast", "latency_ms": 0}
        )
        run.start_workers(1, {"PYTHONPATH": src} if src else None)
        worker = run.workers[0]
        time.sleep(2.0)  # start-up done
        idle_from, idle_t0 = worker.cpu_seconds(), time.monotonic()
        time.sleep(idle_s)
        busy_from, busy_t0 = worker.cpu_seconds(), time.monotonic()
        idle_rate = (busy_from - idle_from) / (busy_t0 - idle_t0)
        run.enqueue(run.targets(refs, count))
        done = run.wait_done(600)
        busy_s = worker.cpu_seconds() - busy_from
        span = time.monotonic() - busy_t0
        finished = len(harness.finished(run.runs()))
        return {
            "all_done": done,
            "finished": finished,
            "idle_cpu_pct": r(idle_rate * 100, 2),
            "cpu_ms_per_cert": r((busy_s - idle_rate * span) / max(finished, 1) * 1000, 1),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--baseline-src", help="another modelcert tree's src (tree vs tree)")
    which.add_argument("--baseline-bare", action="store_true", help="bare DBOS, same shape")
    which.add_argument(
        "--baseline-queue",
        choices=("procrastinate", "celery"),
        help="a plain task queue doing the same calls and writes (the `bench` extra)",
    )
    parser.add_argument("--bare-shape", choices=("steps", "plain"), default="steps")
    parser.add_argument(
        "--queue-concurrency",
        type=int,
        default=CONCURRENCY,
        help=f"--baseline-queue worker's concurrent tasks (default {CONCURRENCY}, as ours)",
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.rounds < 1:
        parser.error("--count and --rounds must be at least 1")
    if args.baseline_queue == "procrastinate" and args.db != "postgres":
        parser.error("--baseline-queue procrastinate needs --db postgres")
    base: list[float] = []
    ours: list[float] = []
    for _ in range(args.rounds):
        if args.baseline_bare:
            a = measure_bare(args.db, args.count, args.idle, args.bare_shape)
        elif args.baseline_queue:
            a = b5_queues.measure_queue(
                args.baseline_queue, args.db, args.count, args.idle, args.queue_concurrency, POLL_S
            )
        else:
            a = measure(args.db, args.count, args.idle, args.baseline_src)
        b = measure(args.db, args.count, args.idle, None)
        print("ROUND", json.dumps({"baseline": a, "this": b}), flush=True)
        base.append(a["cpu_ms_per_cert"])
        ours.append(b["cpu_ms_per_cert"])
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    if args.baseline_bare:
        baseline = f"bare DBOS ({args.bare_shape})"
    elif args.baseline_queue:
        baseline = f"{args.baseline_queue} (concurrency {args.queue_concurrency})"
    else:
        baseline = args.baseline_src
    print(
        "MEDIAN",
        json.dumps(
            {
                "db": args.db,
                "count": args.count,
                "baseline": baseline,
                "baseline_per_round": base,
                "this_per_round": ours,
                "ratios_per_round": [r(x, 3) for x in ratios],
                "baseline_cpu_ms_per_cert": r(statistics.median(base), 1),
                "this_cpu_ms_per_cert": r(statistics.median(ours), 1),
                "ratio_this_to_baseline": r(statistics.median(ratios), 3),
            }
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
