"""B9 — the dashboard's matrix page for a fleet: server time and payload at 50 × 20.

What it measures: a seeded catalog of --providers providers (kind `sim`, each serving
the same --regions regions) with --per-provider deployments each (50 × 20 by default),
every cell with a current certification written the way a worker writes it
(`store.runs.begin_run` / `finish_run` with a 12-test battery: about 75 % CERTIFIED, 10 %
QUALITY_WARNING, 15 % FAILED with a decisive category, and --never cells never
certified). Then a real `modelcert api` process on 127.0.0.1 serves the dashboard, an
operator logs in, and the driver asks for the matrix --samples times one after another:
the time from the request to the last byte (loopback: the server's time plus a local
round trip), and the page's size, raw and as gzip would send it (the API does not
compress; a proxy in front may). The same for a filtered view (`status=FAILED`) and a
one-region view.

With --history N, each certified cell also has N earlier runs over the last 7 days (summary
columns only, bulk-inserted: what the matrix's pass-rate sparklines read), as a fleet
re-certified every few hours has.

Run:
    python bench/b9_matrix.py                   # SQLite
    python bench/b9_matrix.py --db postgres
    python bench/b9_matrix.py --history 28      # a week of 6-hourly runs per cell
"""

from __future__ import annotations

import argparse
import gzip
import http.cookiejar
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from harness import bench_database, emit, pct, r
from sqlalchemy import insert

from modelcert.certify.scoring import score_results
from modelcert.domain import ErrorCategory, TestOutcome, TestResult
from modelcert.store import api_keys, db, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import CertificationRun, utcnow
from modelcert.store.runs import begin_run, finish_run
from modelcert.worker.process import free_port

REGIONS = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
    "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-central-2", "eu-north-1",
    "eu-south-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1",
    "ap-northeast-2", "ap-northeast-3", "me-central-1",
)  # fmt: skip
VENDORS = ("Anthropic", "Meta", "Mistral", "Amazon", "Cohere", "OpenAI")
FAILURES = (
    ErrorCategory.PERMISSION_ERROR,
    ErrorCategory.UNAVAILABLE,
    ErrorCategory.TIMEOUT,
    ErrorCategory.QUALITY_ISSUE,
    ErrorCategory.AUTHENTICATION_ERROR,
    ErrorCategory.NETWORK_ERROR,
)
TESTS = 12


def battery(rng: random.Random, kind: str) -> list[TestResult]:
    """12 results: all passed (`ok`), 2 failed (`warn`), or a decisive failure first and
    the rest not run (`fail`)."""
    names = [f"t{i:02d}" for i in range(TESTS)]
    if kind == "fail":
        category = rng.choice(FAILURES)
        first = TestResult(
            names[0], names[0], TestOutcome.FAILED, latency_ms=rng.uniform(50, 900),
            error_category=category, error_message=f"{category.value} (seeded)",
        )  # fmt: skip
        return [first] + [TestResult(n, n, TestOutcome.SKIPPED) for n in names[1:]]
    failed = 2 if kind == "warn" else 0
    return [
        TestResult(
            n,
            n,
            TestOutcome.FAILED if i < failed else TestOutcome.PASSED,
            latency_ms=rng.uniform(200, 2500),
            error_category=ErrorCategory.QUALITY_ISSUE if i < failed else None,
        )
        for i, n in enumerate(names)
    ]


def history_rows(
    rng: random.Random, deployment_id: int, region: str, kind: str, runs: int, now: datetime
) -> list[dict[str, Any]]:
    """`runs` earlier runs of a cell over the last 7 days (its sparkline's range), summary
    columns only (what the sparklines read): mostly like the cell's current verdict, one
    in ten different."""
    rows = []
    for _ in range(runs):
        like = kind if rng.random() < 0.9 else rng.choice(("ok", "warn", "fail"))
        passed, failed = {"ok": (12, 0), "warn": (10, 2), "fail": (0, 1)}[like]
        started = now - timedelta(seconds=rng.uniform(60, 7 * 86400))
        rows.append(
            {
                "deployment_id": deployment_id, "region": region, "started_at": started,
                "completed_at": started + timedelta(seconds=30), "simulated": True,
                "status": {"ok": "CERTIFIED", "warn": "QUALITY_WARNING", "fail": "FAILED"}[like],
                "tests_total": passed + failed, "tests_passed": passed, "tests_failed": failed,
                "tests_skipped": 12 - passed - failed,
            }
        )  # fmt: skip
    return rows


