"""B5's plain task queue baselines (`b5_cost.py --baseline-queue`): procrastinate or Celery
doing one certification's calls and writes per task, in a worker process of their own.

Not a benchmark itself: `b5_cost.py` imports it. Needs the `bench` extra
(`.venv/bin/pip install -e '.[bench]'`); the queue libraries are imported only here, and
only in the worker scripts and in `measure_queue`.

Per task, the shape of bare DBOS's plain shape and of one zero-latency certification: 13
zero-latency "provider calls" and 14 small committed SQLAlchemy Core inserts (open, 12
tests, finish) in a table of its own, `queue_writes`, in the bench's database:

- procrastinate (PostgreSQL only): an async task, `await asyncio.sleep(0)` per call and
  each insert through `asyncio.to_thread` (as bare DBOS and our worker write); one worker,
  `concurrency` jobs at once, LISTEN/NOTIFY on (its default) with a `poll_s` polling
  fallback; the schema applied by the worker at start-up in the round's fresh database;
  jobs deferred by the bench in one `batch_defer_async` (one INSERT of --count jobs).
- Celery (either database): a sync task, `time.sleep(0)` per call (it releases the GIL, as
  the await yields the loop) and the inserts inline; Redis broker, results ignored, the
  threads pool with `concurrency` threads in one process (the prefork pool would spread
  the work over child processes; the tree's CPU is summed anyway), no gossip / mingle /
  heartbeat (cluster chatter a single worker does not need); tasks sent by the bench with
  `send_task` over one producer connection, a queue of their own per round.

The drain ends when all 14 × count rows exist and, for procrastinate, every job is
`succeeded` (its completion write is part of the queue's cost; Celery acknowledges a
message before running its task, and results are ignored, so nothing is left after the
last row). Worker CPU: user+sys of the worker process and its descendants from /proc over
the drain, minus its idle rate measured before over `idle_s`, ÷ tasks.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import harness
from harness import r
from sqlalchemy import create_engine, text

REDIS_URL = os.environ.get("MODELCERT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
WRITES_PER_TASK = 14  # open, 12 tests, finish
TASK_NAME = "b5_cert"
FINISHED_SQL = {
    "procrastinate": "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
    "celery": "SELECT count(*) FROM queue_writes WHERE seq = 13",  # its finish write
}

_COMMON = textwrap.dedent(
    """
    import asyncio, sys, time
    import sqlalchemy as sa

    def make_writer(app_url):
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
            "queue_writes", metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("task_id", sa.String(64), nullable=False),
            sa.Column("seq", sa.Integer, nullable=False),
            sa.Column("payload", sa.String(200), nullable=False),
        )
        metadata.create_all(engine)

        def write(task_id, seq):
            with engine.begin() as connection:
                connection.execute(
                    writes.insert().values(task_id=task_id, seq=seq, payload="x" * 64)
                )

        return write
    """
)

PROCRASTINATE_WORKER = _COMMON + textwrap.dedent(
    """
    import procrastinate
    conninfo, app_url, queue, poll, concurrency = sys.argv[1:6]
    write = make_writer(app_url)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=conninfo, min_size=2, max_size=10)
    )

    @app.task(name="b5_cert", queue=queue)
    async def b5_cert(index):
        task_id = str(index)
        for seq in range(14):  # open, 12 tests, finish
            if seq:
                await asyncio.sleep(0)  # a zero-latency provider call
            await asyncio.to_thread(write, task_id, seq)

    async def main():
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            print("ready", flush=True)
            await app.run_worker_async(
                queues=[queue], concurrency=int(concurrency),
                fetch_job_polling_interval=float(poll), listen_notify=True,
            )

    asyncio.run(main())
    """
)

CELERY_WORKER = _COMMON + textwrap.dedent(
    """
    from celery import Celery
    from celery.signals import worker_ready
    broker, app_url, queue, concurrency = sys.argv[1:5]
    write = make_writer(app_url)
    app = Celery("b5", broker=broker)
    app.conf.update(
        task_ignore_result=True, task_default_queue=queue, worker_redirect_stdouts=False,
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
    )

    @app.task(name="b5_cert")
    def b5_cert(index):
        task_id = str(index)
        for seq in range(14):  # open, 12 tests, finish
            if seq:
                time.sleep(0)  # a zero-latency provider call (releases the GIL)
            write(task_id, seq)

    @worker_ready.connect
    def _ready(**_kwargs):
        sys.__stdout__.write("ready\\n")
        sys.__stdout__.flush()

    app.worker_main([
        "worker", "--pool=threads", f"--concurrency={concurrency}", "--loglevel=WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", queue,
    ])
    """
)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its live descendants so far (Linux /proc)."""
    total, stack = 0.0, [pid]
    ticks = os.sysconf("SC_CLK_TCK")
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _defer_procrastinate(conninfo: str, queue: str, count: int) -> None:
    import procrastinate

    async def defer() -> None:
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
        async with app.open_async():
            deferrer = app.configure_task(TASK_NAME, queue=queue)
            await deferrer.batch_defer_async(*({"index": i} for i in range(count)))

    asyncio.run(defer())


