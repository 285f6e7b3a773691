"""B2 — quota-bound throughput: two workers certifying against a provider quota they
share, which the throttle gates must use fully without failing tests for RATE_LIMIT.

What it measures: --count certifications (100 deployments × 3 regions by default) of a
sim model with uniform 200–800 ms latency, whose quota is --quota requests/s per region,
shared by every process on the host and by all the deployments (`quota_rps`,
`quota_scope: "host"`, `quota_key: "bench-account"`: a token bucket in a file under
`flock`). `quota_key` also keys the workers' throttle gates, so each worker has one gate
per region for all the deployments; the driver reads each worker's /health every 2 s
and reports the gates it saw pacing (`paced_gates`). Limits: CERTIFICATION_CONCURRENCY
--concurrency (60) per worker, MODELCERT_REGION_CONCURRENCY --region-concurrency (20)
per region, so that a worker claims no more than it runs (3 × 20 ≤ 60).

Baseline, computed in the run: bound = provider calls that got through the quota
(Σ attempts − Σ retries) ÷ (quota × regions), the shortest time the quota allows;
ratio = wall ÷ bound, wall = last completion − enqueue commit. Target: ratio ≤ 1.15 and
no test failed for RATE_LIMIT.

Run:
    python bench/b2_quota.py --runs 3        # PostgreSQL, 2 workers, 300 certifications
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import harness
from harness import SIX_REGIONS, Limits, Run, bench_run, pct, r
from sqlalchemy import text

KEYS = ("wall_s", "bound_s", "ratio", "rate_limit_failed", "retries")
HEALTH_EVERY_TICKS = 4  # wait_done ticks every 0.5 s


def rate_limit_failures(run: Run, limit: int = 5) -> list[dict[str, Any]]:
    """The first tests that failed for RATE_LIMIT: which test, its attempts, retries and
    throttled wait, and why (the target is none)."""
    with run.session() as session:
        rows = session.execute(
            text(
                "SELECT t.test_id, t.attempts, t.retries, t.throttled_s, t.duration_ms, "
                "t.detail, t.error_message FROM test_results t "
                "JOIN certification_runs r ON r.id = t.run_id "
                "WHERE r.job_id = :job AND t.error_category = 'RATE_LIMIT' "
                "ORDER BY t.id LIMIT :limit"
            ),
            {"job": run.job_id, "limit": limit},
        ).all()
    return [
        {
            "test": row[0],
            "attempts": row[1],
            "retries": row[2],
            "throttled_s": r(row[3], 1),
            "duration_s": r((row[4] or 0) / 1000, 1),
            "detail": (row[5] or "")[:200],
            "error_message": (row[6] or "")[:200],
        }
        for row in rows
    ]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run: a shared per-region quota, --workers workers."""
    regions = SIX_REGIONS[: args.regions]
    limits = Limits(
        certification_concurrency=args.concurrency,
        region_concurrency=args.region_concurrency,
        region_start_rate=args.start_rate,
        poll_s=args.poll,
    )
    deployments = harness.deployments_for(args.count, regions)
    with bench_run(args.db, limits, regions, args.keep) as run:
        options = {
            "profile": "healthy-fast",
            "latency_ms": [args.latency_low, args.latency_high],
            "quota_rps": args.quota,
            **({"quota_burst": args.burst} if args.burst is not None else {}),
            "quota_scope": "host",
            "quota_key": "bench-account",
            "quota_dir": str(run.workdir / "quota"),
        }
        refs = run.seed(deployments, options)
        run.start_workers(
            args.workers, {"MODELCERT_SHARED_PACING": "1" if args.pacing == "shared" else "0"}
        )
        # executor id -> the quotas its gates paced at some point, and the most at once
        paced: dict[str, set[str]] = {w.executor_id: set() for w in run.workers}
        paced_at_once: dict[str, int] = {w.executor_id: 0 for w in run.workers}
        ticks = 0

        rates: list[list[float | None]] = []  # the shared rate per region, every tick

        def read_gates() -> None:
            nonlocal ticks
            ticks += 1
            if args.pacing == "shared":
                with run.session() as session:
                    shared = dict(
                        session.execute(text("SELECT quota, rate FROM quota_pacing")).all()
                    )
                quotas = [f"bench/{region}/quota:bench-account" for region in regions]
                rates.append([shared.get(quota) for quota in quotas])
            if ticks % HEALTH_EVERY_TICKS:
                return
            for worker in run.workers:
                _, health = worker.get("/health")
                gates = (health or {}).get("throttled", [])
                keys = {f"{g['provider']}/{g['region']}/{g['quota']}" for g in gates}
                paced[worker.executor_id] |= keys
                paced_at_once[worker.executor_id] = max(
                    paced_at_once[worker.executor_id], len(keys)
                )

        cpu_before = harness.machine_jiffies()
        run.enqueue(run.targets(refs, args.count))
        done = run.wait_done(args.timeout, on_tick=read_gates)
        machine_busy = harness.busy_fraction(cpu_before, harness.machine_jiffies())
        run.sample_all()
        runs = run.runs()
        totals = run.test_totals()
        finished = harness.finished(runs)
        wall = harness.last_completion(runs) - run.enqueued_at
        # Calls that got through the quota: attempts minus the refused (retried) ones.
        served = int(totals["attempts"] - totals["retries"])
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
            "quota_burst": args.burst,
            "pacing": args.pacing,
            "latency_ms": [args.latency_low, args.latency_high],
            "limits": limits.describe(),
            "wall_s": r(wall),
            "provider_calls": served,
            "bound_s": r(bound),
            "ratio": r(wall / bound, 3) if bound else None,
            "rate_limit_failed": int(totals["rate_limit_failed"]),
            "rate_limit_failures": rate_limit_failures(run),
            "retries": int(totals["retries"]),
            "tests": int(totals["tests"]),
            "tests_passed": int(totals["passed"]),
            "test_outcomes": run.test_outcomes(),
            "throttled_s_total": totals["throttled_s"],
            "test_duration_mean_ms": totals["test_duration_ms"],
            "latency_mean_ms": totals["latency_ms"],
            "cert_duration_p50_s": r(pct(harness.durations(runs), 50)),
            "machine_cpu_busy": machine_busy,
            "statuses": harness.status_counts(runs),
            "per_executor": harness.per_executor(runs),
            "paced_gates": {key: sorted(value) for key, value in paced.items()},
            # The shared rate of each region's quota (calls/s), every 0.5 s (None: unpaced).
            "shared_rates": [[r(v, 1) if v is not None else None for v in row] for row in rates],
            "paced_gates_at_once_max": paced_at_once,
            "resources": harness.worker_resources(run),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__, db="postgres", workers=2, count=300, regions=3, concurrency=60)
    parser.add_argument("--region-concurrency", type=int, default=20)
    parser.add_argument("--quota", type=float, default=20.0, help="requests/s per region")
    parser.add_argument(
        "--burst", type=float, default=None, help="quota burst (1: none); default one second's"
    )
    parser.add_argument(
        "--pacing",
        choices=("shared", "local"),
        default="shared",
        help="workers pace a quota together through the database (default) or each alone",
    )
    parser.add_argument("--latency-low", type=float, default=200.0, help="ms")
    parser.add_argument("--latency-high", type=float, default=800.0, help="ms")
    return harness.run_benchmark("b2", measure, KEYS, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
