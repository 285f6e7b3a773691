"""Surviving the database and the operator, on SQLite and PostgreSQL: steps that are safe
to execute twice, an execution that lost its workflow stops, writes that wait out an
unreachable database, a reaper that only trusts what it watched, and a worker that starts
during an outage. (Worker processes and SIGTERM: test_queue_workers.py; the whole
together under faults: tests/chaos.)"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from modelcert.certify.engine import CertificationEngine, CertificationRequest, InFlight
from modelcert.domain import CertificationStatus, JobKind
from modelcert.errors import StoreUnavailable
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.job_summary import job_summary
from modelcert.jobs.queues import dbos_table
from modelcert.jobs.reaper import SilenceWatch, write_heartbeat
from modelcert.providers.sim import CALL_LOG_ENV
from modelcert.settings import Settings
from modelcert.store import db, repo
from modelcert.store.db import make_engine, make_session_factory, transaction
from modelcert.store.models import Certification, CertificationRun, Job, TestResultRow
from modelcert.store.runs import RunStore
from modelcert.worker.main import Worker
from tests.support.inprocess import StartWorker, fast_settings
from tests.support.waiting import wait_for
from tests.support.workers import free_port

REGION = "us-east-1"


@pytest.fixture
def lab(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=[REGION], config={"seed": 3})
        repo.add_deployment(
            session,
            provider_slug="lab",
            provider_model_id="steady",
            options={"profile": "healthy-fast", "latency_ms": 150},
        )
    return factory


def rows_by_test(factory: sessionmaker[Session], run_id: int) -> dict[str, int]:
    with factory() as session:
        rows = session.execute(
            select(TestResultRow.test_id, TestResultRow.id).where(TestResultRow.run_id == run_id)
        ).all()
    return {test_id: row_id for test_id, row_id in rows}


def only_run(factory: sessionmaker[Session]) -> CertificationRun:
    with factory() as session:
        return session.scalars(select(CertificationRun)).one()


def calls_paid(directory: Path) -> int:
    lines = [
        json.loads(line)
        for path in directory.glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    return sum(1 for line in lines if line["event"] == "start")


def test_a_repeated_prepare_reopens_its_run_and_a_repeated_finish_counts_once(
    lab: sessionmaker[Session], settings: Settings, enqueuer: Enqueuer
) -> None:
    """A step killed after its write and before its checkpoint runs again: the run it
    opened is reopened (not a second one left RUNNING), the verdict counted once."""
    job = enqueuer.enqueue(lab, [("lab/steady", REGION)], kind=JobKind.SINGLE)
    assert job.job_id
    engine = CertificationEngine(RunStore(lab), settings)
    request = CertificationRequest("lab/steady", REGION, job.job_id)

    async def twice() -> None:
        first = await engine.prepare(request, "wf-1")
        again = await engine.prepare(request, "wf-1")
        assert again.run_id == first.run_id
        results = [await engine.run_test(first, i, True) for i in range(len(first.plan.tests))]
        await engine.finish(first, results)
        await engine.finish(again, results)  # the repeat finds the run closed
        # A late repeat of prepare does not reopen a finished run either.
        late = await engine.prepare(request, "wf-1")
        assert late.run_id == first.run_id
        engine.store.abort_run(first.run_id, CertificationStatus.ERROR, "late", job_id=job.job_id)
        await engine.aclose()

    asyncio.run(twice())
    with transaction(lab) as session:
        assert len(session.scalars(select(CertificationRun)).all()) == 1
        run = session.scalars(select(CertificationRun)).one()
        assert run.status == "CERTIFIED" and run.run_key == "wf-1"
        cert = session.scalars(select(Certification)).one()
        assert cert.status == "CERTIFIED"
        summary = job_summary(session, job.job_id)
        assert (summary["processed"], summary["succeeded"], summary["status"]) == (
            1,
            1,
            "COMPLETED",
        )


def test_a_test_stored_before_a_crash_is_not_paid_for_again(
    lab: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed between storing a test and DBOS's checkpoint of its step: on resume the
    stored result is read back, not asked of the provider again."""
    job = enqueuer.enqueue(lab, [("lab/steady", REGION)], kind=JobKind.SINGLE)
    assert job.job_id
    first = start_worker(regions=(REGION,), executor_id="w-crash")
    first.drain()
    first.stop(grace_s=0)
    run = only_run(lab)
    before = rows_by_test(lab, run.id)
    assert len(before) == 12
    # Put the database back to the moment of the crash: every test stored, the last
    # seven steps' checkpoints and the verdict not; the workflow still PENDING there.
    with transaction(lab) as session:
        dialect = session.get_bind().dialect.name
        outputs, status = (
            dbos_table(dialect, "operation_outputs"),
            dbos_table(dialect, "workflow_status"),
        )
        workflow_id = f"{job.job_id}:{run.deployment_id}@{REGION}"
        ids = session.execute(
            text(
                f"SELECT function_id FROM {outputs} WHERE workflow_uuid = :id "
                "AND function_name IN ('test', 'finish') ORDER BY function_id"
            ),
            {"id": workflow_id},
        ).scalars()
        lost = list(ids)[-8:]  # 7 tests and the finish
        for function_id in lost:
            session.execute(
                text(f"DELETE FROM {outputs} WHERE workflow_uuid = :id AND function_id = :f"),
                {"id": workflow_id, "f": function_id},
            )
        session.execute(
            text(
                f"UPDATE {status} SET status = 'PENDING', output = NULL, "
                "executor_id = 'w-crash' WHERE workflow_uuid = :id"
            ),
            {"id": workflow_id},
        )
        session.execute(
            update(CertificationRun).values(status="RUNNING", completed_at=None, score=None)
        )
        session.execute(update(Certification).values(status="RUNNING"))
        session.execute(
            update(Job)
            .where(Job.id == job.job_id)
            .values(status="RUNNING", processed=0, succeeded=0, completed_at=None)
        )
    monkeypatch.setenv(CALL_LOG_ENV, str(tmp_path))
    start_worker(regions=(REGION,), executor_id="w-crash").drain()  # recovers its workflow

    assert calls_paid(tmp_path) == 0  # all 12 were stored: none asked again
    assert rows_by_test(lab, run.id) == before
    with transaction(lab) as session:
        finished = session.get(CertificationRun, run.id)
        assert finished is not None and finished.status == "CERTIFIED"
        summary = job_summary(session, job.job_id)
        assert (summary["processed"], summary["succeeded"]) == (1, 1)


