"""Chaos: real worker processes on a private PostgreSQL cluster, 144 certifications, and
faults chosen and timed by a seeded RNG (`MODELCERT_CHAOS_SEED`):

- kill -9 of a worker, restarted under the same executor id (it resumes its own work);
- kill -9 of a worker, replaced by one under a new id (the reaper hands its work on);
- SIGTERM of a worker (MODELCERT_SHUTDOWN_GRACE_S a few seconds), restarted under its id;
- `pg_ctl restart -m fast` of the database (every connection cut);
- the database down for longer than MODELCERT_WORKER_DEAD_AFTER_S.

Each fault hits while a job of its own (8 deployments × 3 regions) is mid-way; a first job
runs without faults (the battery's calls, counted, are the baseline). Then, from the
database and from the simulator's call log (MODELCERT_SIM_CALL_LOG: every provider call
of every process, with its monotonic start and end), the test counts and asserts:

- lost: a requested (job, deployment, region) without a finished run — 0;
- concurrent executions: a certification whose calls overlap in time in two processes
  (one workflow executed twice at once) — 0;
- orphans: runs left RUNNING — 0;
- wrong verdicts: finished runs of these healthy deployments that are not CERTIFIED
  (ERROR included) — 0;
- jobs not COMPLETED — 0;
- tests paid twice (a test of the battery run by more than one execution of one
  certification, matched against the baseline's calls) — at most the certifications in
  flight in the processes killed or terminated, at those moments; and none but the test in
  flight in each of them (the test in flight at a kill may run again; completed ones,
  and those of certifications no kill interrupted, must not).

It prints the counts, with each fault's recovery time (from the fault until every
certification in flight at it has finished, and until the first certification finishes
after it), and writes them to `chaos-report.json` in the test's temporary directory (the
path is printed; `MODELCERT_CHAOS_REPORT=<file>` copies it there). The workers log to the
same directory.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import JobKind
from modelcert.jobs.enqueue import Enqueuer
from modelcert.providers.sim import CALL_LOG_ENV
from modelcert.store import db, repo
from modelcert.store.db import transaction
from tests.support.chaos_analysis import (
    Pair,
    ProcessLife,
    analyse,
    job_status,
    read_calls,
    running_with_tests,
    tolerant,
)
from tests.support.inprocess import fast_settings
from tests.support.pg_cluster import PgCluster
from tests.support.workers import StartProcesses, WorkerProcess, worker_processes

pytestmark = [pytest.mark.chaos, pytest.mark.xdist_group("chaos"), pytest.mark.timeout(600)]

SEED = int(os.environ.get("MODELCERT_CHAOS_SEED", "20261202"))
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
PROVIDER = "chaos"
DEPLOYMENTS_PER_JOB = 8
FAULTS = ("kill9_same_id", "kill9_new_id", "sigterm", "db_restart_fast", "db_outage")
KILLS = ("kill9_same_id", "kill9_new_id", "sigterm")
JOBS = 1 + len(FAULTS)  # the baseline, then one per fault
INITIAL_WORKERS = ("w-1", "w-2", "w-3")
DEAD_AFTER_S = 7.0  # heartbeats are written every 2 s
GRACE_S = 3.0
OUTAGE_S = DEAD_AFTER_S + 4
CONCURRENCY = 6  # certifications in flight per worker
LATENCY_MS = [100, 300]
WORKER_ENV = {
    "MODELCERT_WORKER_DEAD_AFTER_S": str(DEAD_AFTER_S),
    "MODELCERT_SHUTDOWN_GRACE_S": str(GRACE_S),
    "MODELCERT_RECERTIFY_SCHEDULE": "off",
    "CERTIFICATION_CONCURRENCY": str(CONCURRENCY),
}
QUEUE_POLL_S = 0.2
POLL_S = 0.2  # how often the test looks at the database
MID_RUN_BOUND_S = 20.0  # waiting for a job to be mid-way before its fault
JOB_BOUND_S = 45.0  # waiting for a fault's job to complete before the next fault
FINAL_BOUND_S = 60.0  # waiting for every job at the end


def deployment_label(index: int) -> str:
    return f"{PROVIDER}/m{index:02d}"


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the workers -------------------------------------------------------------------------


@dataclass
class Fleet:
    """The worker processes: started, killed, replaced. A supervisor restarts one that
    exited on its own under the same id (as a StatefulSet would), after a pause that
    doubles while it keeps exiting (2, 4, 8 s), and counts it."""

    start: StartProcesses
    live: dict[str, WorkerProcess] = field(default_factory=dict)
    lives: dict[int, ProcessLife] = field(default_factory=dict)
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = len(INITIAL_WORKERS) + 1
    restarts: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (due, pause)

    def spawn(self, *executor_ids: str, wait: bool = True) -> list[WorkerProcess]:
        batch = self.start(*executor_ids, wait=False, **WORKER_ENV)
        for worker in batch:
            self.live[worker.executor_id] = worker
            self.lives[worker.pid] = ProcessLife(worker.executor_id, time.monotonic())
        if wait:
            for worker in batch:
                try:
                    worker.wait_ready()
                except Exception as exc:  # exited or not ready: the supervisor sees it
                    log(f"{worker.executor_id} not ready: {type(exc).__name__}")
        return batch

    def new_id(self) -> str:
        executor_id = f"w-{self.next_id}"
        self.next_id += 1
        return executor_id

    def ended(self, worker: WorkerProcess) -> None:
        self.lives[worker.pid].ended = time.monotonic()
        self.live.pop(worker.executor_id, None)

    def supervise(self) -> None:
        now = time.monotonic()
        for executor_id, worker in list(self.live.items()):
            if worker.running():
                continue
            code = worker.process.returncode if worker.process else None
            log(f"{executor_id} (pid {worker.pid}) exited on its own, code {code}")
            self.unexpected_exits.append(
                {"executor_id": executor_id, "pid": worker.pid, "code": code, "wall": time.time()}
            )
            self.ended(worker)
            _, pause = self.restarts.get(executor_id, (0.0, 1.0))
            pause = min(pause * 2, 8.0)
            self.restarts[executor_id] = (now + pause, pause)
        for executor_id, (due, pause) in list(self.restarts.items()):
            if executor_id not in self.live and due <= now:
                log(f"{executor_id} restarted")
                self.spawn(executor_id, wait=False)
                self.restarts[executor_id] = (float("inf"), pause)


# -- the database ------------------------------------------------------------------------


def make_catalog(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        repo.add_provider(
            session,
            slug=PROVIDER,
            kind="sim",
            regions=list(REGIONS),
            config={"retry_base_ms": 10, "seed": SEED},
        )
        for index in range(DEPLOYMENTS_PER_JOB * JOBS):
            repo.add_deployment(
                session,
                provider_slug=PROVIDER,
                provider_model_id=f"m{index:02d}",
                options={"profile": "healthy-fast", "latency_ms": LATENCY_MS},
            )


def mid_run(
    factory: sessionmaker[Session], job_id: str, executor_id: str | None, wanted: int
) -> Callable[[], bool]:
    """`wanted` runs of the job are mid-way (on `executor_id`), or the job is over (the
    fault then finds nothing of it in flight: the report says so)."""
    return lambda: (
        running_with_tests(factory, job_id, executor_id) >= wanted
        or job_status(factory, job_id) == "COMPLETED"
    )


def wait_until(
    predicate: Callable[[], bool], bound_s: float, fleet: Fleet, what: str
) -> float | None:
    """Seconds it took, or None if `bound_s` passed first (the test goes on: the counts
    at the end say what went wrong)."""
    began = time.monotonic()
    while time.monotonic() - began < bound_s:
        fleet.supervise()
        if tolerant(predicate, False):
            return time.monotonic() - began
        time.sleep(POLL_S)
    log(f"not reached within {bound_s:.0f} s: {what}")
    return None


# -- the faults --------------------------------------------------------------------------


def inject(
    kind: str, rng: random.Random, fleet: Fleet, cluster: PgCluster, victim: str | None
) -> dict[str, Any]:
    fault: dict[str, Any] = {"kind": kind, "wall": time.time(), "t": time.monotonic()}
    if victim is not None:
        worker = fleet.live[victim]
        fault.update(victim=victim, victim_pid=worker.pid)
    if kind in ("kill9_same_id", "kill9_new_id"):
        assert victim is not None
        worker.kill()
        fleet.ended(worker)
        if kind == "kill9_same_id":
            pause = rng.uniform(0.5, 2.0)
            time.sleep(pause)
            fault["restarted_after_s"] = round(pause, 2)
            fault["replacement"] = victim
        else:
            fault["replacement"] = fleet.new_id()
        [replacement] = fleet.spawn(fault["replacement"])
        fault["replacement_pid"] = replacement.pid
    elif kind == "sigterm":
        assert victim is not None
        try:
            code: int | str = worker.terminate(timeout=GRACE_S + 30)
        except subprocess.TimeoutExpired:
            code = f"still running {GRACE_S + 30:.0f} s after SIGTERM: killed"
            worker.kill()
        fleet.ended(worker)
        fault.update(exit_code=code, drained_in_s=round(time.monotonic() - fault["t"], 2))
        fault["replacement"] = victim
        [replacement] = fleet.spawn(victim)
        fault["replacement_pid"] = replacement.pid
    elif kind == "db_restart_fast":
        cluster.restart_fast()
    elif kind == "db_outage":
        cluster.stop_for(OUTAGE_S)
        fault["down_s"] = OUTAGE_S
    else:
        raise AssertionError(kind)
    fault["injected_in_s"] = round(time.monotonic() - fault["t"], 2)
    return fault


# -- the test ----------------------------------------------------------------------------


@pytest.fixture
def chaos_database(pg_cluster: PgCluster) -> Iterator[str]:
    url = pg_cluster.create_database(f"chaos_{os.getpid()}_{int(time.time())}")
    yield url


def test_workers_survive_kills_restarts_and_outages(
    pg_cluster: PgCluster, chaos_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    rng = random.Random(SEED)
    call_dir = tmp_path / "sim-calls"
    monkeypatch.setenv(CALL_LOG_ENV, str(call_dir))  # the worker processes inherit it
    engine = db.make_engine(chaos_database)
    db.upgrade(engine)
    factory = db.make_session_factory(engine)
    make_catalog(factory)
    settings = fast_settings(chaos_database, queue_polling_interval_s=QUEUE_POLL_S)
    enqueuer = Enqueuer(engine, settings)
    with transaction(factory) as session:
        model_to_deployment = {d.provider_model_id: d.id for d in repo.list_deployments(session)}
    order = rng.sample(FAULTS, len(FAULTS))
    log(f"seed {SEED}: faults in the order {order}; database {chaos_database}")
    requested: list[Pair] = []
    job_ids: list[str] = []
    faults: list[dict[str, Any]] = []

    def done(job_id: str) -> Callable[[], bool]:
        return lambda: job_status(factory, job_id) == "COMPLETED"

    def enqueue(block: int) -> str:
        indices = range(block * DEPLOYMENTS_PER_JOB, (block + 1) * DEPLOYMENTS_PER_JOB)
        targets = [(deployment_label(i), region) for i in indices for region in REGIONS]
        result = enqueuer.enqueue(factory, targets, kind=JobKind.MULTIPLE)
        assert result.job_id and not result.refused, result
        requested.extend((result.job_id, q.deployment_id, q.region) for q in result.queued)
        job_ids.append(result.job_id)
        return result.job_id

    try:
        with worker_processes(settings, tmp_path, REGIONS) as start:
            fleet = Fleet(start)
            fleet.spawn(*INITIAL_WORKERS)
            log(f"workers ready after {time.monotonic() - began:.1f} s")
            baseline = enqueue(0)
            took = wait_until(done(baseline), JOB_BOUND_S, fleet, "the baseline job")
            log(f"baseline job: {took and round(took, 1)} s")
            for block, kind in enumerate(order, start=1):
                job_id = enqueue(block)
                victim = rng.choice(sorted(fleet.live)) if kind in KILLS else None
                wanted = rng.randint(1, 3)
                wait_until(
                    mid_run(factory, job_id, victim, wanted),
                    MID_RUN_BOUND_S,
                    fleet,
                    f"{wanted} runs of job {block} mid-way (on {victim or 'any worker'})",
                )
                time.sleep(rng.uniform(0.0, 0.5))
                fault = inject(kind, rng, fleet, pg_cluster, victim)
                fault["job"] = job_id
                faults.append(fault)
                log(f"fault {block}: {fault}")
                took = wait_until(done(job_id), JOB_BOUND_S, fleet, f"job {block} ({kind})")
                log(f"job {block} ({kind}) completed {took and round(took, 1)} s after its fault")
            wait_until(
                lambda: all(job_status(factory, j) == "COMPLETED" for j in job_ids),
                FINAL_BOUND_S,
                fleet,
                "every job",
            )
            time.sleep(1.0)  # the last end lines of the call log
            report = {
                "seed": SEED,
                "regions": list(REGIONS),
                **analyse(
                    engine,
                    requested,
                    job_ids,
                    read_calls(call_dir),
                    model_to_deployment,
                    fleet.lives,
                    faults,
                    baseline,
                    interrupting=KILLS,
                ),
                "unexpected_worker_exits": fleet.unexpected_exits,
            }
    finally:
        enqueuer.close()
        engine.dispose()

    report["duration_s"] = round(time.monotonic() - began, 1)
    path = tmp_path / "chaos-report.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    if os.environ.get("MODELCERT_CHAOS_REPORT"):  # a copy that outlives pytest's tmp dirs
        Path(os.environ["MODELCERT_CHAOS_REPORT"]).write_text(path.read_text())
    print(json.dumps(report, indent=2, default=str))
    print(f"chaos report: {path}")

    failures = []
    if report["requested"] != DEPLOYMENTS_PER_JOB * len(REGIONS) * JOBS:
        failures.append(f"requested {report['requested']} certifications")
    if report["lost"]:
        failures.append(f"{report['lost']} certifications lost (no finished run)")
    if report["concurrent_executions"]:
        failures.append(
            f"{report['concurrent_executions']} certifications executed in two processes at once"
        )
    if report["orphans"]:
        failures.append(f"{report['orphans']} runs left RUNNING")
    if report["wrong_verdicts"]:
        failures.append(
            f"{report['wrong_verdicts']} non-CERTIFIED verdicts on healthy deployments "
            f"{report['wrong_verdicts_by_status']}"
        )
    if report["jobs_not_completed"]:
        failures.append(
            f"{report['jobs_not_completed']} jobs not COMPLETED "
            f"{report['jobs_not_completed_status']}"
        )
    if report["tests_paid_twice"] > report["in_flight_at_kills"]:
        failures.append(
            f"{report['tests_paid_twice']} tests paid twice, more than the "
            f"{report['in_flight_at_kills']} certifications in flight at the kills"
        )
    if report["tests_paid_twice_beyond_the_kills"]:
        failures.append(
            f"{report['tests_paid_twice_beyond_the_kills']} tests paid twice beyond the one "
            "in flight at a kill, in certifications it interrupted: "
            f"{report['examples']['paid_twice_beyond_the_kills']} (job, deployment, region, "
            f"tests); per fault {[(f['kind'], f['in_flight']) for f in report['faults']]}"
        )
    assert not failures, f"{'; '.join(failures)} (seed {SEED}; report {path})"
