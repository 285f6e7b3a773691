"""What has been spent, as the budget check counts it (`cost.budget`): the cost of every
closed run, plus, for a run still RUNNING, the estimate it was started with (reserved,
so that certifications starting while others run do not all spend the same money)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from modelcert.domain import CertificationStatus
from modelcert.store.models import CertificationRun


def _committed() -> ColumnElement[float]:
    running = and_(
        CertificationRun.status == CertificationStatus.RUNNING.value,
        CertificationRun.cost_usd.is_(None),
    )
    return func.sum(case((running, CertificationRun.estimate_usd), else_=CertificationRun.cost_usd))


def spent_for_job(session: Session, job_id: str) -> float:
    """What a job's runs have cost, or are expected to cost while they run."""
    total = session.scalar(select(_committed()).where(CertificationRun.job_id == job_id))
    return float(total or 0.0)


def spent_since(session: Session, since: datetime) -> float:
    """What every run started at or after `since` cost, or is expected to while it runs."""
    total = session.scalar(select(_committed()).where(CertificationRun.started_at >= since))
    return float(total or 0.0)
