"""Work queued by modelcert 0.1 (a plain-function workflow, another application version)
is carried over by the first 0.2 worker: queued certifications run, one a 0.1 worker was
running starts over (its open run closed), and nothing stays RUNNING or blocks its pair."""

from __future__ import annotations

from dbos import DBOSClient, EnqueueOptions
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import JobStatus, Priority
from modelcert.jobs.enqueue import deduplication_id, workflow_id_for
from modelcert.jobs.queues import PRIORITY_VALUES, WORKFLOW_NAME, dbos_table, queue_name
from modelcert.jobs.workflows import adopt_legacy_certifications
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, Job
from modelcert.store.runs import begin_run
from tests.support.inprocess import StartWorker

REGION = "us-east-1"
OLD_VERSION = "modelcert-0.1.0"


def enqueue_as_0_1(engine: Engine, settings: Settings, job_id: str, deployment_id: int) -> str:
    """What modelcert 0.1's enqueuer wrote: no class, no instance, its own version."""
    client = DBOSClient(system_database_engine=engine)
    try:
        client.register_queue(queue_name(settings, REGION), on_conflict="always_update")
        workflow_id = workflow_id_for(job_id, deployment_id, REGION)
        options: EnqueueOptions = {
            "workflow_name": WORKFLOW_NAME,
            "queue_name": queue_name(settings, REGION),
            "workflow_id": workflow_id,
            "deduplication_id": deduplication_id(deployment_id, REGION),
            "priority": PRIORITY_VALUES[Priority.NORMAL],
            "app_version": OLD_VERSION,
        }
        client.enqueue(options, job_id, deployment_id, REGION)
    finally:
        client.destroy()
    return workflow_id


def test_certifications_queued_by_0_1_are_run_by_0_2(
    engine: Engine,
    factory: sessionmaker[Session],
    settings: Settings,
    start_worker: StartWorker,
) -> None:
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=[REGION])
        ids = [
            repo.add_deployment(
                session,
                provider_slug="lab",
                provider_model_id=name,
                options={"profile": "healthy-fast"},
            ).id
            for name in ("queued", "interrupted")
        ]
        job = Job(kind="MULTIPLE", total=2, status=JobStatus.RUNNING.value)
        session.add(job)
        session.flush()
        job_id = job.id
    queued, interrupted = (enqueue_as_0_1(engine, settings, job_id, d) for d in ids)
    # A 0.1 worker had started the second one, then died.
    with transaction(factory) as session:
        begin_run(session, ids[1], REGION, simulated=True, job_id=job_id, executor_id="old-worker")
        session.execute(
            text(
                f"UPDATE {dbos_table(engine.dialect.name, 'workflow_status')} "
                "SET status = 'PENDING', executor_id = 'old-worker' WHERE workflow_uuid = :id"
            ),
            {"id": interrupted},
        )

    start_worker(regions=(REGION,)).drain()

    with transaction(factory) as session:
        job_row = session.get(Job, job_id)
        assert job_row is not None
        assert (job_row.status, job_row.processed, job_row.succeeded) == ("COMPLETED", 2, 2)
        certifications = {c.deployment_id: c for c in session.scalars(select(Certification))}
        assert {c.status for c in certifications.values()} == {"CERTIFIED"}
        runs = session.scalars(
            select(CertificationRun).where(CertificationRun.deployment_id == ids[1])
        ).all()
        statuses = sorted(run.status for run in runs)
        assert statuses == ["CANCELLED", "CERTIFIED"]
        cancelled = next(run for run in runs if run.status == "CANCELLED")
        assert "upgrade" in (cancelled.error_message or "")
    # Carried over once: a second worker start finds nothing left to adopt.
    assert adopt_legacy_certifications(engine) == 0
    assert queued != interrupted
