"""The durable queue with real worker processes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import JobKind, Priority
from modelcert.jobs.cancel import cancel_job
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.job_summary import job_summary
from modelcert.jobs.queues import WORKFLOW_NAME, dbos_table
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import CertificationRun, TestResultRow
from tests.support.workers import WorkerProcess

REGIONS = ("us-east-1", "eu-west-1")


@pytest.fixture
def queue_settings(database_url: str) -> Settings:
    # Must match what the worker processes read from their environment.
    return Settings(database_url=database_url, queue_polling_interval_s=0.1)


@pytest.fixture
def catalog(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with transaction(factory) as session:
        repo.add_provider(
            session,
            slug="lab",
            kind="sim",
            regions=list(REGIONS),
            config={"retry_base_ms": 10, "seed": 7},
        )
        for name, latency in (("steady", 300), ("quick", 20)):
            repo.add_deployment(
                session,
                provider_slug="lab",
                provider_model_id=name,
                options={"profile": "healthy-fast", "latency_ms": latency},
            )
    return factory


@pytest.fixture
def enqueuer(engine: Engine, queue_settings: Settings) -> Iterator[Enqueuer]:
    value = Enqueuer(engine, queue_settings)
    yield value
    value.close()


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[StartWorker]:
    started: list[WorkerProcess] = []

    def start(executor_id: str, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            database_url, executor_id, tmp_path, regions=REGIONS, env=env
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def dialect_is_sqlite(factory: sessionmaker[Session]) -> bool:
    with factory() as session:
        return session.get_bind().dialect.name == "sqlite"


def wait_for(predicate: Callable[[], bool], timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def summary(factory: sessionmaker[Session], job_id: str) -> dict[str, object]:
    with transaction(factory) as session:
        return job_summary(session, job_id)


def completed(factory: sessionmaker[Session], job_id: str) -> bool:
    return summary(factory, job_id)["status"] == "COMPLETED"


def test_jobs_wait_without_a_worker_and_complete_when_one_starts(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartWorker
) -> None:
    result = enqueuer.enqueue(catalog, [("lab/quick", r) for r in REGIONS], kind=JobKind.MULTIPLE)
    assert result.job_id and len(result.queued) == 2
    time.sleep(1.0)
    queued = summary(catalog, result.job_id)
    assert queued["status"] == "QUEUED"
    assert {c["status"] for c in queued["certifications"]} == {"QUEUED"}  # type: ignore[union-attr]

    late = workers("w-late")
    wait_for(lambda: completed(catalog, result.job_id or ""), what="job completion")
    # The worker exports queue-wide counts and its own activity as Prometheus metrics.
    wait_for(
        lambda: (
            'modelcert_queue_jobs{region="eu-west-1",state="completed"} 1.0'
            in late.get("/metrics")[1]
        ),
        timeout=20,
        what="queue counts in /metrics",
    )
    metrics_text = late.get("/metrics")[1]
    assert (
        'modelcert_certifications_total{provider="sim",region="us-east-1",status="CERTIFIED"}'
        in metrics_text
    )
    assert late.get("/health")[1]["executor_id"] == "w-late"
    done = summary(catalog, result.job_id)
    assert (done["processed"], done["succeeded"]) == (2, 2)
    assert {c["executorId"] for c in done["certifications"]} == {"w-late"}  # type: ignore[union-attr]


def test_duplicates_are_refused_while_queued_or_running(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartWorker
) -> None:
    first = enqueuer.enqueue(catalog, [("lab/steady", "us-east-1")], kind=JobKind.SINGLE)
    again = enqueuer.enqueue(
        catalog, [("lab/steady", "us-east-1"), ("lab/quick", "us-east-1")], kind=JobKind.MULTIPLE
    )
    assert [r.deployment for r in again.refused] == ["lab/steady"]
    assert [q.deployment for q in again.queued] == ["lab/quick"]
    workers("w-dup")
    wait_for(lambda: completed(catalog, first.job_id or ""), what="first job")
    # Free again once the workflow has ended (a moment after the job's verdict is stored).
    accepted: list[str] = []

    def enqueue_again() -> bool:
        after = enqueuer.enqueue(catalog, [("lab/steady", "us-east-1")], kind=JobKind.SINGLE)
        accepted.extend([after.job_id] if after.job_id else [])
        return bool(accepted)

    wait_for(enqueue_again, timeout=10, what="the deduplication id to be released")


def _running_run(factory: sessionmaker[Session], executor_id: str, min_tests: int) -> int | None:
    with transaction(factory) as session:
        for run in session.scalars(
            select(CertificationRun).where(
                CertificationRun.executor_id == executor_id, CertificationRun.status == "RUNNING"
            )
        ):
            tests = session.scalars(select(TestResultRow).where(TestResultRow.run_id == run.id))
            if len(list(tests)) >= min_tests:
                return run.id
    return None


def _test_rows(factory: sessionmaker[Session], run_id: int) -> dict[str, int]:
    with transaction(factory) as session:
        rows = session.scalars(select(TestResultRow).where(TestResultRow.run_id == run_id))
        return {row.test_id: row.id for row in rows}


def test_a_killed_worker_resumes_without_rerunning_completed_tests(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartWorker
) -> None:
    targets = [(d, r) for d in ("lab/steady", "lab/quick") for r in REGIONS]
    job = enqueuer.enqueue(catalog, targets, kind=JobKind.MULTIPLE)
    victim = workers("w-victim")
    workers("w-other")
    run_id: int | None = None

    def victim_mid_run() -> bool:
        nonlocal run_id
        run_id = _running_run(catalog, "w-victim", min_tests=4)
        return run_id is not None

    wait_for(victim_mid_run, what="the victim to be mid-certification")
    assert run_id is not None
    before = _test_rows(catalog, run_id)
    victim.kill()
    workers("w-victim")  # the same stable executor id comes back and resumes its work
    wait_for(lambda: completed(catalog, job.job_id or ""), what="job completion after kill")

    after = _test_rows(catalog, run_id)
    # Tests finished before the kill keep their rows: their steps were not executed again
    # (at most the one test in flight at the kill is repeated).
    kept = [test for test, row_id in before.items() if after.get(test) == row_id]
    assert len(kept) >= len(before) - 1, (before, after)
    done = summary(catalog, job.job_id or "")
    assert (done["processed"], done["succeeded"]) == (4, 4)


def test_sigterm_lets_the_in_flight_certification_finish(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartWorker
) -> None:
    job = enqueuer.enqueue(catalog, [("lab/steady", "eu-west-1")], kind=JobKind.SINGLE)
    worker = workers("w-term")
    wait_for(lambda: _running_run(catalog, "w-term", min_tests=1) is not None, what="a run")
    assert worker.terminate() == 0
    done = summary(catalog, job.job_id or "")
    assert done["status"] == "COMPLETED" and done["succeeded"] == 1
    assert '"worker_stopped"' in worker.log()


def test_cancel_stops_a_running_certification_between_tests(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartWorker
) -> None:
    job = enqueuer.enqueue(catalog, [("lab/steady", "us-east-1")], kind=JobKind.SINGLE)
    workers("w-cancel")
    run_id: int | None = None

    def running() -> bool:
        nonlocal run_id
        run_id = _running_run(catalog, "w-cancel", min_tests=2)
        return run_id is not None

    wait_for(running, what="a running certification")
    at_cancel = _test_rows(catalog, run_id or 0)
    assert cancel_job(catalog, enqueuer.client, job.job_id or "") == 1
    wait_for(lambda: _run_status(catalog, run_id or 0) == "CANCELLED", what="run cancelled")
    # The test in flight at the cancel may still finish and be stored (the availability
    # test alone takes over 2 s), but no test starts after it.
    time.sleep(4.0)
    settled = _test_rows(catalog, run_id or 0)
    assert len(settled) <= len(at_cancel) + 2  # + the one finishing as the snapshot was taken
    time.sleep(4.0)
    assert _test_rows(catalog, run_id or 0) == settled
    assert len(settled) < 12
    done = summary(catalog, job.job_id or "")
    assert done["status"] == "CANCELLED"
    assert [c["status"] for c in done["certifications"]] == ["CANCELLED"]  # type: ignore[union-attr]


def _run_status(factory: sessionmaker[Session], run_id: int) -> str | None:
    with transaction(factory) as session:
        run = session.get(CertificationRun, run_id)
        return run.status if run else None


def _runs(factory: sessionmaker[Session]) -> list[CertificationRun]:
    with transaction(factory) as session:
        return list(session.scalars(select(CertificationRun).order_by(CertificationRun.id)))


def test_higher_priority_runs_first(
    catalog: sessionmaker[Session], engine: Engine, database_url: str, workers: StartWorker
) -> None:
    one_at_a_time = Settings(
        database_url=database_url, queue_polling_interval_s=0.1, certification_concurrency=1
    )
    enqueuer = Enqueuer(engine, one_at_a_time)
    try:
        low = enqueuer.enqueue(
            catalog,
            [("lab/quick", "us-east-1"), ("lab/quick", "eu-west-1")],
            kind=JobKind.MULTIPLE,
            priority=Priority.LOW,
        )
        high = enqueuer.enqueue(
            catalog, [("lab/steady", "us-east-1")], kind=JobKind.SINGLE, priority=Priority.HIGH
        )
    finally:
        enqueuer.close()
    workers("w-prio", CERTIFICATION_CONCURRENCY="1")
    wait_for(
        lambda: completed(catalog, low.job_id or "") and completed(catalog, high.job_id or ""),
        what="both jobs",
    )
    us_east = [run for run in _runs(catalog) if run.region == "us-east-1"]
    assert [run.job_id for run in us_east] == [high.job_id, low.job_id]


def test_region_limits_hold_across_two_workers(
    catalog: sessionmaker[Session], engine: Engine, database_url: str, workers: StartWorker
) -> None:
    # Each worker may run 2, the region only 3 in all: the two workers must share.
    limits = {
        "MODELCERT_REGION_CONCURRENCY": "3",
        "MODELCERT_REGION_START_RATE": "2",
        "CERTIFICATION_CONCURRENCY": "2",
    }
    limited = Settings(
        database_url=database_url,
        queue_polling_interval_s=0.1,
        region_concurrency=3,
        region_start_rate_per_second=2,
        certification_concurrency=2,
    )
    with transaction(catalog) as session:
        for index in range(8):
            repo.add_deployment(
                session,
                provider_slug="lab",
                provider_model_id=f"m{index}",
                options={"profile": "healthy-fast", "latency_ms": 20},
            )
    workers("w-lim-1", **limits)
    workers("w-lim-2", **limits)
    enqueuer = Enqueuer(engine, limited)
    try:
        job = enqueuer.enqueue(
            catalog, [(f"lab/m{i}", "us-east-1") for i in range(8)], kind=JobKind.MULTIPLE
        )
    finally:
        enqueuer.close()
    wait_for(lambda: completed(catalog, job.job_id or ""), what="the limited job")

    runs = _runs(catalog)
    assert {run.executor_id for run in runs} == {"w-lim-1", "w-lim-2"}  # both took work
    spans = [(run.started_at, run.completed_at) for run in runs]
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)  # type: ignore[operator]
    assert peak <= 3, peak
    for executor in ("w-lim-1", "w-lim-2"):  # CERTIFICATION_CONCURRENCY applies per worker
        own = [(r.started_at, r.completed_at) for r in runs if r.executor_id == executor]
        own_peak = max(sum(1 for s, e in own if s <= t < e) for t, _ in own)  # type: ignore[operator]
        assert own_peak <= 2, (executor, own_peak)
    # The start rate, measured on DBOS's own dequeue times (our run rows are written a
    # moment later, with scheduling noise): at most 2 starts in any 1 s window, with 5 %
    # slack for clock granularity (on SQLite the limiter counts whole clock seconds).
    with transaction(catalog) as session:
        table = dbos_table(session.get_bind().dialect.name, "workflow_status")
        starts = sorted(
            row[0] / 1000
            for row in session.execute(
                text(f"SELECT started_at_epoch_ms FROM {table} WHERE name = :n"),
                {"n": WORKFLOW_NAME},
            )
            if row[0] is not None
        )
    assert len(starts) == 8
    window = [b - a for a, b in zip(starts, starts[2:], strict=False)]  # 3 starts apart
    assert min(window) >= 0.95 or dialect_is_sqlite(catalog), (starts, window)
    per_second: dict[int, int] = {}
    for start in starts:
        per_second[int(start)] = per_second.get(int(start), 0) + 1
    assert max(per_second.values()) <= 2, per_second


def test_the_reaper_requeues_a_dead_workers_certifications(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartWorker
) -> None:
    fast_reaper = {"MODELCERT_WORKER_DEAD_AFTER_S": "4"}
    job = enqueuer.enqueue(catalog, [("lab/steady", r) for r in REGIONS], kind=JobKind.MULTIPLE)
    victim = workers("w-dead", **fast_reaper)
    run_id: int | None = None

    def mid_run() -> bool:
        nonlocal run_id
        run_id = _running_run(catalog, "w-dead", min_tests=3)
        return run_id is not None

    wait_for(mid_run, what="the victim mid-certification")
    victim.kill()  # never comes back
    before = _test_rows(catalog, run_id or 0)
    survivor = workers("w-survivor", **fast_reaper)
    wait_for(lambda: completed(catalog, job.job_id or ""), what="the job, after the reaper")
    after = _test_rows(catalog, run_id or 0)
    kept = [test for test, row_id in before.items() if after.get(test) == row_id]
    assert len(kept) >= len(before) - 1, (before, after)
    assert '"stalled"' in survivor.log() and "w-dead" in survivor.log()
    done = summary(catalog, job.job_id or "")
    assert (done["processed"], done["succeeded"]) == (2, 2), done
    # The requeued work went ahead of the rest of its class: normal (5) became 4.
    with catalog() as session:
        table = dbos_table(session.get_bind().dialect.name, "workflow_status")
        rows = session.execute(
            text(f"SELECT workflow_uuid, priority FROM {table} WHERE workflow_uuid LIKE :job"),
            {"job": f"{job.job_id}:%"},
        ).all()
    priorities = [priority for _, priority in rows]
    assert 4 in priorities and set(priorities) <= {4, 5}, rows


def test_certification_timeout_counts_from_the_start_and_still_gives_a_verdict(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartWorker
) -> None:
    job = enqueuer.enqueue(catalog, [("lab/steady", "us-east-1")], kind=JobKind.SINGLE)
    workers("w-timeout", CERTIFICATION_TIMEOUT="2500")  # ms; a full run takes ~6 s
    wait_for(lambda: completed(catalog, job.job_id or ""), what="the job, despite the timeout")
    run = _runs(catalog)[-1]
    with transaction(catalog) as session:
        rows = session.scalars(select(TestResultRow).where(TestResultRow.run_id == run.id)).all()
        skipped = [r for r in rows if "CERTIFICATION_TIMEOUT (2.5 s)" in (r.detail or "")]
    assert skipped and run.status in ("CERTIFIED", "QUALITY_WARNING", "FAILED", "ERROR")
    assert run.tests_skipped == len(skipped)
