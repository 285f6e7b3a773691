"""B4 — recovery after kill -9: one of two workers dies mid-way, and the survivor's
reaper hands its work on.

What it measures: --count deployments × 1 region of a sim model with a fixed --latency
(200 ms) per call, CERTIFICATION_CONCURRENCY --concurrency (10) per worker and
MODELCERT_WORKER_DEAD_AFTER_S --dead-after (10 s). --kill-after (8 s) after the enqueue
the driver reads the victim's /health (its in-flight certifications and the test each
is in) and SIGKILLs it; it never comes back. Reported: when the survivor's reaper found
it dead (its "stalled" log line), when the victim's requeued work was claimed and done,
when the whole job was done, the tests executed twice (in flight at the kill, and
stored but not checkpointed), test rows against checkpointed `test` steps (no test lost
or stored twice) and orphan RUNNING runs.

Baseline: detection can come no sooner than --dead-after after the last heartbeat, so
`detected_after_kill_s` is to be read against it; the rest are compared with the
figures in docs/benchmarks.md (there is no in-run baseline: without a kill the job
would be a different measurement).

Run:
    python bench/b4_recovery.py --runs 3     # PostgreSQL, 2 workers, 100 certifications
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import harness
from harness import SIX_REGIONS, Limits, Run, bench_run, r
from sqlalchemy import text

from modelcert.jobs.queues import dbos_table

KEYS = ("detected_after_kill_s", "done_after_kill_s", "total_s", "tests_reexecuted")


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


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run: kill -9 one of two workers mid-way; the survivor's reaper takes over."""
    regions = SIX_REGIONS[: args.regions]
    limits = Limits(
        certification_concurrency=args.concurrency,
        region_concurrency=args.concurrency * 2,
        region_start_rate=args.start_rate,
        poll_s=args.poll,
        dead_after_s=args.dead_after,
    )
    deployments = harness.deployments_for(args.count, regions)
    with bench_run(args.db, limits, regions, args.keep) as run:
        refs = run.seed(deployments, {"profile": "healthy-fast", "latency_ms": args.latency})
        run.start_workers(2)
        victim, survivor = run.workers
        run.enqueue(run.targets(refs, args.count))
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
        run.sample(survivor)
        after = _test_rows(run)
        runs = run.runs()
        finished = harness.finished(runs)
        last = harness.last_completion(runs)
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
            harness.epoch(datetime.fromisoformat(stalled[0]["timestamp"].replace("Z", "+00:00")))
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
            "statuses": harness.status_counts(runs),
            "test_outcomes": run.test_outcomes(),
            "per_executor": harness.per_executor(runs),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__, db="postgres", workers=2, count=100, regions=1, concurrency=10)
    parser.add_argument("--latency", type=float, default=200.0, help="ms per call")
    parser.add_argument("--dead-after", type=float, default=10.0, help="s")
    parser.add_argument("--kill-after", type=float, default=8.0, help="s after the enqueue")
    return harness.run_benchmark("b4", measure, KEYS, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
