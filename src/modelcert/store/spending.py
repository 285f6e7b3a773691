"""What has been spent, as the budget check counts it (`cost.budget`): the cost of every
closed run, plus, for a run still RUNNING, the estimate it was started with (reserved,
so that certifications starting while others run do not all spend the same money).

`spending_now` reads it in the transaction that opens the run, after taking the budget
lock: two certifications starting at once cannot both see the room only one has."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, func, select, text
from sqlalchemy.orm import Session

from modelcert.domain import CertificationStatus, Spending
from modelcert.store.models import CertificationRun

# The PostgreSQL advisory lock every budget check takes, for its transaction (SQLite
# transactions here are BEGIN IMMEDIATE: one writer at a time already).
BUDGET_LOCK_KEY = 0x6D63_6275  # "mcbu"


def _committed() -> ColumnElement[float]:
    running = and_(
        CertificationRun.status == CertificationStatus.RUNNING.value,
        CertificationRun.cost_usd.is_(None),
    )
    return func.sum(case((running, CertificationRun.estimate_usd), else_=CertificationRun.cost_usd))


def spent_for_job(session: Session, job_id: str, *, besides: int | None = None) -> float:
    """What a job's runs have cost, or are expected to cost while they run (not counting
    the run `besides`)."""
    query = select(_committed()).where(CertificationRun.job_id == job_id)
    if besides is not None:
        query = query.where(CertificationRun.id != besides)
    return float(session.scalar(query) or 0.0)


def spent_since(session: Session, since: datetime, *, besides: int | None = None) -> float:
    """What every run started at or after `since` cost, or is expected to while it runs
    (not counting the run `besides`)."""
    query = select(_committed()).where(CertificationRun.started_at >= since)
    if besides is not None:
        query = query.where(CertificationRun.id != besides)
    return float(session.scalar(query) or 0.0)


def spending_now(
    session: Session,
    limits: Spending,
    *,
    job_id: str | None,
    now: datetime,
    besides: int | None = None,
) -> Spending:
    """`limits` with what was spent, read under the budget lock (held to the commit)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": BUDGET_LOCK_KEY})
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    job_spent = 0.0
    if limits.job_budget_usd is not None and job_id is not None:
        job_spent = spent_for_job(session, job_id, besides=besides)
    return replace(
        limits,
        job_spent_usd=job_spent,
        day_spent_usd=(
            spent_since(session, midnight, besides=besides)
            if limits.daily_budget_usd is not None
            else 0.0
        ),
    )
