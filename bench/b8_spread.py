"""B8 — scale-out: how a batch spreads over two workers, and what a kill -9 strands.

The set-up issue 11 measured (PostgreSQL by default): CERTIFICATION_CONCURRENCY 10,
MODELCERT_REGION_CONCURRENCY 20, 3 regions, a sim model with --latency-ms (1000) per
call, 2 workers started together before the enqueue.

- spread: --counts (30 and 60) certifications; reported: how many each worker ran, the
  deviation of the larger share from an even split, and wall ÷ ideal, where ideal =
  ⌈count ÷ (2 × concurrency)⌉ rounds × the median certification's duration in the same
  run (the baseline computed in the run: what two workers could do at best).
- kill: --kill-count (30) certifications with MODELCERT_WORKER_DEAD_AFTER_S --dead-after
  (10 s); --kill-after (5 s) after the enqueue one worker is SIGKILLed. Reported: what
  it held at the kill (PENDING under its executor id: "stranded") against what it was
  running (its /health in-flight count just before), and when the batch was done after
  the kill, against dead-after + one certification (the target).

Run:
    python bench/b8_spread.py --runs 2
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import Counter
from typing import Any

import harness
from harness import Limits, bench_run, r
from sqlalchemy import text

from modelcert.jobs.queues import dbos_table

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")


def limits(args: argparse.Namespace, dead_after_s: float = 60.0) -> Limits:
    return Limits(
        certification_concurrency=args.concurrency,
        region_concurrency=args.region_concurrency,
        region_start_rate=args.start_rate,
        poll_s=0.5,
        dead_after_s=dead_after_s,
    )


def seed_and_start(run: harness.Run, args: argparse.Namespace, count: int) -> list[Any]:
    deployments = math.ceil(count / len(REGIONS))
    refs = run.seed(deployments, {"profile": "healthy-fast", "latency_ms": args.latency_ms})
    run.start_workers(2)
    return run.targets(refs, count)


def durations(runs: list[dict[str, Any]]) -> list[float]:
    return [x["completed"] - x["started"] for x in runs if x["completed"] and x["started"]]


def spread(args: argparse.Namespace, count: int) -> dict[str, Any]:
    with bench_run(args.db, limits(args), REGIONS, keep=False) as run:
        targets = seed_and_start(run, args, count)
        run.enqueue(targets)
        if not run.wait_done(600):
            raise RuntimeError("the batch did not finish in 600 s")
        runs = run.runs()
        wall = max(x["completed"] for x in runs) - run.enqueued_at
        one = statistics.median(durations(runs))
        ideal = math.ceil(count / (2 * args.concurrency)) * one
        split = Counter(x["executor"] for x in runs)
        larger = max(split.values())
        return {
            "count": count,
            "split": dict(sorted(split.items())),
            "off_even_pct": r(100 * (larger - count / 2) / (count / 2), 1),
            "wall_s": r(wall, 1),
            "ideal_s": r(ideal, 1),
            "ratio": r(wall / ideal, 2),
        }


def held(run: harness.Run, executor: str) -> int:
    assert run.engine is not None
    table = dbos_table(run.engine.dialect.name, "workflow_status")
    with run.session() as session:
        value = session.execute(
            text(f"SELECT COUNT(*) FROM {table} WHERE status = 'PENDING' AND executor_id = :e"),
            {"e": executor},
        ).scalar_one()
    return int(value)


def kill(args: argparse.Namespace) -> dict[str, Any]:
    with bench_run(args.db, limits(args, args.dead_after), REGIONS, keep=False) as run:
        targets = seed_and_start(run, args, args.kill_count)
        run.enqueue(targets)
        time.sleep(args.kill_after)
        victim = run.workers[0]
        _, health = victim.get("/health")
        in_flight = int(health.get("in_flight_count", -1))
        stranded = held(run, victim.executor_id)
        victim.kill()
        killed_at = time.time()
        if not run.wait_done(600):
            raise RuntimeError("the batch did not finish in 600 s after the kill")
        runs = run.runs()
        done_after = max(x["completed"] for x in runs if x["completed"]) - killed_at
        one = statistics.median(durations(runs))
        target = args.dead_after + one
        return {
            "in_flight_at_kill": in_flight,
            "stranded": stranded,
            "done_after_kill_s": r(done_after, 1),
            "target_s": r(target, 1),
            "ratio_to_target": r(done_after / target, 2),
            "statuses": harness.status_counts(runs),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--counts", type=int, nargs="+", default=[30, 60])
    parser.add_argument("--kill-count", type=int, default=30)
    parser.add_argument("--latency-ms", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--region-concurrency", type=int, default=20)
    parser.add_argument("--start-rate", type=float, default=5.0)
    parser.add_argument("--dead-after", type=float, default=10.0)
    parser.add_argument("--kill-after", type=float, default=5.0)
    parser.add_argument("--skip-kill", action="store_true")
    args = parser.parse_args()
    for _ in range(args.runs):
        result: dict[str, Any] = {f"spread_{c}": spread(args, c) for c in args.counts}
        if not args.skip_kill:
            result["kill"] = kill(args)
        print("RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
