"""Read-only queries behind the certification API: paged runs and certifications,
one certification with its history, one run with its tests, counts, served regions.

Functions take a Session and only read. Bad filters raise `UserError` / `NotFoundError`
naming the API's field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, not_, select
from sqlalchemy.orm import Session

from modelcert.errors import NotFoundError, UserError
from modelcert.store import repo
from modelcert.store.models import (
    Certification,
    CertificationRun,
    Deployment,
    Job,
    Provider,
)
from modelcert.validation import id_in_range, is_digit_id

RECENT_RUNS = 10

RunWithDeployment = tuple[CertificationRun, Deployment]


@dataclass(frozen=True)
class Paging:
    """Which page (from 1) of how many items."""

    page: int
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


def check_ref(ref: str | int, field: str) -> None:
    """`NotFoundError` naming `field` for a ref no deployment can have: digits beyond the
    id columns' range, or digits that are not ASCII (`²`: `str.isdigit` says yes and
    `int()` refuses it). Checked before any lookup, so that no driver sees them."""
    text = str(ref).strip()
    if is_digit_id(text):
        if not id_in_range(int(text)):
            raise NotFoundError(f"unknown deployment id {text}", field=field)
    elif text.isdigit():
        raise NotFoundError(f"unknown deployment {text!r}", field=field)


def find_deployment(session: Session, ref: str, field: str = "modelId") -> Deployment:
    """`repo.find_deployment`, its errors naming the API's field."""
    check_ref(ref, field)
    try:
        return repo.find_deployment(session, ref)
    except UserError as exc:
        raise type(exc)(exc.message, field=field) from None


def _count(session: Session, query: Select[*tuple[Any, ...]]) -> int:
    return session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0


def _runs_query() -> Select[CertificationRun, Deployment]:
    return select(CertificationRun, Deployment).join(
        Deployment, CertificationRun.deployment_id == Deployment.id
    )


def run_page(
    session: Session,
    paging: Paging,
    *,
    status: str | None = None,
    region: str | None = None,
    model_id: str | None = None,
) -> tuple[list[RunWithDeployment], int]:
    """Runs matching the filters, newest first: one page and the number of matches."""
    query = _runs_query()
    if status:
        query = query.where(CertificationRun.status == status)
    if region:
        query = query.where(CertificationRun.region == region)
    if model_id:
        query = query.where(CertificationRun.deployment_id == find_deployment(session, model_id).id)
    total = _count(session, query)
    page = session.execute(
        query.order_by(CertificationRun.id.desc()).offset(paging.offset).limit(paging.page_size)
    )
    return [(run, deployment) for run, deployment in page], total


def recent_runs(session: Session, limit: int = RECENT_RUNS) -> list[RunWithDeployment]:
    """The latest runs, newest first."""
    rows = session.execute(_runs_query().order_by(CertificationRun.id.desc()).limit(limit))
    return [(run, deployment) for run, deployment in rows]


def certification_page(
    session: Session,
    paging: Paging,
    *,
    now: datetime,
    status: str | None = None,
    region: str | None = None,
    model_id: str | None = None,
    provider: str | None = None,
    valid: bool | None = None,
) -> tuple[list[Certification], int]:
    """Current certifications matching the filters, by provider, model and region."""
    query = select(Certification).join(Deployment).join(Provider)
    if status:
        query = query.where(Certification.status == status)
    if region:
        query = query.where(Certification.region == region)
    if model_id:
        query = query.where(Certification.deployment_id == find_deployment(session, model_id).id)
    if provider:
        query = query.where(Provider.id == repo.get_provider(session, provider).id)
    if valid is not None:
        clause = Certification.valid_clause(now)
        query = query.where(clause if valid else not_(clause))
    total = _count(session, query)
    ordered = query.order_by(
        Provider.slug, Deployment.provider_model_id, Certification.region, Certification.id
    )
    rows = session.scalars(ordered.offset(paging.offset).limit(paging.page_size)).unique()
    return list(rows), total


def certification_detail(
    session: Session, model_id: str, region: str, *, runs: int
) -> tuple[Certification, list[RunWithDeployment]]:
    """The current certification of a deployment in a region, and its latest runs."""
    deployment = find_deployment(session, model_id, field="deploymentId")
    certification = session.scalar(
        select(Certification).where(
            Certification.deployment_id == deployment.id, Certification.region == region
        )
    )
    if certification is None:
        raise NotFoundError(
            f"{deployment.provider.slug}/{deployment.provider_model_id} has never been "
            f"certified in region {region!r}",
            field="region",
        )
    history = repo.run_history(session, deployment.id, region, limit=runs)
    return certification, [(run, deployment) for run in history]


def require_job(session: Session, job_id: str) -> Job:
    """The job `job_id`; `NotFoundError` naming `jobId` if there is none."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"unknown job {job_id!r}", field="jobId")
    return job


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def run_detail(session: Session, run_id: int) -> RunWithDeployment:
    """One run (its tests load with it) and its deployment."""
    row = session.execute(_runs_query().where(CertificationRun.id == run_id)).first()
    if row is None:
        raise NotFoundError(f"unknown run {run_id}", field="runId")
    return row[0], row[1]


def certification_counts(session: Session, now: datetime) -> tuple[dict[str, int], int]:
    """Current certifications by status, and how many are valid now."""
    rows = session.execute(
        select(Certification.status, func.count()).group_by(Certification.status)
    )
    by_status = {str(status): int(count) for status, count in rows}
    valid = session.scalar(
        select(func.count()).select_from(Certification).where(Certification.valid_clause(now))
    )
    return by_status, valid or 0


def active_providers(session: Session) -> list[Provider]:
    """Active providers, by slug."""
    query = select(Provider).where(Provider.active.is_(True)).order_by(Provider.slug)
    return list(session.scalars(query))


def check_served(session: Session, regions: Sequence[str], provider: str | None) -> None:
    """Every region must be served by an active provider (`provider` alone, when given)."""
    providers = [repo.get_provider(session, provider)] if provider else active_providers(session)
    served = {region for p in providers for region in p.regions}
    unknown = [region for region in regions if region not in served]
    if unknown:
        where = f"provider {provider!r}" if provider else "any active provider"
        raise NotFoundError(
            f"region {unknown[0]!r} is not served by {where} "
            f"(served: {', '.join(sorted(served)) or 'none'})",
            field="regions",
        )
