"""One certification of one deployment in one region, in-process: plan the battery,
run it against the provider, score it and persist run, tests and verdict."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from modelcert.certify.battery import PlannedTest, plan_battery
from modelcert.certify.runner import ResultCallback, RetryPolicy, TestResult, run_battery
from modelcert.certify.scoring import Score, TestScoreInput, score_results
from modelcert.domain import Capabilities, CertificationStatus, InferenceType
from modelcert.providers.base import Target
from modelcert.providers.registry import ProviderPool
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Deployment


@dataclass(frozen=True)
class CertificationPlan:
    """Everything needed to run one certification, detached from the database."""

    deployment_id: int
    deployment_label: str  # provider-slug/model-id
    provider_slug: str
    provider_kind: str
    provider_config: Mapping[str, Any]
    target: Target
    vendor: str
    capabilities: Capabilities
    tests: tuple[PlannedTest, ...]
    policy: RetryPolicy
    test_timeout_s: float | None  # None: each test's own timeout


@dataclass(frozen=True)
class CertificationReport:
    plan: CertificationPlan
    run_id: int
    results: tuple[TestResult, ...]
    score: Score
    simulated: bool
    duration_s: float


def _option(deployment: Deployment, key: str) -> Any:
    """A deployment option, falling back to its provider's config."""
    if key in deployment.options:
        return deployment.options[key]
    return deployment.provider.config.get(key)


def retry_policy(settings: Settings, deployment: Deployment) -> RetryPolicy:
    base_ms = _option(deployment, "retry_base_ms")
    max_ms = _option(deployment, "retry_max_ms")
    retries = _option(deployment, "max_retries")
    return RetryPolicy(
        max_retries=int(retries) if retries is not None else settings.certification_max_retries,
        base_s=float(base_ms if base_ms is not None else settings.retry_base_ms) / 1000,
        max_s=float(max_ms if max_ms is not None else settings.retry_max_ms) / 1000,
    )


def plan_certification(
    session: Session, settings: Settings, deployment_ref: str | int, region: str
) -> CertificationPlan:
    """Resolve and validate what to certify (raises UserError for bad input)."""
    deployment = repo.find_deployment(session, deployment_ref)
    provider = deployment.provider
    repo.check_region(provider, region)
    capabilities = Capabilities.model_validate(deployment.model.capabilities)
    timeout = _option(deployment, "test_timeout_s")
    return CertificationPlan(
        deployment_id=deployment.id,
        deployment_label=f"{provider.slug}/{deployment.provider_model_id}",
        provider_slug=provider.slug,
        provider_kind=provider.kind,
        provider_config=dict(provider.config),
        target=Target(
            model_id=deployment.provider_model_id,
            region=region,
            inference_type=InferenceType(deployment.inference_type),
            options=dict(deployment.options),
        ),
        vendor=deployment.model.vendor,
        capabilities=capabilities,
        tests=tuple(plan_battery(deployment.model.vendor, capabilities)),
        policy=retry_policy(settings, deployment),
        test_timeout_s=float(timeout) if timeout is not None else None,
    )


def scored(results: tuple[TestResult, ...]) -> Score:
    return score_results(
        [
            TestScoreInput(r.outcome, r.latency_ms, r.retries, r.error_category, r.error_message)
            for r in results
        ]
    )


async def certify(
    factory: sessionmaker[Session],
    settings: Settings,
    pool: ProviderPool,
    deployment_ref: str | int,
    region: str,
    *,
    on_result: ResultCallback | None = None,
    job_id: str | None = None,
) -> CertificationReport:
    """Certify one deployment in one region and record the run."""
    started = time.perf_counter()
    with transaction(factory) as session:
        plan = plan_certification(session, settings, deployment_ref, region)
    provider = pool.get(plan.provider_slug, plan.provider_kind, plan.provider_config)
    with transaction(factory) as session:
        deployment = repo.find_deployment(session, plan.deployment_id)
        run = repo.begin_run(
            session, deployment, region, simulated=provider.simulated, job_id=job_id
        )
        run_id = run.id
    try:
        results = tuple(
            await run_battery(
                plan.tests,
                provider,
                plan.target,
                streaming=plan.capabilities.streaming,
                policy=plan.policy,
                timeout_s=plan.test_timeout_s,
                on_result=on_result,
            )
        )
    except BaseException as exc:
        # Never leave a run RUNNING: interrupted is CANCELLED, our own fault is ERROR.
        cancelled = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
        status = CertificationStatus.CANCELLED if cancelled else CertificationStatus.ERROR
        message = "cancelled" if cancelled else f"internal error: {type(exc).__name__}: {exc}"
        with transaction(factory) as session:
            repo.abort_run(session, run_id, status, message)
        raise
    score = scored(results)
    with transaction(factory) as session:
        repo.finish_run(session, run_id, results, score)
    return CertificationReport(
        plan=plan,
        run_id=run_id,
        results=results,
        score=score,
        simulated=provider.simulated,
        duration_s=time.perf_counter() - started,
    )