def seed(
    url: str, providers: int, per_provider: int, regions: int, never: float, history: int = 0
) -> str:
    """The catalog and its certifications (and `history` earlier runs per certified cell);
    returns an operator key."""
    rng = random.Random(9)
    engine = db.make_engine(url)
    db.upgrade(engine)
    factory = db.make_session_factory(engine)
    served = list(REGIONS[:regions])
    cells = 0
    with transaction(factory) as session:
        for p in range(providers):
            repo.add_provider(session, slug=f"fleet{p}", kind="sim", regions=served)
            for d in range(per_provider):
                repo.add_deployment(
                    session, provider_slug=f"fleet{p}", provider_model_id=f"model-{d:02d}",
                    vendor=VENDORS[(p + d) % len(VENDORS)], model_name=f"Model {p}-{d}",
                )  # fmt: skip
        _, key = api_keys.create_api_key(session, "bench-ops", Role.operator)
        ids = [d.id for d in repo.list_deployments(session)]
    for deployment_id in ids:
        with transaction(factory) as session:
            for region in served:
                if rng.random() < never:
                    continue
                kind = rng.choices(("ok", "warn", "fail"), (75, 10, 15))[0]
                results = battery(rng, kind)
                run = begin_run(session, deployment_id, region, simulated=True)
                if history:
                    rows = history_rows(rng, deployment_id, region, kind, history, utcnow())
                    for row in rows:
                        row["certification_id"] = run.certification_id
                    session.execute(insert(CertificationRun), rows)
                finish_run(session, run.id, results, score_results(results))
                cells += 1
    engine.dispose()
    print(f"seeded {len(ids)} deployments x {regions} regions, {cells} certified cells")
    return key


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the API exited")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the API did not answer")


def measure(opener: urllib.request.OpenerDirector, url: str, samples: int) -> dict[str, Any]:
    times, body = [], b""
    opener.open(url).read()  # warm: templates compiled, connections opened
    for _ in range(samples):
        started = time.perf_counter()
        with opener.open(url) as response:
            body = response.read()
        times.append((time.perf_counter() - started) * 1000)
    return {
        "median_ms": r(statistics.median(times), 1),
        "p95_ms": r(pct(times, 95), 1),
        "min_ms": r(min(times), 1),
        "bytes": len(body),
        "gzip_bytes": len(gzip.compress(body)),
        "certified_cells": body.count(b'<td class="cell"><a'),
    }


def fleet_parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments of a fleet benchmark (B9, B10): --db and the fleet's shape, --providers
    × --per-provider deployments serving --regions regions (50 × 20 by default)."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--providers", type=int, default=5)
    p.add_argument("--per-provider", type=int, default=10)
    p.add_argument("--regions", type=int, default=20, choices=range(1, len(REGIONS) + 1))
    return p


@contextmanager
def api_process(
    url: str, ready_path: str, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    """A `modelcert api` process on the database `url` (and `extra_env`), on a free port of
    127.0.0.1: its base URL once `ready_path` answers; stopped afterwards."""
    port = free_port()
    env = {
        **os.environ,
        "MODELCERT_DATABASE_URL": url,
        "MODELCERT_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "modelcert", "api", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + ready_path, api)
        yield base
    finally:
        api.terminate()
        api.wait(timeout=30)


def main() -> None:
    p = fleet_parser(__doc__)
    p.add_argument("--never", type=float, default=0.05, help="share of cells never certified")
    p.add_argument("--samples", type=int, default=30)
    p.add_argument(
        "--history", type=int, default=0, help="earlier runs per certified cell, over 7 days"
    )
    args = p.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="modelcert-b9-") as tmp,
        bench_database(args.db, Path(tmp)) as url,
    ):
        key = seed(url, args.providers, args.per_provider, args.regions, args.never, args.history)
        with api_process(url, "/dashboard/login") as api:
            base = f"{api}/dashboard"
            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            form = urllib.parse.urlencode({"api_key": key, "next": "/dashboard/"}).encode()
            opener.open(f"{base}/login", data=form).read()
            result: dict[str, Any] = {
                "db": args.db,
                "deployments": args.providers * args.per_provider,
                "regions": args.regions,
            }
            for name, path in (
                ("matrix", "/matrix"),
                ("failed_only", "/matrix?status=FAILED"),
                ("one_region", "/matrix?region=eu-west-1"),
            ):
                result[name] = measure(opener, base + path, args.samples)
            emit("RESULT", result)


if __name__ == "__main__":
    main()
