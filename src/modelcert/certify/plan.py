"""What to run for one deployment in one region: its tests, retry policy, timeouts and the
quota its calls draw on, from the deployment's options and its provider's config. Pure.

Options a deployment may set (or its provider, for all its deployments): `test_timeout_s`
(each test's whole time budget), `retry_base_ms`, `retry_max_ms`, `max_retries`,
`throttle_scope` (`model`, the default, or `provider`) and `quota_key` (a named quota
shared by the deployments that give the same name).

The tests come from the suites chosen for the certification (`store.suite_selection`):
the built-in battery (or its smoke subset) first, then each loaded suite's tests as
`suite/test`. The plan carries those tests' definitions (JSON), the price of the calls
and the judges' connections, so that a durable step resumed elsewhere runs exactly
what was planned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelcert.certify.battery import BATTERY, BATTERY_BY_ID, PlannedTest, plan_battery
from modelcert.certify.runner import RetryPolicy
from modelcert.certify.suite_tests import suite_test
from modelcert.certify.throttle import THROTTLE_SCOPES, QuotaKey
from modelcert.cost.estimate import estimate_calls
from modelcert.domain import (
    Capabilities,
    CertificationInputs,
    DeploymentSpec,
    JudgeTarget,
    Price,
)
from modelcert.errors import UserError
from modelcert.providers.base import Target
from modelcert.settings import Settings

# The smoke suite (`--smoke`): the cheapest tests that still show a deployment answers,
# streams and reports usage: three short calls instead of the battery's 13-15.
SMOKE_TESTS = ("basic-prompt", "streaming", "token-usage")
SMOKE_BATTERY = tuple(test for test in BATTERY if test.id in SMOKE_TESTS)


@dataclass(frozen=True)
class JudgePlan:
    """A deployment that grades `llm-judge` assertions, as the test steps call it."""

    label: str  # provider-slug/model-id
    provider_slug: str
    provider_kind: str
    provider_config: dict[str, Any]
    target: Target
    price: Price | None
    quota: QuotaKey  # what its calls draw on, by its own options (as any deployment's)


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
    suites: tuple[str, ...] = ()  # the suite versions run, name@version
    # A suite's own tests: test id (suite/test) -> (suite name@version, its definition).
    custom: Mapping[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    price: Price | None = None  # of the deployment's calls; None: unknown
    judges: Mapping[str, JudgePlan] = field(default_factory=dict)  # by the ref suites use

    def planned(self, position: int) -> PlannedTest:
        test_id, skip = self.tests[position]
        if test_id in self.custom:
            suite_ref, definition = self.custom[test_id]
            return PlannedTest(suite_test(suite_ref, definition), skip)
        return PlannedTest(BATTERY_BY_ID[test_id], skip)

    def weighing(self, position: int) -> tuple[str | None, float, bool]:
        """(suite name@version, weight, required) of the test at `position`."""
        test_id = self.tests[position][0]
        if test_id not in self.custom:
            return None, 1.0, False
        suite_ref, definition = self.custom[test_id]
        return suite_ref, float(definition.get("weight", 1.0)), bool(definition.get("required"))

    @property
    def planned_calls(self) -> int:
        """Calls the tests that will run make at least (availability makes two)."""
        return estimate_calls([test_id for test_id, skip in self.tests if skip is None])


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


def planned_suite_tests(
    suites: tuple[tuple[str, dict[str, Any]], ...], vendor: str, caps: Capabilities
) -> tuple[list[tuple[str, str | None]], dict[str, tuple[str, dict[str, Any]]]]:
    """The loaded suites' tests in order, each with the reason it is skipped, decided as
    the battery's are (`plan_battery`: a capability it requires is not declared), and
    their definitions by test id."""
    custom: dict[str, tuple[str, dict[str, Any]]] = {}
    built = []
    for suite_ref, definition in suites:
        for test in definition.get("tests", ()):
            battery_test = suite_test(suite_ref, test)
            custom[battery_test.id] = (suite_ref, test)
            built.append(battery_test)
    tests = [(p.test.id, p.skip_reason) for p in plan_battery(vendor, caps, built)]
    return tests, custom


def target_of(spec: DeploymentSpec, region: str) -> Target:
    """A deployment in a region, as its provider addresses it."""
    return Target(
        model_id=spec.model_id,
        region=region,
        inference_type=spec.inference_type,
        options=dict(spec.options),
    )


def judge_plan(judge: JudgeTarget) -> JudgePlan:
    spec = judge.spec
    return JudgePlan(
        label=spec.label,
        provider_slug=spec.provider_slug,
        provider_kind=spec.provider_kind,
        provider_config=dict(spec.provider_config),
        target=target_of(spec, judge.region),
        price=judge.price,
        quota=quota_key(spec, judge.region),
    )


def plan_from_inputs(
    settings: Settings, inputs: CertificationInputs, region: str
) -> CertificationPlan:
    """The plan of the suites, price and judges `store.certification_inputs` read."""
    return plan_certification(
        settings,
        inputs.spec,
        region,
        builtin=inputs.builtin,
        suites=inputs.suites,
        suite_refs=inputs.suite_refs,
        price=inputs.price,
        judges={ref: judge_plan(judge) for ref, judge in inputs.judges.items()},
    )


def plan_certification(
    settings: Settings,
    spec: DeploymentSpec,
    region: str,
    *,
    builtin: str | None = "builtin",
    suites: tuple[tuple[str, dict[str, Any]], ...] = (),
    suite_refs: tuple[str, ...] = (),
    price: Price | None = None,
    judges: Mapping[str, JudgePlan] | None = None,
) -> CertificationPlan:
    """The plan of one certification: the built-in battery (`builtin`), its smoke subset
    (`smoke`) or neither (None), then the loaded `suites`' tests."""
    timeout = spec.option("test_timeout_s")
    battery = {"builtin": BATTERY, "smoke": SMOKE_BATTERY}.get(builtin or "", ())
    tests = [
        (p.test.id, p.skip_reason) for p in plan_battery(spec.vendor, spec.capabilities, battery)
    ]
    custom_tests, custom = planned_suite_tests(suites, spec.vendor, spec.capabilities)
    return CertificationPlan(
        deployment_id=spec.deployment_id,
        deployment_label=spec.label,
        provider_slug=spec.provider_slug,
        provider_kind=spec.provider_kind,
        provider_config=dict(spec.provider_config),
        target=target_of(spec, region),
        streaming=spec.capabilities.streaming,
        tests=tuple(tests + custom_tests),
        policy=retry_policy(settings, spec),
        test_timeout_s=float(timeout) if timeout is not None else None,
        quota=quota_key(spec, region),
        suites=suite_refs,
        custom=custom,
        price=price,
        judges=dict(judges or {}),
    )
