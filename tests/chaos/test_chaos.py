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
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, exists, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import JobKind
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.queues import dbos_table
from modelcert.providers.sim import CALL_LOG_ENV
from modelcert.store import db, repo
from modelcert.store.db import transaction
from modelcert.store.models import CertificationRun, Job, TestResultRow
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
IN_FLIGHT_WINDOW_S = 3.0  # a certification with a call this recent is in flight
FINISHED = ("CERTIFIED", "QUALITY_WARNING", "FAILED", "INCOMPLETE", "ERROR")

T = TypeVar("T")


def deployment_label(index: int) -> str:
    return f"{PROVIDER}/m{index:02d}"


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def tolerant(read: Callable[[], T], default: T) -> T:
    """A read of the database that may be down (an outage is one of the faults)."""
    try:
        return read()
    except SQLAlchemyError:
        return default


def epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


# -- the workers -------------------------------------------------------------------------


@dataclass
class ProcessLife:
    executor_id: str
    started: float  # time.monotonic()
    ended: float | None = None


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


def running_with_tests(
    factory: sessionmaker[Session], job_id: str, executor_id: str | None = None
) -> int:
    """Runs of the job RUNNING with at least one test stored (by `executor_id`, if given)."""
    query = select(func.count(CertificationRun.id)).where(
        CertificationRun.job_id == job_id,
        CertificationRun.status == "RUNNING",
        exists().where(TestResultRow.run_id == CertificationRun.id),
    )
    if executor_id is not None:
        query = query.where(CertificationRun.executor_id == executor_id)
    with factory() as session:
        return int(session.scalar(query) or 0)


def mid_run(
    factory: sessionmaker[Session], job_id: str, executor_id: str | None, wanted: int
) -> Callable[[], bool]:
    """`wanted` runs of the job are mid-way (on `executor_id`), or the job is over (the
    fault then finds nothing of it in flight: the report says so)."""
    return lambda: (
        running_with_tests(factory, job_id, executor_id) >= wanted
        or job_status(factory, job_id) == "COMPLETED"
    )


def job_status(factory: sessionmaker[Session], job_id: str) -> str | None:
    with factory() as session:
        job = session.get(Job, job_id)
        return job.status if job else None


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


# -- the call log ------------------------------------------------------------------------


@dataclass
class Call:
    pid: int
    model: str
    region: str
    digest: str
    start: float
    end: float | None = None
    outcome: str | None = None


