"""B1 — queue overhead: how many certifications per second the durable queue and its
workers get through when the provider costs nothing.

What it measures: one job of --count certifications of a zero-latency sim model
(`healthy-fast`, `latency_ms: 0`; every capability, so all 12 tests and 13 calls run)
over --regions regions, drained by --workers workers whose limits (concurrency 200 per
worker, start rate 1000/s) are far above what they achieve. Reported: the enqueue time,
certifications/s (finished ÷ (last completion − enqueue commit)), enqueue → start and
claim percentiles, one certification's duration, the latency the runner recorded for the
0 ms model (event-loop stall), each worker's CPU and peak RSS, the machine's CPU and, on
PostgreSQL, sessions and commits.

Baseline: the ideal is ≈ 2 s per certification (the availability test's 2 s gap), so
the limits would allow 100 certifications/s per worker; the figure to compare with is
cert_per_s recorded in docs/benchmarks.md for the same database and worker count (the
measurement has no in-run baseline: the worker's CPU is the limit).

Run:
    python bench/b1_throughput.py --db sqlite --workers 1 --count 2000 --timeout 1500
    python bench/b1_throughput.py --db postgres --workers 2 --count 2000 --timeout 1500
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import harness
from harness import SIX_REGIONS, Limits, bench_run, pct, r

KEYS = (
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


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run: N certifications of a zero-latency sim model."""
    regions = SIX_REGIONS[: args.regions]
    limits = Limits(
        certification_concurrency=args.concurrency,
        region_concurrency=args.concurrency * args.workers,
        region_start_rate=args.start_rate,
        poll_s=args.poll,
    )
    deployments = harness.deployments_for(args.count, regions)
    with bench_run(args.db, limits, regions, args.keep) as run:
        refs = run.seed(deployments, {"profile": "healthy-fast", "latency_ms": 0})
        run.start_workers(args.workers)
        stats_before = run.db_stats()
        cpu_before = harness.machine_jiffies()
        run.enqueue(run.targets(refs, args.count))
        done = run.wait_done(args.timeout)
        machine_busy = harness.busy_fraction(cpu_before, harness.machine_jiffies())
        run.sample_all()
        stats_after = run.db_stats()
        runs = run.runs()
        finished = harness.finished(runs)
        waits = [x["started"] - x["created"] for x in runs if x["created"] and x["started"]]
        claims = [x["claimed"] - x["created"] for x in runs if x["created"] and x["claimed"]]
        durations = harness.durations(runs)
        span = harness.last_completion(runs) - run.enqueued_at
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
            "statuses": harness.status_counts(runs),
            "test_outcomes": run.test_outcomes(),
            "per_executor": harness.per_executor(runs),
            "resources": harness.worker_resources(run),
            "db_stats": _delta(stats_before, stats_after),
            "machine_cpu_busy": machine_busy,
        }


def _delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {key: after[key] - before[key] for key in after}


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__, db="sqlite", workers=1, count=2000, regions=6, concurrency=200)
    return harness.run_benchmark("b1", measure, KEYS, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
