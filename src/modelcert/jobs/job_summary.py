"""What a job is doing: totals and one row per certification it asked for."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelcert.errors import NotFoundError
from modelcert.store.models import Certification, CertificationRun, Job


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_summary(session: Session, job_id: str) -> dict[str, Any]:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"unknown job {job_id!r}", field="jobId")
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for cert in session.scalars(select(Certification).where(Certification.job_id == job_id)):
        rows[(cert.deployment_id, cert.region)] = {
            "deploymentId": cert.deployment_id,
            "deployment": f"{cert.deployment.provider.slug}/{cert.deployment.provider_model_id}",
            "region": cert.region,
            "status": cert.status,
            "runId": None,
        }
    runs = session.scalars(
        select(CertificationRun)
        .where(CertificationRun.job_id == job_id)
        .order_by(CertificationRun.id)
    )
    for run in runs:
        row = rows.setdefault(
            (run.deployment_id, run.region),
            {
                "deploymentId": run.deployment_id,
                "deployment": None,
                "region": run.region,
            },
        )
        row.update(
            {
                "status": run.status,
                "runId": run.id,
                "rating": run.rating,
                "badge": run.badge,
                "testsPassed": run.tests_passed,
                "testsTotal": run.tests_total,
                "errorCategory": run.error_category,
                "errorMessage": run.error_message,
                "executorId": run.executor_id,
                "startedAt": _iso(run.started_at),
                "completedAt": _iso(run.completed_at),
                "simulated": run.simulated,
            }
        )
    return {
        "jobId": job.id,
        "kind": job.kind,
        "status": job.status,
        "priority": job.priority,
        "createdBy": job.created_by,
        "scope": job.scope,
        "total": job.total,
        "processed": job.processed,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "createdAt": _iso(job.created_at),
        "startedAt": _iso(job.started_at),
        "completedAt": _iso(job.completed_at),
        "certifications": sorted(rows.values(), key=lambda r: (r["deploymentId"], r["region"])),
    }