def test_an_execution_that_lost_its_workflow_stops_at_its_next_test(
    lab: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once its workflow is handed to another execution (the reaper's resume, a drain's
    hand-back), an execution makes no further provider call and writes nothing more: no
    ERROR, no verdict. The hand-off lands between two tests (DBOS's own ownership check
    covers one landing during a test: that test's checkpoint is refused)."""
    job = enqueuer.enqueue(lab, [("lab/steady", REGION)], kind=JobKind.SINGLE)
    handed_off = threading.Event()
    note_test = InFlight.note_test

    def hand_off_before_the_fifth(self: InFlight, key: str, test_id: str) -> None:
        if len(rows_of_job()) == 4 and not handed_off.is_set():
            with transaction(lab) as session:
                table = dbos_table(session.get_bind().dialect.name, "workflow_status")
                session.execute(
                    text(f"UPDATE {table} SET owner_xid = 'another' WHERE workflow_uuid = :id"),
                    {"id": key},
                )
            handed_off.set()
        note_test(self, key, test_id)

    def rows_of_job() -> list[int]:
        with lab() as session:
            return list(session.scalars(select(TestResultRow.id)))

    monkeypatch.setattr(InFlight, "note_test", hand_off_before_the_fifth)
    worker = start_worker(regions=(REGION,), executor_id="w-stale")
    wait_for(handed_off.is_set, what="the hand-off")
    wait_for(lambda: len(worker.in_flight) == 0, what="the execution to end")
    time.sleep(0.5)  # 150 ms tests: had it gone on, more rows would be there by now
    assert len(rows_of_job()) == 4  # the fifth test was not run, its row not written
    run = only_run(lab)
    assert run.status == "RUNNING" and run.error_message is None  # nothing of ours written
    assert job.job_id


# What a certification with no suites, smoke mode or budget reads (`RunStore.load_inputs`).
NO_OPTIONS: dict[str, Any] = {
    "job_id": None,
    "suites": None,
    "smoke": False,
    "budget_usd": None,
    "daily_budget_usd": None,
}


def test_writes_wait_out_an_unreachable_database(tmp_path: Path) -> None:
    """A SQLite file whose directory is away for half a second (a database that does not
    answer): the write waits and lands when it is back; with a bounded patience it gives
    up with StoreUnavailable, not an internal error."""
    here = tmp_path / "db"
    here.mkdir()
    url = f"sqlite:///{here / 'modelcert.sqlite'}"
    database = make_engine(url)
    db.upgrade(database)
    with transaction(make_session_factory(database)) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=[REGION], config={})
        deployment = repo.add_deployment(session, provider_slug="lab", provider_model_id="m")
        deployment_id = deployment.id
    database.dispose()
    away = tmp_path / "away"
    here.rename(away)
    waiting = make_engine(url)
    store = RunStore(make_session_factory(waiting), sleep=time.sleep)
    back = threading.Timer(0.5, lambda: away.rename(here))
    back.start()
    started = time.monotonic()
    run_id, _ = store.open_run(
        deployment_id, REGION, run_key="wf", simulated=True, job_id=None, executor_id=None
    )
    assert time.monotonic() - started >= 0.4
    assert (run_id, None) == store.open_run(
        deployment_id, REGION, run_key="wf", simulated=True, job_id=None, executor_id=None
    )
    waiting.dispose()

    shutil.rmtree(here)
    impatient = RunStore(make_session_factory(make_engine(url)), patience_s=0.3)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="database unavailable"):
        impatient.load_inputs("lab/m", REGION, **NO_OPTIONS)
    assert time.monotonic() - started < 3
    closed = RunStore(make_session_factory(make_engine(url)))
    closed.close()  # a stopping worker: no more waiting
    with pytest.raises(StoreUnavailable):
        closed.load_inputs("lab/m", REGION, **NO_OPTIONS)