def read_calls(directory: Path) -> list[Call]:
    calls: dict[str, Call] = {}
    for path in sorted(directory.glob("sim-calls-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut by kill -9 (one write per line: not seen yet)
                continue
            if record["event"] == "start":
                calls[record["call"]] = Call(
                    record["pid"], record["model"], record["region"], record["digest"], record["t"]
                )
            elif record["call"] in calls:
                calls[record["call"]].end = record["t"]
                calls[record["call"]].outcome = record["outcome"]
    return list(calls.values())


def call_end(call: Call, lives: dict[int, ProcessLife], now: float) -> float:
    """When a call ended: its end line, else (killed mid-call) when its process ended."""
    if call.end is not None:
        return call.end
    life = lives.get(call.pid)
    return life.ended if life is not None and life.ended is not None else now


def baseline_battery(certifications: list[list[Call]]) -> list[tuple[str, int]]:
    """The battery as clean certifications call it: (request digest, calls) per test, in
    order; a test's calls are consecutive equal requests (availability: two)."""
    sequences = Counter(
        tuple(c.digest for c in sorted(calls, key=lambda c: c.start)) for calls in certifications
    )
    assert sequences, "no baseline certification in the call log"
    sequence, _ = sequences.most_common(1)[0]
    battery: list[tuple[str, int]] = []
    for digest in sequence:
        if battery and battery[-1][0] == digest:
            battery[-1] = (digest, battery[-1][1] + 1)
        else:
            battery.append((digest, 1))
    return battery


def executions(calls: list[Call]) -> list[list[Call]]:
    """One certification's calls, by process, in the order each made them."""
    by_pid: dict[int, list[Call]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: c.start):
        by_pid[call.pid].append(call)
    return list(by_pid.values())


def battery_tests_run(battery: list[tuple[str, int]], digests: list[str]) -> tuple[list[int], int]:
    """Which of the battery's tests (by index) one process's calls ran, once per execution:
    the calls are cut into stretches that follow the battery from the start of a test (an
    execution resumes at a test's first call; it may be cut short by a kill, and one
    process may run a certification twice). Returns the tests and how many calls matched
    no test (counted as tests run again)."""
    flat = [(index, digest) for index, (digest, n) in enumerate(battery) for _ in range(n)]
    starts = [i for i, (index, _) in enumerate(flat) if i == 0 or flat[i - 1][0] != index]
    covered: list[int] = []
    unmatched = 0
    position = 0
    while position < len(digests):
        best_start, best_length = None, 0
        for start in starts:
            length = 0
            while (
                start + length < len(flat)
                and position + length < len(digests)
                and flat[start + length][1] == digests[position + length]
            ):
                length += 1
            if length > best_length:
                best_start, best_length = start, length
        if best_start is None:
            unmatched += 1
            position += 1
            continue
        covered.extend(sorted({flat[i][0] for i in range(best_start, best_start + best_length)}))
        position += best_length
    return covered, unmatched


# -- the counts --------------------------------------------------------------------------

Pair = tuple[str, int, str]  # (job id, deployment id, region)


def analyse(
    engine: Engine,
    requested: list[Pair],
    job_ids: list[str],
    calls: list[Call],
    model_to_deployment: dict[str, int],
    fleet: Fleet,
    faults: list[dict[str, Any]],
    baseline_job: str,
) -> dict[str, Any]:
    now = time.monotonic()
    with Session(engine) as session:
        runs = session.scalars(select(CertificationRun).order_by(CertificationRun.id)).all()
        jobs = {job_id: session.get(Job, job_id) for job_id in job_ids}
        table = dbos_table(engine.dialect.name, "workflow_status")
        workflow_status: dict[str, str] = {
            row[0]: row[1]
            for row in session.execute(text(f"SELECT workflow_uuid, status FROM {table}"))
        }
    by_pair: dict[Pair, list[CertificationRun]] = defaultdict(list)
    for run in runs:
        by_pair[(run.job_id or "", run.deployment_id, run.region)].append(run)
    requested_set = set(requested)
    finished_at: dict[Pair, list[float]] = {
        pair: sorted(
            stamp
            for run in by_pair.get(pair, [])
            if run.status in FINISHED and (stamp := epoch(run.completed_at)) is not None
        )
        for pair in requested
    }
    completed = [pair for pair in requested if finished_at[pair]]
    lost = [pair for pair in requested if not finished_at[pair]]
    orphans = [run for run in runs if run.status == "RUNNING"]
    wrong = [
        run
        for pair in requested
        for run in by_pair.get(pair, [])
        if run.status in FINISHED and run.status != "CERTIFIED"
    ]
    unrequested_runs = [
        run for pair, rs in by_pair.items() if pair not in requested_set for run in rs
    ]
    jobs_not_completed = {
        job_id: (job.status if job else None)
        for job_id, job in jobs.items()
        if job is None or job.status != "COMPLETED"
    }

    # Calls, by the certification they were made for (each pair is in one job only).
    pair_of_target = {(dep, region): (job, dep, region) for job, dep, region in requested}
    calls_by_pair: dict[Pair, list[Call]] = defaultdict(list)
    stray_calls = 0
    for call in calls:
        deployment = model_to_deployment.get(call.model)
        pair = pair_of_target.get((deployment, call.region)) if deployment else None
        if pair is None:
            stray_calls += 1
            continue
        calls_by_pair[pair].append(call)

    # Concurrent executions: two calls for one certification overlapping in time.
    concurrent: set[Pair] = set()
    cross_overlaps = same_overlaps = 0
    examples: list[dict[str, Any]] = []
    for pair, pair_calls in calls_by_pair.items():
        spans = sorted((c.start, call_end(c, fleet.lives, now), c.pid) for c in pair_calls)
        for i, (_, end_a, pid_a) in enumerate(spans):
            for start_b, end_b, pid_b in spans[i + 1 :]:
                if start_b >= end_a:
                    break
                if pid_a != pid_b:
                    cross_overlaps += 1
                    concurrent.add(pair)
                    if len(examples) < 5:
                        examples.append(
                            {
                                "pair": list(pair),
                                "pids": [pid_a, pid_b],
                                "overlap_s": round(min(end_a, end_b) - start_b, 3),
                            }
                        )
                else:
                    same_overlaps += 1

    # Tests paid twice: the battery's tests as the baseline job (run before any fault) made
    # their calls; each process's calls for a certification matched against it, to see
    # which tests each execution ran; a test run by more than one execution was paid for
    # more than once (one cut by a kill counts: its calls were paid).
    battery = baseline_battery(
        [calls_by_pair.get(pair, []) for pair in requested if pair[0] == baseline_job]
    )
    expected_calls = sum(n for _, n in battery)
    paid_twice = unmatched_calls = 0
    repeated_pairs: dict[Pair, int] = {}
    for pair, pair_calls in calls_by_pair.items():
        runs_of_test: Counter[int] = Counter()
        repeated = 0
        for segment in executions(pair_calls):
            covered, unmatched = battery_tests_run(battery, [c.digest for c in segment])
            runs_of_test.update(covered)
            unmatched_calls += unmatched
            repeated += unmatched  # calls no clean certification makes: counted as repeats
        repeated += sum(n - 1 for n in runs_of_test.values() if n > 1)
        if repeated:
            repeated_pairs[pair] = repeated
            paid_twice += repeated
    extra_calls = sum(max(0, len(cs) - expected_calls) for cs in calls_by_pair.values())

    def in_flight(at: float, at_wall: float, pid: int | None) -> set[Pair]:
        """Certifications with a call in the last IN_FLIGHT_WINDOW_S (by `pid`) not yet
        finished at that moment."""
        found = set()
        for pair, pair_calls in calls_by_pair.items():
            if any(stamp <= at_wall for stamp in finished_at.get(pair, [])):
                continue
            for call in pair_calls:
                if pid is not None and call.pid != pid:
                    continue
                if call.start <= at and call_end(call, fleet.lives, now) >= at - IN_FLIGHT_WINDOW_S:
                    found.add(pair)
                    break
        return found

    in_flight_at_kills = 0
    kills_in_flight: Counter[Pair] = Counter()  # the kills each certification was in flight at
    recoveries = []
    for fault in faults:
        victim_pid = fault.get("victim_pid")
        affected = in_flight(fault["t"], fault["wall"], victim_pid)
        if fault["kind"] in KILLS:
            in_flight_at_kills += len(affected)
            kills_in_flight.update(affected)
        ends = [
            min((s for s in finished_at.get(pair, []) if s > fault["wall"]), default=None)
            for pair in affected
        ]
        after = [s for stamps in finished_at.values() for s in stamps if s > fault["wall"]]
        recovered = None if None in ends else max((e for e in ends if e), default=fault["wall"])
        repeated = sum(repeated_pairs.get(pair, 0) for pair in affected)
        recoveries.append(
            {
                **{k: v for k, v in fault.items() if k not in ("t",)},
                "in_flight": len(affected),
                "in_flight_still_unfinished": sum(1 for e in ends if e is None),
                "recovered_s": round(recovered - fault["wall"], 2) if recovered else None,
                "first_completion_after_s": (
                    round(min(after) - fault["wall"], 2) if after else None
                ),
                "tests_paid_twice_in_flight": repeated,
                # Everything the fault's job shows (its certifications ran around the fault).
                "job_wrong_verdicts": sum(1 for run in wrong if run.job_id == fault["job"]),
                "job_orphans": sum(1 for run in orphans if run.job_id == fault["job"]),
                "job_tests_paid_twice": sum(
                    n for pair, n in repeated_pairs.items() if pair[0] == fault["job"]
                ),
                "job_concurrent_executions": sum(
                    1 for pair in concurrent if pair[0] == fault["job"]
                ),
            }
        )

    # A kill may repeat the test in flight in each certification it interrupts, no other.
    unexplained = {
        pair: repeated - kills_in_flight[pair]
        for pair, repeated in repeated_pairs.items()
        if repeated > kills_in_flight[pair]
    }
    requested_workflows = {f"{job}:{dep}@{region}" for job, dep, region in requested}
    return {
        "seed": SEED,
        "regions": list(REGIONS),
        "requested": len(requested),
        "completed": len(completed),
        "lost": len(lost),
        "concurrent_executions": len(concurrent),
        "overlapping_calls_across_processes": cross_overlaps,
        "overlapping_calls_in_one_process": same_overlaps,
        "orphans": len(orphans),
        "wrong_verdicts": len(wrong),
        "wrong_verdicts_by_status": dict(Counter(run.status for run in wrong)),
        "jobs": len(job_ids),
        "jobs_not_completed": len(jobs_not_completed),
        "jobs_not_completed_status": jobs_not_completed,
        "tests_paid_twice": paid_twice,
        "extra_calls": extra_calls,
        "calls_not_matching_the_battery": unmatched_calls,
        "in_flight_at_kills": in_flight_at_kills,
        "tests_paid_twice_beyond_the_kills": sum(unexplained.values()),
        "calls": len(calls),
        "calls_cut_by_kill": sum(1 for c in calls if c.end is None),
        "battery": {"tests": len(battery), "calls": expected_calls},
        "stray_calls": stray_calls,
        "runs": len(runs),
        "runs_for_unrequested_pairs": len(unrequested_runs),
        "runs_per_certification": dict(Counter(len(by_pair.get(p, [])) for p in requested)),
        "workflow_status": dict(
            Counter(workflow_status.get(w, "MISSING") for w in requested_workflows)
        ),
        "unexpected_worker_exits": fleet.unexpected_exits,
        "faults": recoveries,
        "examples": {
            "lost": [list(pair) for pair in lost[:5]],
            "concurrent": examples,
            "orphans": [
                {"run": r.id, "job": r.job_id, "deployment": r.deployment_id, "region": r.region}
                for r in orphans[:5]
            ],
            "wrong": [
                {
                    "run": r.id,
                    "status": r.status,
                    "error": (r.error_message or "")[:300],
                    "category": r.error_category,
                }
                for r in wrong[:5]
            ],
            "paid_twice": [[*pair, n] for pair, n in list(repeated_pairs.items())[:10]],
            "paid_twice_beyond_the_kills": [
                [*pair, n] for pair, n in list(unexplained.items())[:10]
            ],
        },
    }


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
            report = analyse(
                engine,
                requested,
                job_ids,
                read_calls(call_dir),
                model_to_deployment,
                fleet,
                faults,
                baseline,
            )
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
            "in flight at a kill, in certifications it interrupted"
        )
    assert not failures, f"{'; '.join(failures)} (seed {SEED}; report {path})"
