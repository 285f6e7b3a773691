"""Scheduled re-certification with real workers, on SQLite and PostgreSQL: a schedule
firing every second re-queues an expiring certification once, at low priority, and two
worker processes running the same schedule still run each tick once (two DBOS runtimes:
two processes). What one worker shows runs in the test process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import Priority
from modelcert.jobs.queues import PRIORITY_VALUES, dbos_table
from modelcert.jobs.schedule import SCHEDULE_NAME, TICK_WORKFLOW_NAME
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, Job, utcnow
from tests.support.inprocess import in_process_workers
from tests.support.waiting import wait_for
from tests.support.workers import StartProcesses, worker_processes

REGIONS = ("us-east-1", "eu-west-1")
EVERY_SECOND = "* * * * * *"  # DBOS's cron takes an optional seconds field first


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[StartProcesses]:
    with worker_processes(settings, tmp_path, REGIONS) as start:
        yield start


def _certify(session: Session, deployment_id: int, region: str, expires_at: datetime) -> None:
    session.add(
        Certification(
            deployment_id=deployment_id,
            region=region,
            status="CERTIFIED",
            certified_at=expires_at - timedelta(days=7),
            expires_at=expires_at,
            completed_at=expires_at - timedelta(days=7),
        )
    )


def _expiries(factory: sessionmaker[Session]) -> dict[str, tuple[str, datetime | None]]:
    with transaction(factory) as session:
        return {
            f"{c.deployment.provider_model_id}@{c.region}": (c.status, c.expires_at)
            for c in session.scalars(select(Certification))
        }


def _scheduler_jobs(factory: sessionmaker[Session]) -> list[Job]:
    with transaction(factory) as session:
        return list(session.scalars(select(Job).where(Job.created_by == "scheduler")))


def _ticks(*logs: str) -> list[dict[str, Any]]:
    lines = [line for log in logs for line in log.splitlines() if line.startswith("{")]
    events = [json.loads(line) for line in lines]
    return [e for e in events if e.get("event") == "recertify_tick"]


def test_an_expiring_certification_is_requeued_once_at_low_priority_and_completes(
    factory: sessionmaker[Session], workers: StartProcesses
) -> None:
    now = utcnow()
    with transaction(factory) as session:
        repo.add_provider(
            session, slug="lab", kind="sim", regions=list(REGIONS), config={"seed": 7}
        )
        options = {"profile": "healthy-fast", "latency_ms": 20}
        quick = repo.add_deployment(
            session, provider_slug="lab", provider_model_id="quick", options=options
        )
        retired = repo.add_deployment(
            session, provider_slug="lab", provider_model_id="retired", options=options
        )
        retired.active = False
        _certify(session, quick.id, "us-east-1", now + timedelta(hours=2))  # due
        _certify(session, quick.id, "eu-west-1", now + timedelta(days=3))  # not yet
        _certify(session, retired.id, "us-east-1", now + timedelta(hours=2))  # inactive
    before = _expiries(factory)

    first, second = workers("w-sched-1", "w-sched-2", MODELCERT_RECERTIFY_SCHEDULE=EVERY_SECOND)

    def recertified() -> bool:
        jobs = _scheduler_jobs(factory)
        return bool(jobs) and jobs[0].status == "COMPLETED"

    wait_for(recertified, what="the scheduled re-certification to complete")
    # A few more ticks, at least two after the certification: nothing else is due.
    seen = len(_ticks(first.log(), second.log()))
    wait_for(
        lambda: len(_ticks(first.log(), second.log())) >= max(4, seen + 2),
        timeout=30,
        what="more ticks",
    )

    [job] = _scheduler_jobs(factory)
    assert (job.kind, job.priority, job.total, job.succeeded) == ("RECERTIFY", "low", 1, 1)
    after = _expiries(factory)
    status, expires_at = after["quick@us-east-1"]
    assert status == "CERTIFIED" and expires_at is not None
    assert expires_at > now + timedelta(days=6)
    assert after["quick@eu-west-1"] == before["quick@eu-west-1"]
    assert after["retired@us-east-1"] == before["retired@us-east-1"]

    with factory() as session:
        dialect = session.get_bind().dialect.name
        workflow_status = dbos_table(dialect, "workflow_status")
        priorities = session.execute(
            text(f"SELECT priority FROM {workflow_status} WHERE workflow_uuid LIKE :job"),
            {"job": f"{job.id}:%"},
        ).scalars()
        assert list(priorities) == [PRIORITY_VALUES[Priority.LOW]]
        tick_ids = session.execute(
            text(f"SELECT workflow_uuid FROM {workflow_status} WHERE name = :name"),
            {"name": TICK_WORKFLOW_NAME},
        ).scalars()
        tick_ids = list(tick_ids)

    # Both workers run DBOS's scheduler, and each tick ran on one of them only.
    ticks = _ticks(first.log(), second.log())
    scheduled = [tick["scheduled_at"] for tick in ticks]
    assert len(scheduled) >= 4
    assert len(set(scheduled)) == len(scheduled), "a tick ran twice"
    assert all(tid.startswith(f"sched-{SCHEDULE_NAME}-") for tid in tick_ids)
    assert len(tick_ids) >= len(scheduled)
    assert sum(tick["queued"] for tick in ticks) == 1
    assert [t["queued_targets"] for t in ticks if t["queued"]] == [["lab/quick@us-east-1"]]


def test_a_bad_cron_stops_the_worker_with_the_variable_named(workers: StartProcesses) -> None:
    # A process: what `modelcert worker` says about its environment before it exits.
    with pytest.raises(RuntimeError, match="MODELCERT_RECERTIFY_SCHEDULE: must be a cron"):
        workers("w-bad-cron", MODELCERT_RECERTIFY_SCHEDULE="every ten minutes")


def test_off_removes_the_stored_schedule(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    def schedules() -> list[str]:
        with factory() as session:
            table = dbos_table(session.get_bind().dialect.name, "workflow_schedules")
            return list(session.execute(text(f"SELECT schedule_name FROM {table}")).scalars())

    # One worker after the other, in this process (one DBOS runtime at a time).
    with in_process_workers(settings) as start:
        start(regions=REGIONS, executor_id="w-on", recertify_schedule="*/10 * * * *")
        assert schedules() == [SCHEDULE_NAME]
    with in_process_workers(settings) as start:
        start(regions=REGIONS, executor_id="w-off", recertify_schedule="off")
        assert schedules() == []
