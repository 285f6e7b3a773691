"""Queries and writes on the store. Functions take a Session and leave the transaction
to the caller, except where a docstring says otherwise."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from modelcert.certify.runner import TestResult
from modelcert.certify.scoring import Score
from modelcert.domain import (
    CERTIFICATION_VALIDITY,
    DEFAULT_REGIONS,
    GLOBAL_REGION,
    Capabilities,
    CertificationStatus,
    InferenceType,
)
from modelcert.errors import NotFoundError, UserError
from modelcert.providers.registry import PROVIDER_KINDS
from modelcert.store.models import (
    Certification,
    CertificationRun,
    Deployment,
    Job,
    Model,
    Provider,
    TestResultRow,
    utcnow,
)

# Config keys that would hold a secret; keys are referenced by env var name instead.
_SECRET_KEY = re.compile(r"(api_?key|secret|password|passwd|token|credential)", re.IGNORECASE)


def reject_secrets(config: Mapping[str, Any], field: str) -> None:
    """Secrets never go into the database: only the NAME of an environment variable."""
    for key in config:
        if _SECRET_KEY.search(key) and not key.endswith("_env"):
            raise UserError(
                f"{field}.{key}: secrets are not stored; put the value in an environment "
                f"variable and give its name as {key}_env",
                field=f"{field}.{key}",
            )


def default_regions(kind: str) -> list[str]:
    return [GLOBAL_REGION] if kind in ("openai", "azure-openai") else list(DEFAULT_REGIONS)


def add_provider(
    session: Session,
    *,
    slug: str,
    kind: str,
    name: str | None = None,
    base_url: str | None = None,
    regions: Sequence[str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Provider:
    if kind not in PROVIDER_KINDS:
        raise UserError(
            f"unknown provider kind {kind!r} (known: {', '.join(PROVIDER_KINDS)})", field="kind"
        )
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", slug):
        raise UserError(
            f"invalid slug {slug!r}: use lower-case letters, digits, . _ -", field="slug"
        )
    if session.scalar(select(Provider).where(Provider.slug == slug)) is not None:
        raise UserError(f"provider {slug!r} already exists", field="slug")
    settings = dict(config or {})
    reject_secrets(settings, "config")
    if base_url:
        settings.setdefault("base_url", base_url)
    provider = Provider(
        slug=slug,
        kind=kind,
        name=name or slug,
        base_url=base_url,
        auth_type="aws"
        if kind == "bedrock"
        else ("api_key" if "api_key_env" in settings else "none"),
        regions=list(regions) if regions else default_regions(kind),
        config=settings,
    )
    session.add(provider)
    session.flush()
    return provider


def get_provider(session: Session, slug: str) -> Provider:
    provider = session.scalar(select(Provider).where(Provider.slug == slug))
    if provider is None:
        known = session.scalars(select(Provider.slug).order_by(Provider.slug)).all()
        raise NotFoundError(
            f"unknown provider {slug!r} (known: {', '.join(known) or 'none'})", field="provider"
        )
    return provider


def get_or_create_model(
    session: Session,
    *,
    name: str,
    vendor: str,
    family: str | None = None,
    capabilities: Capabilities | None = None,
) -> Model:
    model = session.scalar(select(Model).where(Model.vendor == vendor, Model.name == name))
    if model is None:
        model = Model(
            name=name,
            vendor=vendor,
            family=family,
            capabilities=(capabilities or Capabilities()).model_dump(),
        )
        session.add(model)
        session.flush()
    elif capabilities is not None:
        model.capabilities = capabilities.model_dump()
    return model


def add_deployment(
    session: Session,
    *,
    provider_slug: str,
    provider_model_id: str,
    model_name: str | None = None,
    vendor: str = "unknown",
    family: str | None = None,
    capabilities: Capabilities | None = None,
    inference_type: InferenceType = InferenceType.ON_DEMAND,
    options: Mapping[str, Any] | None = None,
    cost_input_per_mtok: float | None = None,
    cost_output_per_mtok: float | None = None,
) -> Deployment:
    provider = get_provider(session, provider_slug)
    reject_secrets(options or {}, "options")
    existing = session.scalar(
        select(Deployment).where(
            Deployment.provider_id == provider.id,
            Deployment.provider_model_id == provider_model_id,
        )
    )
    if existing is not None:
        raise UserError(
            f"deployment {provider_model_id!r} already exists on {provider_slug!r} "
            f"(id {existing.id})",
            field="provider_model_id",
        )
    model = get_or_create_model(
        session,
        name=model_name or provider_model_id,
        vendor=vendor,
        family=family,
        capabilities=capabilities,
    )
    deployment = Deployment(
        provider=provider,
        model=model,
        provider_model_id=provider_model_id,
        inference_type=inference_type.value,
        options=dict(options or {}),
        cost_input_per_mtok=cost_input_per_mtok,
        cost_output_per_mtok=cost_output_per_mtok,
    )
    session.add(deployment)
    session.flush()
    return deployment


def find_deployment(session: Session, ref: str | int) -> Deployment:
    """By numeric id, `provider-slug/model-id`, or a model id unique across providers."""
    text = str(ref).strip()
    if text.isdigit():
        found = session.get(Deployment, int(text))
        if found is not None:
            return found
        raise NotFoundError(f"unknown deployment id {text}", field="deployment")
    query = select(Deployment).join(Provider)
    slug, _, model_id = text.partition("/")
    if model_id and session.scalar(select(Provider.id).where(Provider.slug == slug)):
        query = query.where(Provider.slug == slug, Deployment.provider_model_id == model_id)
    else:
        query = query.where(Deployment.provider_model_id == text)
    matches = list(session.scalars(query).unique())
    if not matches:
        raise NotFoundError(
            f"unknown deployment {text!r} (see `modelcert catalog list`)", field="deployment"
        )
    if len(matches) > 1:
        ids = ", ".join(f"{d.provider.slug}/{d.provider_model_id}" for d in matches)
        raise UserError(f"deployment {text!r} is ambiguous: {ids}", field="deployment")
    return matches[0]


def check_region(provider: Provider, region: str) -> None:
    if region not in provider.regions:
        raise UserError(
            f"region {region!r} is not served by provider {provider.slug!r} "
            f"(known: {', '.join(provider.regions)})",
            field="region",
        )


def list_deployments(session: Session, *, active_only: bool = False) -> list[Deployment]:
    query = select(Deployment).join(Provider).order_by(Provider.slug, Deployment.provider_model_id)
    if active_only:
        query = query.where(Deployment.active.is_(True), Provider.active.is_(True))
    return list(session.scalars(query).unique())


def begin_run(
    session: Session,
    deployment: Deployment,
    region: str,
    *,
    simulated: bool,
    job_id: str | None = None,
    executor_id: str | None = None,
) -> CertificationRun:
    """Mark the (deployment, region) certification RUNNING and open a run for it."""
    now = utcnow()
    certification = session.scalar(
        select(Certification).where(
            Certification.deployment_id == deployment.id, Certification.region == region
        )
    )
    if certification is None:
        certification = Certification(deployment_id=deployment.id, region=region)
        session.add(certification)
    certification.status = CertificationStatus.RUNNING.value
    certification.started_at = now
    certification.job_id = job_id
    session.flush()
    run = CertificationRun(
        certification_id=certification.id,
        deployment_id=deployment.id,
        region=region,
        job_id=job_id,
        executor_id=executor_id,
        status=CertificationStatus.RUNNING.value,
        simulated=simulated,
        started_at=now,
    )
    session.add(run)
    session.flush()
    return run


def _copy_score(target: Certification | CertificationRun, score: Score) -> None:
    target.status = score.status.value
    target.score = score.score
    target.rating = score.rating
    target.badge = score.badge.value
    target.tests_total = score.tests_total
    target.tests_passed = score.tests_passed
    target.tests_failed = score.tests_failed
    target.tests_skipped = score.tests_skipped
    target.success_rate = score.success_rate
    target.avg_latency_ms = score.avg_latency_ms
    target.p50_latency_ms = score.p50_latency_ms
    target.max_latency_ms = score.max_latency_ms
    target.total_retries = score.total_retries
    target.error_category = score.error_category.value if score.error_category else None
    target.error_severity = score.error_severity.value if score.error_severity else None
    target.error_message = score.error_message


def finish_run(
    session: Session,
    run_id: int,
    results: Sequence[TestResult],
    score: Score,
    *,
    now: datetime | None = None,
) -> Certification:
    """Persist the tests, the run's verdict and the current certification together."""
    now = now or utcnow()
    run = session.get(CertificationRun, run_id)
    if run is None:
        raise NotFoundError(f"unknown run {run_id}", field="run")
    recorded = set(
        session.scalars(select(TestResultRow.test_id).where(TestResultRow.run_id == run_id))
    )
    missing = [
        _test_values(run_id, position, result)
        for position, result in enumerate(results)
        if result.test_id not in recorded
    ]
    if missing:  # Core inserts: a worker stores thousands of these, the ORM's flush is slow
        session.execute(insert(TestResultRow), missing)
    _copy_score(run, score)
    run.completed_at = now
    run.duration_ms = (now - run.started_at).total_seconds() * 1000 if run.started_at else None

    certification = session.get(Certification, run.certification_id)
    assert certification is not None
    _copy_score(certification, score)
    certification.simulated = run.simulated
    certification.started_at = run.started_at
    certification.completed_at = now
    certification.duration_ms = run.duration_ms
    certification.last_run_id = run.id
    if score.status.is_valid_verdict:
        certification.certified_at = now
        certification.expires_at = now + CERTIFICATION_VALIDITY
    else:
        certification.certified_at = None
        certification.expires_at = None
    session.flush()
    return certification


