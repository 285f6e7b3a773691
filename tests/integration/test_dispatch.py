"""The worker's dispatcher (`modelcert.jobs.dispatch`), on SQLite and PostgreSQL: a worker
claims no more than it can start across all its regions, two workers split a batch, one
thread polls whatever the number of regions, and on PostgreSQL an idle worker is woken by
the enqueue's NOTIFY rather than by polling."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import JobKind
from modelcert.jobs import dispatch
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.queues import WORKFLOW_NAME, dbos_table
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import CertificationRun
from tests.support.inprocess import StartWorker
from tests.support.waiting import wait_for
from tests.support.workers import StartProcesses, worker_processes

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")


def add_catalog(factory: sessionmaker[Session], models: int, latency_ms: int) -> list[str]:
    with transaction(factory) as session:
        repo.add_provider(
            session, slug="lab", kind="sim", regions=list(REGIONS), config={"seed": 3}
        )
        for index in range(models):
            repo.add_deployment(
                session,
                provider_slug="lab",
                provider_model_id=f"m{index}",
                options={"profile": "healthy-fast", "latency_ms": latency_ms},
            )
    return [f"lab/m{index}" for index in range(models)]


def held_by_executor(factory: sessionmaker[Session]) -> Counter[str]:
    """PENDING certifications (claimed or running) per executor, from DBOS's table."""
    with factory() as session:
        table = dbos_table(session.get_bind().dialect.name, "workflow_status")
        rows = session.execute(
            text(
                f"SELECT executor_id, COUNT(*) FROM {table} "
                "WHERE name = :name AND status = 'PENDING' GROUP BY executor_id"
            ),
            {"name": WORKFLOW_NAME},
        ).all()
    return Counter({executor: count for executor, count in rows})


def test_a_worker_claims_no_more_than_it_can_start_across_its_regions(
    factory: sessionmaker[Session], enqueuer: Enqueuer, start_worker: StartWorker
) -> None:
    """Concurrency 2 + prefetch 1 over three region queues: never more than 3 claimed at
    once (DBOS's per-queue pollers claimed up to 3 × 2 here), and all of it gets done."""
    models = add_catalog(factory, models=4, latency_ms=20)
    job = enqueuer.enqueue(
        factory, [(m, r) for m in models for r in REGIONS], kind=JobKind.MULTIPLE
    )
    assert job.job_id and len(job.queued) == 12
    worker = start_worker(
        regions=REGIONS, certification_concurrency=2, worker_prefetch=1, executor_id="w-one"
    )
    peak = 0
    while worker.pending_work():
        peak = max(peak, held_by_executor(factory)["w-one"])
        assert peak <= 3, peak
    worker.drain()
    assert peak >= 2  # it did run them in parallel, the bound was not vacuous
    with factory() as session:
        assert len(session.scalars(select(CertificationRun)).all()) == 12


def test_one_dispatcher_thread_serves_every_region(
    factory: sessionmaker[Session], start_worker: StartWorker
) -> None:
    """No DBOS poller thread per region queue: the idle cost does not grow with regions."""
    add_catalog(factory, models=1, latency_ms=0)
    many = tuple(f"region-{index}" for index in range(12))
    worker = start_worker(regions=many)
    names = [thread.name for thread in threading.enumerate()]
    assert names.count("dispatcher") == 1
    region_pollers = [name for name in names if name.startswith("queue-worker-model-certification")]
    assert region_pollers == []
    assert worker.state.regions == many


@pytest.fixture
def slow_backstop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle polling so rare that only a NOTIFY can explain a prompt start."""
    monkeypatch.setattr(dispatch, "IDLE_BACKSTOP_S", 120.0)


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_an_idle_worker_on_postgresql_is_woken_by_the_enqueue(
    factory: sessionmaker[Session],
    settings: Settings,
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    slow_backstop: None,
) -> None:
    """LISTEN/NOTIFY is PostgreSQL's (an idle SQLite worker polls)."""
    models = add_catalog(factory, models=1, latency_ms=0)
    worker = start_worker(regions=REGIONS[:1], queue_polling_interval_s=120.0)
    dispatcher = worker._dispatcher
    assert dispatcher is not None
    wait_for(lambda: dispatcher._listening, timeout=10, what="the dispatcher's LISTEN")
    wait_for(lambda: dispatcher.last_poll is not None, timeout=10, what="a first look")
    job = enqueuer.enqueue(factory, [(models[0], REGIONS[0])], kind=JobKind.SINGLE)
    assert job.job_id
    # Woken by the NOTIFY: started long before the 120 s backstop or poll interval.
    wait_for(lambda: dispatcher.claimed_total == 1, timeout=20, what="the claim")
    worker.drain()


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[StartProcesses]:
    with worker_processes(settings, tmp_path, REGIONS) as start:
        yield start


def test_two_workers_split_a_batch_and_neither_hoards(
    factory: sessionmaker[Session], enqueuer: Enqueuer, two_workers: StartProcesses
) -> None:
    """Two workers of concurrency 2 on three regions: each holds at most 2 at any time, so
    the batch is shared between them."""
    two_workers("w-a", "w-b", CERTIFICATION_CONCURRENCY="2")
    models = add_catalog(factory, models=4, latency_ms=60)
    job = enqueuer.enqueue(
        factory, [(m, r) for m in models for r in REGIONS], kind=JobKind.MULTIPLE
    )
    assert job.job_id

    def done() -> bool:
        held = held_by_executor(factory)
        assert all(count <= 2 for count in held.values()), held
        with factory() as session:
            finished = session.scalars(
                select(CertificationRun).where(CertificationRun.completed_at.is_not(None))
            ).all()
        return len(finished) == 12

    wait_for(done, timeout=120, what="the batch")
    with factory() as session:
        runs = session.scalars(select(CertificationRun)).all()
    split = Counter(run.executor_id for run in runs)
    assert set(split) == {"w-a", "w-b"} and min(split.values()) >= 3, split