def test_the_reaper_trusts_only_a_silence_it_watched_without_interruption(
    factory: sessionmaker[Session],
) -> None:
    now = [100.0]
    watch = SilenceWatch(clock=lambda: now[0])

    def beat(executor: str) -> None:
        with transaction(factory) as session:
            write_heartbeat(session, executor, (REGION,), 1, 0)

    def observe() -> list[str]:
        with transaction(factory) as session:
            return watch.observe(session, "reaper", dead_after_s=10)

    beat("reaper")
    beat("live")
    beat("dead")
    assert observe() == []  # first sight: nothing is known yet
    now[0] += 6
    beat("live")
    assert observe() == []
    now[0] += 6  # "dead" silent for 12 s of watching; "live" beat 6 s ago
    assert observe() == ["dead"]
    # An outage of the reaper's own database access: what it saw before is void, however
    # old the heartbeats now look (the live one could not beat meanwhile either).
    watch.interrupt()
    now[0] += 60
    assert observe() == []
    now[0] += 9
    beat("live")
    assert observe() == []
    now[0] += 2
    assert observe() == ["dead"]  # watched 11 s since the outage


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_worker_started_during_an_outage_is_not_ready_until_the_database_returns(
    database: str, tmp_path: Path
) -> None:
    if database == "sqlite":
        directory = tmp_path / "not-yet"
        settings = fast_settings(f"sqlite:///{directory / 'modelcert.sqlite'}")
    else:  # nothing listens on this port
        settings = fast_settings(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    worker = Worker(settings, regions=(REGION,), executor_id="w-early", health_port=0)
    started: list[bool] = []
    thread = threading.Thread(target=lambda: started.append(worker.start()), daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.health.port != 0, what="the health server")
        status, body = _get(worker.health.port, "/ready")
        assert status == 503 and any("database" in r for r in body["reasons"]), body
        if database == "sqlite":
            directory.mkdir()  # the database is back
            thread.join(timeout=30)
            assert started == [True]
            wait_for(lambda: _get(worker.health.port, "/ready")[0] == 200, what="ready")
        else:
            worker.request_stop()  # a stop during the wait ends it cleanly
            thread.join(timeout=30)
            assert started == [False]
    finally:
        worker.stop(grace_s=0)


class _SlowWrites(RunStore):
    """The first writes of tests take a second each: a database being waited for."""

    slow = 3

    def record_test(self, run_id: int, position: int, result: Any) -> None:
        if self.slow:
            self.slow -= 1
            time.sleep(1.0)
        super().record_test(run_id, position, result)


def test_time_spent_waiting_for_the_database_is_not_taken_from_the_budget(
    lab: sessionmaker[Session], settings: Settings
) -> None:
    """CERTIFICATION_TIMEOUT bounds the model's time: 3 s of writes waiting for the
    database inside a 1.5 s budget do not cut the run short (INCOMPLETE)."""
    with transaction(lab) as session:
        repo.add_deployment(
            session,
            provider_slug="lab",
            provider_model_id="quick",
            options={"profile": "healthy-fast", "latency_ms": 0},
        )
    engine = CertificationEngine(
        _SlowWrites(lab), settings.model_copy(update={"certification_timeout_ms": 1500})
    )

    async def certify() -> Any:
        try:
            return await engine.certify(CertificationRequest("lab/quick", REGION))
        finally:
            await engine.aclose()

    outcome = asyncio.run(certify())
    assert outcome.score.status is CertificationStatus.CERTIFIED, outcome.score
    assert outcome.duration_s >= 3