def record_test(session: Session, run_id: int, position: int, result: TestResult) -> None:
    """Store one finished test as soon as it ends, so progress is visible while a run goes
    on. Replaces an earlier row of the same test (a step re-executed after a crash)."""
    session.execute(
        delete(TestResultRow).where(
            TestResultRow.run_id == run_id, TestResultRow.test_id == result.test_id
        )
    )
    session.execute(insert(TestResultRow).values(_test_values(run_id, position, result)))


def count_job_result(session: Session, job_id: str, *, succeeded: bool) -> None:
    """Add one finished certification to its job's totals (atomic UPDATE, no lost counts)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            processed=Job.processed + 1,
            succeeded=Job.succeeded + (1 if succeeded else 0),
            failed=Job.failed + (0 if succeeded else 1),
        )
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.processed >= Job.total, Job.status != "CANCELLED")
        .values(status="COMPLETED", completed_at=utcnow())
    )


def abort_run(session: Session, run_id: int, status: CertificationStatus, message: str) -> None:
    """Close a run that could not finish (cancelled, or our own fault: ERROR)."""
    now = utcnow()
    run = session.get(CertificationRun, run_id)
    if run is None:
        return
    run.status = status.value
    run.error_message = message
    run.completed_at = now
    certification = session.get(Certification, run.certification_id)
    if certification is not None and certification.status == CertificationStatus.RUNNING.value:
        certification.status = status.value
        certification.error_message = message
        certification.completed_at = now
        certification.last_run_id = run.id
        # certified_at / expires_at stay: a cancelled run, or our own error, says nothing
        # about the model, so the verdict it was renewing stays valid until it expires.
    session.flush()


def _test_values(run_id: int, position: int, result: TestResult) -> dict[str, Any]:
    return dict(
        run_id=run_id,
        position=position,
        test_id=result.test_id,
        title=result.title,
        outcome=result.outcome.value,
        detail=result.detail,
        latency_ms=result.latency_ms,
        ttft_ms=result.ttft_ms,
        retries=result.retries,
        attempts=result.attempts,
        error_category=result.error_category.value if result.error_category else None,
        error_severity=result.error_severity.value if result.error_severity else None,
        error_code=result.error_code,
        http_status=result.http_status,
        error_message=result.error_message,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        throttled_s=result.throttled_s,
        started_at=result.started_at,
        duration_ms=result.duration_ms,
    )


def certifications(session: Session) -> list[Certification]:
    """Every current certification, by provider, deployment and region."""
    query = (
        select(Certification)
        .join(Deployment)
        .join(Provider)
        .order_by(Provider.slug, Deployment.provider_model_id, Certification.region)
    )
    return list(session.scalars(query).unique())


def run_history(
    session: Session, deployment_id: int, region: str, *, limit: int = 20
) -> list[CertificationRun]:
    query = (
        select(CertificationRun)
        .where(CertificationRun.deployment_id == deployment_id, CertificationRun.region == region)
        .order_by(CertificationRun.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))
