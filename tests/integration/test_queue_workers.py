"""The durable queue with real workers, on SQLite and on PostgreSQL.

Most tests run the worker inside the test process (`start_worker`, a real
`modelcert.worker.main.Worker` with DBOS launched here) and `drain()` it instead of
waiting. Worker subprocesses (`workers`) are kept where the process boundary is the
point: kill -9 and resume, SIGTERM grace, limits shared by two workers, and the reaper
taking over a dead worker."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import JobKind, Priority
from modelcert.jobs.cancel import cancel_job
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.job_summary import job_summary
from modelcert.jobs.queues import WORKFLOW_NAME, dbos_table
from modelcert.obs import metrics
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import CertificationRun, Job, TestResultRow
from modelcert.store.worker_models import WorkerHeartbeat
from modelcert.worker import main as worker_main
from modelcert.worker.main import Worker
from tests.support.inprocess import StartWorker
from tests.support.waiting import wait_for
from tests.support.workers import StartProcesses, worker_processes

REGIONS = ("us-east-1", "eu-west-1")


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
def workers(settings: Settings, tmp_path: Path) -> Iterator[StartProcesses]:
    with worker_processes(settings, tmp_path, REGIONS) as start:
        yield start


def dialect_is_sqlite(factory: sessionmaker[Session]) -> bool:
    with factory() as session:
        return session.get_bind().dialect.name == "sqlite"


def summary(factory: sessionmaker[Session], job_id: str) -> dict[str, Any]:
    with transaction(factory) as session:
        return job_summary(session, job_id)


def completed(factory: sessionmaker[Session], job_id: str) -> bool:
    return summary(factory, job_id)["status"] == "COMPLETED"


def health_get(worker: Worker, path: str) -> Any:
    """GET the in-process worker's health server over HTTP (JSON, or text for /metrics)."""
    url = f"http://127.0.0.1:{worker.health.port}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    return body if path == "/metrics" else json.loads(body)


