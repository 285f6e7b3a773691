"""What a fault test counts, from the database and the simulator's call log: the chaos
test (tests/chaos/test_chaos.py) and the many-machines test (tests/chaos/test_netns.py).

`MODELCERT_SIM_CALL_LOG` (src/modelcert/providers/sim.py) writes every provider call of
every process, with its monotonic start and end (one clock on one machine, whatever
network namespace a process runs in). `analyse` counts, per requested certification, what
was lost, run in two processes at once, left RUNNING, given a wrong verdict, and which
tests of the battery were paid for more than once (matched against the calls clean
certifications make); faults of the `interrupting` kinds (a kill, a cut link) may repeat
the one test in flight in each certification they interrupted, no other.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, exists, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from modelcert.jobs.queues import dbos_table
from modelcert.store.models import CertificationRun, Job, TestResultRow

IN_FLIGHT_WINDOW_S = 3.0  # at a database fault, a certification called this recently is in flight
FINISHED = ("CERTIFIED", "QUALITY_WARNING", "FAILED", "INCOMPLETE", "ERROR")

T = TypeVar("T")


def tolerant(read: Callable[[], T], default: T) -> T:
    """A read of the database that may be down (an outage is one of the faults)."""
    try:
        return read()
    except SQLAlchemyError:
        return default


def epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


@dataclass
class ProcessLife:
    executor_id: str
    started: float  # time.monotonic()
    ended: float | None = None


# -- the database ----------------------------------------------------------------------


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


def job_status(factory: sessionmaker[Session], job_id: str) -> str | None:
    with factory() as session:
        job = session.get(Job, job_id)
        return job.status if job else None


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
    lives: dict[int, ProcessLife],
    faults: list[dict[str, Any]],
    baseline_job: str,
    interrupting: Collection[str],
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
        spans = sorted((c.start, call_end(c, lives, now), c.pid) for c in pair_calls)
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
        """Certifications not yet finished at that moment and in flight in `pid`: the last
        process to call for them before it (however long ago: under load a certification
        can go seconds between calls, waiting on its writes). Without a pid (a database
        fault): those with a call in the last IN_FLIGHT_WINDOW_S in any process."""
        found = set()
        for pair, pair_calls in calls_by_pair.items():
            if any(stamp <= at_wall for stamp in finished_at.get(pair, [])):
                continue
            before = [call for call in pair_calls if call.start <= at]
            if not before:
                continue
            if pid is not None:
                if max(before, key=lambda call: call.start).pid == pid:
                    found.add(pair)
            elif any(call_end(call, lives, now) >= at - IN_FLIGHT_WINDOW_S for call in before):
                found.add(pair)
        return found

    in_flight_at_kills = 0
    kills_in_flight: Counter[Pair] = Counter()  # the kills each certification was in flight at
    recoveries = []
    for fault in faults:
        victim_pid = fault.get("victim_pid")
        affected = in_flight(fault["t"], fault["wall"], victim_pid)
        if fault["kind"] in interrupting:
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