def measure_queue(
    kind: str, db_kind: str, count: int, idle_s: float, concurrency: int, poll_s: float
) -> dict[str, Any]:
    """One round of the `kind` queue baseline (procrastinate | celery): a fresh database,
    a fresh worker process, its idle rate, then `count` tasks drained."""
    if kind == "procrastinate" and db_kind != "postgres":
        raise SystemExit("the procrastinate baseline needs --db postgres")
    queue = f"b5_{uuid.uuid4().hex[:10]}"
    celery_app: Any = None
    with (
        tempfile.TemporaryDirectory(prefix=f"b5-{kind}-") as workdir,
        harness.bench_database(db_kind, Path(workdir)) as url,
    ):
        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        if kind == "procrastinate":
            argv = [PROCRASTINATE_WORKER, conninfo, url, queue, f"{poll_s:g}", str(concurrency)]
        else:
            argv = [CELERY_WORKER, REDIS_URL, url, queue, str(concurrency)]
        log_path = Path(workdir) / "worker.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", *argv], stdout=subprocess.PIPE, stderr=log, text=True
            )
        engine = create_engine(url)
        try:
            assert process.stdout is not None
            for line in process.stdout:  # Celery prints its banner first
                if line.strip() == "ready":
                    break
            else:
                raise SystemExit(f"{kind} worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(2.0)  # start-up done
            idle_from, idle_t0 = tree_cpu_seconds(process.pid), time.monotonic()
            time.sleep(idle_s)
            busy_from, busy_t0 = tree_cpu_seconds(process.pid), time.monotonic()
            idle_rate = (busy_from - idle_from) / (busy_t0 - idle_t0)
            if kind == "procrastinate":
                _defer_procrastinate(conninfo, queue, count)
            else:
                from celery import Celery

                celery_app = Celery("b5", broker=REDIS_URL)
                with celery_app.producer_or_acquire() as producer:
                    for index in range(count):
                        celery_app.send_task(
                            TASK_NAME, args=[index], queue=queue, producer=producer
                        )
            enqueue_s = time.monotonic() - busy_t0
            written = finished = 0
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise SystemExit(f"{kind} worker died:\n{log_path.read_text()[-3000:]}")
                with engine.connect() as connection:
                    written = connection.execute(
                        text("SELECT count(*) FROM queue_writes")
                    ).scalar_one()
                    finished = connection.execute(text(FINISHED_SQL[kind])).scalar_one()
                if written >= WRITES_PER_TASK * count and finished >= count:
                    break
                time.sleep(0.05)
            busy_s = tree_cpu_seconds(process.pid) - busy_from
            span = time.monotonic() - busy_t0
            return {
                "all_done": finished >= count and written >= WRITES_PER_TASK * count,
                "finished": finished,
                "writes": written,
                "enqueue_s": r(enqueue_s, 3),
                "drain_s": r(span, 2),
                "idle_cpu_pct": r(idle_rate * 100, 2),
                "cpu_ms_per_cert": r((busy_s - idle_rate * span) / max(finished, 1) * 1000, 1),
            }
        finally:
            process.kill()
            process.wait()
            engine.dispose()
            if celery_app is not None:
                _drop_celery_queue(celery_app, queue)


def _drop_celery_queue(celery_app: Any, queue: str) -> None:
    """Remove the round's Redis keys (its queue list and kombu's binding sets)."""
    with celery_app.connection_for_write() as connection:
        client = connection.channel().client
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    celery_app.close()
