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

Run:
    python bench/b5_cost.py --db sqlite --baseline-src /tmp/mc-base/src --count 200 --rounds 3
    python bench/b5_cost.py --db postgres --baseline-src /tmp/mc-base/src --count 200 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import harness
from harness import SIX_REGIONS, Limits, bench_run, r


def measure(db_kind: str, count: int, idle_s: float, src: str | None) -> dict[str, Any]:
    regions = SIX_REGIONS[:2]
    limits = Limits(certification_concurrency=200, region_concurrency=200, region_start_rate=1000)
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
    parser.add_argument("--baseline-src", required=True)
    args = parser.parse_args(argv)
    base: list[float] = []
    ours: list[float] = []
    for _ in range(args.rounds):
        a = measure(args.db, args.count, args.idle, args.baseline_src)
        b = measure(args.db, args.count, args.idle, None)
        print("ROUND", json.dumps({"baseline": a, "this": b}), flush=True)
        base.append(a["cpu_ms_per_cert"])
        ours.append(b["cpu_ms_per_cert"])
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    print(
        "MEDIAN",
        json.dumps(
            {
                "db": args.db,
                "count": args.count,
                "baseline_cpu_ms_per_cert": r(statistics.median(base), 1),
                "this_cpu_ms_per_cert": r(statistics.median(ours), 1),
                "ratio_this_to_baseline": r(statistics.median(ratios), 3),
            }
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
