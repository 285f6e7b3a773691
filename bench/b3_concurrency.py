"""B3 — 500 concurrent certifications in one worker: wall time against running them all
at once, and the worker's memory.

What it measures: --count deployments × --regions region(s) of a sim model with a fixed
--latency (2,000 ms) per call, all let in at once (CERTIFICATION_CONCURRENCY and
MODELCERT_REGION_CONCURRENCY = --count, start rate ≥ --count/s), drained by one worker.
Reported: wall (last completion − enqueue commit), when the last certification started,
one certification's duration, the worker's resident memory idle (before the enqueue) and
sampled every 0.5 s (VmRSS), its peak RSS (VmHWM, read just before it is stopped), its CPU
and the machine's.

Baseline, computed in the run: ideal = one certification if all ran at once = 13 calls ×
--latency + the availability test's 2 s gap (28 s by default); ratio = wall ÷ ideal.
Target: peak RSS ≤ 300 MB (the wall time has none).

Run:
    python bench/b3_concurrency.py           # PostgreSQL, 1 worker, 500 certifications
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
from harness import (
    AVAILABILITY_GAP_S,
    CALLS_PER_CERTIFICATION,
    SIX_REGIONS,
    Limits,
    bench_run,
    pct,
    r,
)

KEYS = ("wall_s", "ideal_s", "ratio", "last_start_s", "peak_rss_mb", "worker_cpu_s")


def current_rss_kb(pid: int) -> int:
    """The process's resident memory now (VmRSS), in kB: WorkerProcess reads the peak
    (VmHWM) only; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run: one worker, N concurrent certifications of a slow sim model."""
    regions = SIX_REGIONS[: args.regions]
    limits = Limits(
        certification_concurrency=args.count,
        region_concurrency=args.count,
        region_start_rate=max(args.start_rate, float(args.count)),
        poll_s=args.poll,
    )
    deployments = harness.deployments_for(args.count, regions)
    with bench_run(args.db, limits, regions, args.keep) as run:
        refs = run.seed(deployments, {"profile": "healthy-fast", "latency_ms": args.latency})
        run.start_workers(1)
        worker = run.workers[0]
        baseline_rss = current_rss_kb(worker.pid)
        samples: list[int] = []

        def sample_rss() -> None:
            samples.append(current_rss_kb(worker.pid))

        cpu_before = harness.machine_jiffies()
        run.enqueue(run.targets(refs, args.count))
        done = run.wait_done(args.timeout, on_tick=sample_rss)
        machine_busy = harness.busy_fraction(cpu_before, harness.machine_jiffies())
        run.sample(worker)
        runs = run.runs()
        finished = harness.finished(runs)
        wall = harness.last_completion(runs) - run.enqueued_at
        ideal = (CALLS_PER_CERTIFICATION * args.latency + AVAILABILITY_GAP_S * 1000) / 1000
        durations = harness.durations(runs)
        starts = [x["started"] - run.enqueued_at for x in runs if x["started"]]
        return {
            "bench": "b3",
            "db": args.db,
            "count": args.count,
            "completed": len(finished),
            "all_done": done,
            "regions": len(regions),
            "latency_ms": args.latency,
            "limits": limits.describe(),
            "wall_s": r(wall),
            "ideal_s": ideal,
            "ratio": r(wall / ideal, 3),
            "last_start_s": r(max(starts, default=None)),
            "cert_duration_p50_s": r(pct(durations, 50)),
            "cert_duration_max_s": r(max(durations, default=None)),
            "rss_idle_mb": r(baseline_rss / 1024, 1),
            "rss_max_sampled_mb": r(max(samples, default=0) / 1024, 1),
            "peak_rss_mb": r((run.peak_rss_kb(worker) or 0) / 1024, 1),
            "worker_cpu_s": r(run.cpu_s(worker), 1),
            "machine_cpu_busy": machine_busy,
            "statuses": harness.status_counts(runs),
            "test_outcomes": run.test_outcomes(),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(
        __doc__, db="postgres", workers=1, count=500, regions=1, concurrency=500
    )
    parser.add_argument("--latency", type=float, default=2000.0, help="ms per call")
    return harness.run_benchmark("b3", measure, KEYS, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
