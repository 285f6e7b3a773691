"""B10 — the API's /metrics for a fleet, with and without the per-deployment trend families.

What it measures: a catalog of --providers providers (kind `sim`, each serving the same
--regions regions) with --per-provider deployments each (50 × 20 by default), every pair
run --runs-per-pair times in the last 24 h (spread over it at random) with a 13-test
battery each (mostly PASSED with a latency, a few FAILED, one SKIPPED without latency),
and --history-days days of older runs like those (outside the 24 h window: what the
window's query must skip). Rows are inserted in bulk, not by the engine: only what
/metrics reads matters here. Then a real `modelcert api` process on 127.0.0.1 is scraped
--samples times one after another (after one warm-up scrape): the time from the request
to the last byte, the body's size and the number of `modelcert_deployment_*` samples.
Once with the bound --max-pairs (MODELCERT_TREND_METRICS_MAX_PAIRS, default 1000: every
pair of the default fleet exported), once with the families off (0): the difference is
what they cost a scrape.

Run:
    python bench/b10_trend_metrics.py                   # SQLite
    python bench/b10_trend_metrics.py --db postgres
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from b9_matrix import REGIONS, api_process, fleet_parser
from harness import bench_database, emit, pct, r
from sqlalchemy import insert

from modelcert.store import db, repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, TestResultRow, utcnow

TESTS = 13
WINDOW = timedelta(hours=24)


def battery(rng: random.Random, run_id: int) -> list[dict[str, Any]]:
    """13 test rows: the last SKIPPED (no latency), about 1 in 10 of the others FAILED."""
    rows = []
    for position in range(TESTS):
        skipped = position == TESTS - 1
        rows.append(
            {
                "run_id": run_id,
                "position": position,
                "test_id": f"t{position:02d}",
                "title": f"test {position}",
                "outcome": "SKIPPED" if skipped else ("FAILED" if rng.random() < 0.1 else "PASSED"),
                "latency_ms": None if skipped else rng.uniform(150, 2500),
                "ttft_ms": None if skipped else rng.uniform(20, 400),
            }
        )
    return rows


def seed(
    url: str, providers: int, per_provider: int, regions: int, runs: int, history_days: int
) -> dict[str, int]:
    """The catalog, a certification per pair and its runs; returns what was written."""
    rng = random.Random(10)
    engine = db.make_engine(url)
    db.upgrade(engine)
    factory = db.make_session_factory(engine)
    served = list(REGIONS[:regions])
    now = utcnow()
    with transaction(factory) as session:
        for p in range(providers):
            repo.add_provider(session, slug=f"fleet{p}", kind="sim", regions=served)
            for d in range(per_provider):
                repo.add_deployment(
                    session, provider_slug=f"fleet{p}", provider_model_id=f"model-{d:02d}"
                )
        session.flush()
        certifications = [
            Certification(deployment_id=deployment.id, region=region, status="CERTIFIED")
            for deployment in repo.list_deployments(session)
            for region in served
        ]
        session.add_all(certifications)
        session.flush()
        pairs = [(c.id, c.deployment_id, c.region) for c in certifications]
    # Per pair: `runs` in the last 24 h, as many a day in each of `history_days` before.
    written = {"pairs": len(pairs), "runs": 0, "runs_in_window": 0, "test_rows": 0}
    run_id = 0
    for day in [day for day in range(history_days + 1) for _ in range(runs)]:
        run_rows, test_rows = [], []
        for certification_id, deployment_id, region in pairs:
            run_id += 1
            into_day = timedelta(seconds=rng.uniform(1, WINDOW.total_seconds() - 1))
            started = now - WINDOW * day - into_day
            tests = battery(rng, run_id)
            run_rows.append(
                {
                    "id": run_id,
                    "certification_id": certification_id,
                    "deployment_id": deployment_id,
                    "region": region,
                    "status": "CERTIFIED",
                    "started_at": started,
                    "completed_at": started + timedelta(seconds=30),
                    "tests_total": TESTS,
                    "tests_passed": sum(t["outcome"] == "PASSED" for t in tests),
                    "tests_failed": sum(t["outcome"] == "FAILED" for t in tests),
                    "tests_skipped": 1,
                    "simulated": True,
                }
            )
            test_rows.extend(tests)
        with transaction(factory) as session:
            session.execute(insert(CertificationRun), run_rows)
            session.execute(insert(TestResultRow), test_rows)
        written["runs"] += len(run_rows)
        written["runs_in_window"] += len(run_rows) if day == 0 else 0
        written["test_rows"] += len(test_rows)
    engine.dispose()
    return written


def measure(url: str, samples: int) -> dict[str, Any]:
    urllib.request.urlopen(url).read()  # warm: connections opened, statements compiled
    times, body = [], b""
    for _ in range(samples):
        started = time.perf_counter()
        with urllib.request.urlopen(url) as response:
            body = response.read()
        times.append((time.perf_counter() - started) * 1000)
    lines = body.decode().splitlines()
    return {
        "median_ms": r(statistics.median(times), 1),
        "p95_ms": r(pct(times, 95), 1),
        "min_ms": r(min(times), 1),
        "bytes": len(body),
        "deployment_samples": sum(line.startswith("modelcert_deployment_") for line in lines),
        "trend_pairs": [line for line in lines if line.startswith("modelcert_deployment_trend")],
    }


def main() -> None:
    p = fleet_parser(__doc__)
    p.add_argument("--runs-per-pair", type=int, default=4, help="runs of a pair in 24 h")
    p.add_argument("--history-days", type=int, default=0, help="days of runs before 24 h")
    p.add_argument("--max-pairs", type=int, default=1000, help="the bound when on")
    p.add_argument("--samples", type=int, default=5)
    args = p.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="modelcert-b10-") as tmp,
        bench_database(args.db, Path(tmp)) as url,
    ):
        written = seed(
            url, args.providers, args.per_provider, args.regions, args.runs_per_pair,
            args.history_days,
        )  # fmt: skip
        result: dict[str, Any] = {"db": args.db, **written}
        for name, max_pairs in (("with_trends", args.max_pairs), ("without_trends", 0)):
            bound = {"MODELCERT_TREND_METRICS_MAX_PAIRS": str(max_pairs)}
            with api_process(url, "/metrics", bound) as api:
                result[name] = measure(f"{api}/metrics", args.samples)
        emit("RESULT", result)


if __name__ == "__main__":
    main()