def sample(exposition: str, name: str, **labels: str) -> float:
    """One sample's value in a Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


def test_jobs_wait_without_a_worker_and_complete_when_one_starts(
    catalog: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = enqueuer.enqueue(catalog, [("lab/quick", r) for r in REGIONS], kind=JobKind.MULTIPLE)
    assert result.job_id and len(result.queued) == 2
    time.sleep(0.2)  # no worker anywhere: nothing runs, nothing is lost
    queued = summary(catalog, result.job_id)
    assert queued["status"] == "QUEUED"
    assert {c["status"] for c in queued["certifications"]} == {"QUEUED"}

    # The metrics registry is the process's: count what this job adds to it.
    certified = {"provider": "sim", "region": "us-east-1", "status": "CERTIFIED"}
    counter = "modelcert_certifications_total"
    before = sample(metrics.render_metrics()[0].decode(), counter, **certified)
    # Queue-wide counts are published every 10 s, heartbeats written every 2 s: here at once.
    monkeypatch.setattr(worker_main, "QUEUE_COUNTS_INTERVAL_S", 0.1)
    monkeypatch.setattr(worker_main, "HEARTBEAT_INTERVAL_S", 0.1)
    late = start_worker(regions=REGIONS, executor_id="w-late")
    late.drain()
    assert completed(catalog, result.job_id)
    # The worker exports queue-wide counts and its own activity as Prometheus metrics.
    completed_jobs = {"region": "eu-west-1", "state": "completed"}
    wait_for(
        lambda: sample(health_get(late, "/metrics"), "modelcert_queue_jobs", **completed_jobs) == 1,
        timeout=20,
        what="queue counts in /metrics",
    )
    assert sample(health_get(late, "/metrics"), counter, **certified) == before + 1
    assert health_get(late, "/health")["executor_id"] == "w-late"
    done = summary(catalog, result.job_id)
    assert (done["processed"], done["succeeded"]) == (2, 2)
    assert {c["executorId"] for c in done["certifications"]} == {"w-late"}


def test_duplicates_are_refused_while_queued_or_running(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, start_worker: StartWorker
) -> None:
    first = enqueuer.enqueue(catalog, [("lab/steady", "us-east-1")], kind=JobKind.SINGLE)
    again = enqueuer.enqueue(
        catalog, [("lab/steady", "us-east-1"), ("lab/quick", "us-east-1")], kind=JobKind.MULTIPLE
    )
    assert [r.deployment for r in again.refused] == ["lab/steady"]
    assert [q.deployment for q in again.queued] == ["lab/quick"]
    worker = start_worker(regions=REGIONS, executor_id="w-dup")
    wait_for(lambda: _running_run(catalog, "w-dup", min_tests=1) is not None, what="a run")
    running = enqueuer.enqueue(catalog, [("lab/steady", "us-east-1")], kind=JobKind.SINGLE)
    assert [r.deployment for r in running.refused] == ["lab/steady"] and not running.job_id
    worker.drain()
    assert completed(catalog, first.job_id or "")
    # Free again once the workflow has ended (drained: nothing queued or running). Queued
    # for later, so that it does not run as the worker stops.
    after = enqueuer.enqueue(
        catalog, [("lab/steady", "us-east-1")], kind=JobKind.SINGLE, delay_s=3600
    )
    assert after.job_id and not after.refused


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
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartProcesses
) -> None:
    targets = [(d, r) for d in ("lab/steady", "lab/quick") for r in REGIONS]
    job = enqueuer.enqueue(catalog, targets, kind=JobKind.MULTIPLE)
    [victim] = workers("w-victim")  # ready, it claims the whole job at once
    # Another worker starts meanwhile (not waited for: the victim's run goes on).
    [other] = workers("w-other", wait=False)
    run_id: int | None = None

    def victim_mid_run() -> bool:
        nonlocal run_id
        run_id = _running_run(catalog, "w-victim", min_tests=4)
        return run_id is not None

    wait_for(victim_mid_run, what="the victim to be mid-certification")
    assert run_id is not None
    before = _test_rows(catalog, run_id)
    victim.kill()
    other.wait_ready()  # up while the victim is dead: its claimed work still waits for it
    workers("w-victim")  # the same stable executor id comes back and resumes its work
    wait_for(lambda: completed(catalog, job.job_id or ""), what="job completion after kill")

    after = _test_rows(catalog, run_id)
    # Tests stored before the kill keep their rows: not executed again, even the one whose
    # step's checkpoint the kill may have cut off (its stored result is read back).
    kept = [test for test, row_id in before.items() if after.get(test) == row_id]
    assert len(kept) == len(before), (before, after)
    done = summary(catalog, job.job_id or "")
    assert (done["processed"], done["succeeded"]) == (4, 4)


def test_sigterm_lets_the_in_flight_certification_finish(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartProcesses
) -> None:
    job = enqueuer.enqueue(catalog, [("lab/steady", "eu-west-1")], kind=JobKind.SINGLE)
    [worker] = workers("w-term", MODELCERT_SHUTDOWN_GRACE_S="30")
    wait_for(lambda: _running_run(catalog, "w-term", min_tests=1) is not None, what="a run")
    assert worker.terminate() == 0
    done = summary(catalog, job.job_id or "")
    assert done["status"] == "COMPLETED" and done["succeeded"] == 1
    assert '"worker_stopped"' in worker.log()


def _beats(factory: sessionmaker[Session], executor_id: str) -> int:
    with factory() as session:
        row = session.get(WorkerHeartbeat, executor_id)
        return row.beats if row is not None else 0


def _workflow_states(factory: sessionmaker[Session], job_id: str) -> dict[str, tuple[str, str]]:
    with factory() as session:
        table = dbos_table(session.get_bind().dialect.name, "workflow_status")
        rows = session.execute(
            text(
                f"SELECT workflow_uuid, status, executor_id FROM {table} "
                "WHERE workflow_uuid LIKE :j"
            ),
            {"j": f"{job_id}:%"},
        ).all()
    return {workflow: (status, executor) for workflow, status, executor in rows}


def test_sigterm_drains_what_runs_and_hands_back_what_waits(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartProcesses
) -> None:
    """One slot and a prefetch of one: the worker runs one certification and holds
    another waiting. On SIGTERM it is not ready at once, keeps its heartbeat while the
    running one finishes, hands the waiting one back untouched, and exits 0; another
    worker then runs it."""
    job = enqueuer.enqueue(catalog, [("lab/steady", r) for r in REGIONS], kind=JobKind.MULTIPLE)
    assert job.job_id
    [worker] = workers(
        "w-drain",
        CERTIFICATION_CONCURRENCY="1",
        MODELCERT_WORKER_PREFETCH="1",
        MODELCERT_SHUTDOWN_GRACE_S="30",
    )

    def one_running_one_waiting() -> bool:
        states = _workflow_states(catalog, job.job_id or "")
        claimed = [s for s, e in states.values() if s == "PENDING" and e == "w-drain"]
        return len(claimed) == 2 and _running_run(catalog, "w-drain", min_tests=2) is not None

    wait_for(one_running_one_waiting, what="one certification running, one claimed")
    beats = _beats(catalog, "w-drain")
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    answers: list[tuple[int, Any]] = []
    wait_for(
        lambda: answers.append(worker.get("/ready")) or answers[-1][0] == 503,
        timeout=5,
        what="/ready 503",
    )
    assert time.monotonic() - sent < 3  # handled within the main loop's poll, not after the drain
    assert "shutting down" in answers[-1][1]["reasons"]
    # Heartbeats go on while the running certification finishes (2 s apart).
    wait_for(lambda: _beats(catalog, "w-drain") > beats, timeout=10, what="a heartbeat")
    assert worker.process.wait(timeout=60) == 0
    with catalog() as session:
        runs = session.scalars(select(CertificationRun)).all()
    assert [(r.executor_id, r.status) for r in runs] == [("w-drain", "CERTIFIED")]
    states = _workflow_states(catalog, job.job_id)
    assert sorted(s for s, _ in states.values()) == ["ENQUEUED", "SUCCESS"], states
    assert '"released"' in worker.log()

    workers("w-next")
    wait_for(lambda: completed(catalog, job.job_id or ""), what="the rest, on another worker")
    with catalog() as session:
        runs = session.scalars(select(CertificationRun)).all()
    assert sorted((r.executor_id, r.status) for r in runs) == [
        ("w-drain", "CERTIFIED"),
        ("w-next", "CERTIFIED"),
    ]


def test_sigterm_is_always_handled_under_load(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartProcesses
) -> None:
    """SIGTERM, at once after ready and while certifications run, many times over: each
    time /ready turns 503 and the worker exits 0 within its grace, and what it did not
    finish is handed back (nothing left PENDING under a stopped worker)."""
    targets = [(d, r) for d in ("lab/steady", "lab/quick") for r in REGIONS]
    job = enqueuer.enqueue(catalog, targets, kind=JobKind.MULTIPLE)
    assert job.job_id
    for attempt in range(6):
        [worker] = workers(f"w-sig-{attempt}", MODELCERT_SHUTDOWN_GRACE_S="1")
        if attempt % 2:  # half the time mid-work, half the time at once
            time.sleep(0.3 + 0.2 * attempt)
        assert worker.process is not None
        sent = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        wait_for(lambda w=worker: not w.running() or w.get("/ready")[0] == 503, timeout=2)
        assert worker.process.wait(timeout=30) == 0
        assert time.monotonic() - sent < 15
        stuck = [
            w
            for w, (s, e) in _workflow_states(catalog, job.job_id).items()
            if s == "PENDING" and e == f"w-sig-{attempt}"
        ]
        assert stuck == [], stuck
    workers("w-finish")
    wait_for(lambda: completed(catalog, job.job_id or ""), what="the job")
    assert summary(catalog, job.job_id)["succeeded"] == 4


def test_cancel_stops_a_running_certification_between_tests(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, start_worker: StartWorker
) -> None:
    job = enqueuer.enqueue(catalog, [("lab/steady", "us-east-1")], kind=JobKind.SINGLE)
    start_worker(regions=REGIONS, executor_id="w-cancel")
    run_id: int | None = None

    def running() -> bool:
        nonlocal run_id
        run_id = _running_run(catalog, "w-cancel", min_tests=2)
        return run_id is not None

    wait_for(running, what="a running certification")
    at_cancel = _test_rows(catalog, run_id or 0)
    assert cancel_job(catalog, enqueuer.client, job.job_id or "") == 1
    wait_for(lambda: _run_status(catalog, run_id or 0) == "CANCELLED", what="run cancelled")
    # The test in flight at the cancel may still finish and be stored (one test here is
    # at most two 300 ms calls), but no test starts after it: were the run going on, a
    # second would show three more tests.
    time.sleep(1.0)
    settled = _test_rows(catalog, run_id or 0)
    assert len(settled) <= len(at_cancel) + 2  # + the one finishing as the snapshot was taken
    time.sleep(1.0)
    assert _test_rows(catalog, run_id or 0) == settled
    assert len(settled) < 12
    done = summary(catalog, job.job_id or "")
    assert done["status"] == "CANCELLED"
    assert [c["status"] for c in done["certifications"]] == ["CANCELLED"]


def _run_status(factory: sessionmaker[Session], run_id: int) -> str | None:
    with transaction(factory) as session:
        run = session.get(CertificationRun, run_id)
        return run.status if run else None


def _runs(factory: sessionmaker[Session]) -> list[CertificationRun]:
    with transaction(factory) as session:
        return list(session.scalars(select(CertificationRun).order_by(CertificationRun.id)))


def test_higher_priority_runs_first(
    catalog: sessionmaker[Session], engine: Engine, settings: Settings, start_worker: StartWorker
) -> None:
    one_at_a_time = settings.model_copy(update={"certification_concurrency": 1})
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
    start_worker(regions=REGIONS, executor_id="w-prio", certification_concurrency=1).drain()
    assert completed(catalog, low.job_id or "") and completed(catalog, high.job_id or "")
    us_east = [run for run in _runs(catalog) if run.region == "us-east-1"]
    assert [run.job_id for run in us_east] == [high.job_id, low.job_id]


def test_region_limits_hold_across_two_workers(
    catalog: sessionmaker[Session], engine: Engine, settings: Settings, workers: StartProcesses
) -> None:
    # Each worker may run 2, the region only 3 in all: the two workers must share.
    limits = {
        "MODELCERT_REGION_CONCURRENCY": "3",
        "MODELCERT_REGION_START_RATE": "2",
        "CERTIFICATION_CONCURRENCY": "2",
    }
    limited = settings.model_copy(
        update={
            "region_concurrency": 3,
            "region_start_rate_per_second": 2,
            "certification_concurrency": 2,
        }
    )
    # Runs of over a second (12 calls of 100 ms): one worker's 2 slots cannot take all the
    # starts the rate allows, so both workers get work and the limits really bind.
    with transaction(catalog) as session:
        for index in range(8):
            repo.add_deployment(
                session,
                provider_slug="lab",
                provider_model_id=f"m{index}",
                options={"profile": "healthy-fast", "latency_ms": 100},
            )
    workers("w-lim-1", "w-lim-2", **limits)
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
    catalog: sessionmaker[Session], enqueuer: Enqueuer, workers: StartProcesses
) -> None:
    # Silent for 1 s is dead (the default is 60 s): the survivor, started after the kill,
    # finds the victim's heartbeat (written every 2 s) already stale and reaps at once.
    fast_reaper = {"MODELCERT_WORKER_DEAD_AFTER_S": "1"}
    job = enqueuer.enqueue(catalog, [("lab/steady", r) for r in REGIONS], kind=JobKind.MULTIPLE)
    [victim] = workers("w-dead", **fast_reaper)
    run_id: int | None = None

    def mid_run() -> bool:
        nonlocal run_id
        run_id = _running_run(catalog, "w-dead", min_tests=3)
        return run_id is not None

    wait_for(mid_run, what="the victim mid-certification")
    victim.kill()  # never comes back
    before = _test_rows(catalog, run_id or 0)
    [survivor] = workers("w-survivor", **fast_reaper)
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


def test_the_certification_timeout_counts_from_the_start_and_makes_the_run_incomplete(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, start_worker: StartWorker
) -> None:
    job = enqueuer.enqueue(catalog, [("lab/steady", "us-east-1")], kind=JobKind.SINGLE)
    assert job.job_id
    # The job waited in the queue an hour, far longer than the timeout: time is injected
    # (the job's and its workflow's enqueue times moved back), not waited for.
    an_hour = timedelta(hours=1)
    with transaction(catalog) as session:
        table = dbos_table(session.get_bind().dialect.name, "workflow_status")
        session.execute(
            text(f"UPDATE {table} SET created_at = created_at - :ms WHERE workflow_uuid LIKE :j"),
            {"ms": int(an_hour.total_seconds() * 1000), "j": f"{job.job_id}:%"},
        )
        queued = session.get(Job, job.job_id)
        assert queued is not None
        queued.created_at -= an_hour
    # 1.5 s; a full run of `steady` (12 tests, 300 ms calls) takes over 4 s.
    start_worker(regions=REGIONS, executor_id="w-timeout", certification_timeout_ms=1500).drain()

    done = summary(catalog, job.job_id)
    assert (done["status"], done["processed"], done["succeeded"]) == ("COMPLETED", 1, 0)
    [run] = _runs(catalog)
    assert run.status == "INCOMPLETE" and done["certifications"][0]["status"] == "INCOMPLETE"
    assert (run.rating, run.badge) == (None, None)
    assert "CERTIFICATION_TIMEOUT" in (run.error_message or "")
    with transaction(catalog) as session:
        rows = session.scalars(
            select(TestResultRow)
            .where(TestResultRow.run_id == run.id)
            .order_by(TestResultRow.position)
        ).all()
        job_row = session.get(Job, job.job_id)
        assert job_row is not None
        queued_for = run.started_at - job_row.created_at  # type: ignore[operator]
    outcomes = [row.outcome for row in rows]
    not_run = [row for row in rows if row.outcome == "NOT_RUN"]
    # Tests ran (the budget started with the run, not an hour earlier with the enqueue),
    # for the whole budget; every test after the cut is NOT_RUN, with the reason.
    assert queued_for >= an_hour
    assert "PASSED" in outcomes and not_run and len(outcomes) == 12, outcomes
    cut = outcomes.index("NOT_RUN")
    assert cut > 0 and set(outcomes[cut:]) == {"NOT_RUN"}, outcomes
    assert all("CERTIFICATION_TIMEOUT (1.5 s)" in (row.detail or "") for row in not_run)
    ran_for = (run.completed_at - run.started_at).total_seconds()  # type: ignore[operator]
    assert ran_for >= 1.5, ran_for
