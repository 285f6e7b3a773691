"""Cancel a job: its queued certifications never start; running ones stop between tests."""

from __future__ import annotations

from dbos import DBOSClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import CertificationStatus, JobStatus
from modelcert.errors import NotFoundError, UserError
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, Job, utcnow

# DBOS workflow statuses of work not finished yet.
_UNFINISHED = ("ENQUEUED", "DELAYED", "PENDING")
_PENDING = (CertificationStatus.QUEUED.value, CertificationStatus.RUNNING.value)


def cancel_job(factory: sessionmaker[Session], client: DBOSClient, job_id: str) -> int:
    """Cancel every unfinished certification of a job; returns how many were cancelled."""
    with transaction(factory) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"unknown job {job_id!r}", field="jobId")
        if JobStatus(job.status).is_final:
            raise UserError(f"job {job_id} is already {job.status}", field="jobId")
    workflows = client.list_workflows(
        workflow_id_prefix=f"{job_id}:",
        status=list(_UNFINISHED),
        load_input=False,
        load_output=False,
    )
    for workflow in workflows:
        # DBOS marks it CANCELLED: a queued one is never dequeued, a running one stops
        # before its next step (the test in flight finishes or times out first).
        client.cancel_workflow(workflow.workflow_id)
    now = utcnow()
    with transaction(factory) as session:
        cancelled = CertificationStatus.CANCELLED.value
        session.execute(
            update(Certification)
            .where(Certification.job_id == job_id, Certification.status.in_(_PENDING))
            .values(status=cancelled, completed_at=now, error_message="cancelled")
        )
        session.execute(
            update(CertificationRun)
            .where(
                CertificationRun.job_id == job_id,
                CertificationRun.status == CertificationStatus.RUNNING.value,
            )
            .values(status=cancelled, completed_at=now, error_message="cancelled")
        )
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        job.status = JobStatus.CANCELLED.value
        job.completed_at = now
    return len(workflows)
