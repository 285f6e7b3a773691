"""What a job is doing: totals and one row per certification it asked for (the API, the
dashboard and the CLI show this one summary)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelcert.cost.budget import total_cost
from modelcert.errors import NotFoundError
from modelcert.store.models import Certification, CertificationRun, Deployment, Job, TestResultRow


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def deployment_label(deployment: Deployment) -> str:
    """`provider/model-id`, the name shown everywhere."""
    return f"{deployment.provider.slug}/{deployment.provider_model_id}"


def job_summary(session: Session, job_id: str) -> dict[str, Any]:
    """A job's status and totals, and one row per (deployment, region) it asked for: its
    latest run in this job (with the tests stored so far), or, before any run, the
    current certification's status.

    Each row is named from its own run's deployment (or the certification's): the
    current certification row of a pair points at the latest job only, so a job whose
    pair was certified again later still has its names."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"unknown job {job_id!r}", field="jobId")
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    certifications = session.execute(
        select(Certification, Deployment)
        .join(Deployment, Deployment.id == Certification.deployment_id)
        .where(Certification.job_id == job_id)
    )
    for cert, deployment in certifications:
        rows[(cert.deployment_id, cert.region)] = {
            "deploymentId": cert.deployment_id,
            "deployment": deployment_label(deployment),
            "region": cert.region,
            "status": cert.status,
            "runId": None,
            "testsDone": 0,
        }
    counted = session.execute(
        select(TestResultRow.run_id, func.count())
        .join(CertificationRun, CertificationRun.id == TestResultRow.run_id)
        .where(CertificationRun.job_id == job_id)
        .group_by(TestResultRow.run_id)
    )
    done = {run_id: int(count) for run_id, count in counted}
    runs = session.execute(
        select(CertificationRun, Deployment)
        .join(Deployment, CertificationRun.deployment_id == Deployment.id)
        .where(CertificationRun.job_id == job_id)
        .order_by(CertificationRun.id)
    )
    costs: list[float | None] = []  # of every run of the job, retried ones included
    for run, deployment in runs:
        row = rows.setdefault((run.deployment_id, run.region), {})
        row.update(
            {
                "deploymentId": run.deployment_id,
                "deployment": deployment_label(deployment),
                "region": run.region,
                "status": run.status,
                "runId": run.id,
                "rating": run.rating,
                "badge": run.badge,
                "testsPassed": run.tests_passed,
                "testsTotal": run.tests_total,
                "testsDone": done.get(run.id, 0),
                "errorCategory": run.error_category,
                "errorMessage": run.error_message,
                "executorId": run.executor_id,
                "startedAt": _iso(run.started_at),
                "completedAt": _iso(run.completed_at),
                "simulated": run.simulated,
                "costUsd": run.cost_usd,
            }
        )
        costs.append(run.cost_usd)
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
        "suites": job.suites,
        "smoke": job.smoke,
        "budgetUsd": job.budget_usd,
        "costUsd": total_cost(costs),
        "certifications": sorted(rows.values(), key=lambda r: (r["deploymentId"], r["region"])),
    }
