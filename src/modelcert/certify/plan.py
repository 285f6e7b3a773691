"""What to run for one deployment in one region: its tests, retry policy, timeouts and the
quota its calls draw on, from the deployment's options and its provider's config. Pure.

Options a deployment may set (or its provider, for all its deployments): `test_timeout_s`
(each test's whole time budget), `retry_base_ms`, `retry_max_ms`, `max_retries`,
`throttle_scope` (`model`, the default, or `provider`) and `quota_key` (a named quota
shared by the deployments that give the same name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelcert.certify.battery import BATTERY_BY_ID, PlannedTest, plan_battery
from modelcert.certify.runner import RetryPolicy
from modelcert.certify.throttle import THROTTLE_SCOPES, QuotaKey
from modelcert.domain import DeploymentSpec
from modelcert.errors import UserError
from modelcert.providers.base import Target
from modelcert.settings import Settings


@dataclass(frozen=True)
class CertificationPlan:
    """Everything needed to run one certification, in a form DBOS can checkpoint."""

    deployment_id: int
    deployment_label: str  # provider-slug/model-id
    provider_slug: str
    provider_kind: str
    provider_config: dict[str, Any]
    target: Target
    streaming: bool
    tests: tuple[tuple[str, str | None], ...]  # (test id, reason it is skipped)
    policy: RetryPolicy
    test_timeout_s: float | None  # None: each test's own timeout
    quota: QuotaKey

    def planned(self, position: int) -> PlannedTest:
        test_id, skip = self.tests[position]
        return PlannedTest(BATTERY_BY_ID[test_id], skip)


def retry_policy(settings: Settings, spec: DeploymentSpec) -> RetryPolicy:
    base_ms = spec.option("retry_base_ms")
    max_ms = spec.option("retry_max_ms")
    retries = spec.option("max_retries")
    return RetryPolicy(
        max_retries=int(retries) if retries is not None else settings.certification_max_retries,
        base_s=float(base_ms if base_ms is not None else settings.retry_base_ms) / 1000,
        max_s=float(max_ms if max_ms is not None else settings.retry_max_ms) / 1000,
    )


def quota_key(spec: DeploymentSpec, region: str) -> QuotaKey:
    """The quota the deployment's calls draw on in `region` (see `certify.throttle`)."""
    named = spec.option("quota_key")
    if named is not None:
        return QuotaKey(spec.provider_slug, region, f"quota:{named}")
    scope = spec.option("throttle_scope") or "model"
    if scope not in THROTTLE_SCOPES:
        raise UserError(
            f"options.throttle_scope: expected one of {', '.join(THROTTLE_SCOPES)}, not {scope!r}",
            field="options.throttle_scope",
        )
    return QuotaKey(spec.provider_slug, region, spec.model_id if scope == "model" else "*")


def plan_certification(settings: Settings, spec: DeploymentSpec, region: str) -> CertificationPlan:
    timeout = spec.option("test_timeout_s")
    return CertificationPlan(
        deployment_id=spec.deployment_id,
        deployment_label=spec.label,
        provider_slug=spec.provider_slug,
        provider_kind=spec.provider_kind,
        provider_config=dict(spec.provider_config),
        target=Target(
            model_id=spec.model_id,
            region=region,
            inference_type=spec.inference_type,
            options=dict(spec.options),
        ),
        streaming=spec.capabilities.streaming,
        tests=tuple(
            (p.test.id, p.skip_reason) for p in plan_battery(spec.vendor, spec.capabilities)
        ),
        policy=retry_policy(settings, spec),
        test_timeout_s=float(timeout) if timeout is not None else None,
        quota=quota_key(spec, region),
    )
