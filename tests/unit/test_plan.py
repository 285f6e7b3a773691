"""What a deployment's options make of its certification plan: the quota its calls draw
on, its retry policy, its test budget. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from modelcert.certify.plan import plan_certification, quota_key
from modelcert.certify.throttle import QuotaKey
from modelcert.domain import Capabilities, DeploymentSpec, InferenceType
from modelcert.errors import UserError
from modelcert.settings import Settings


def spec(
    options: dict[str, Any] | None = None, provider_config: dict[str, Any] | None = None
) -> DeploymentSpec:
    return DeploymentSpec(
        deployment_id=7,
        provider_slug="bedrock",
        provider_kind="bedrock",
        provider_config=provider_config or {},
        provider_regions=("us-east-1",),
        model_id="anthropic.claude-3-haiku",
        inference_type=InferenceType.ON_DEMAND,
        vendor="Anthropic",
        capabilities=Capabilities(),
        options=options or {},
    )


def test_by_default_each_model_has_its_own_quota_per_region() -> None:
    assert quota_key(spec(), "us-east-1") == QuotaKey(
        "bedrock", "us-east-1", "anthropic.claude-3-haiku"
    )
    assert quota_key(spec(), "eu-west-1") != quota_key(spec(), "us-east-1")


def test_the_scope_widens_to_the_provider_from_the_deployment_or_its_provider() -> None:
    wide = QuotaKey("bedrock", "us-east-1", "*")
    assert quota_key(spec({"throttle_scope": "provider"}), "us-east-1") == wide
    assert quota_key(spec(provider_config={"throttle_scope": "provider"}), "us-east-1") == wide
    # The deployment's own option wins over its provider's.
    narrowed = spec({"throttle_scope": "model"}, provider_config={"throttle_scope": "provider"})
    assert quota_key(narrowed, "us-east-1").quota == "anthropic.claude-3-haiku"


def test_a_named_quota_is_shared_by_the_deployments_that_name_it() -> None:
    key = quota_key(spec({"quota_key": "account-tpm"}), "us-east-1")
    assert key == QuotaKey("bedrock", "us-east-1", "quota:account-tpm")


def test_an_unknown_scope_names_the_option() -> None:
    with pytest.raises(UserError) as caught:
        quota_key(spec({"throttle_scope": "galaxy"}), "us-east-1")
    assert caught.value.field == "options.throttle_scope"


def test_the_plan_carries_options_and_settings() -> None:
    settings = Settings(database_url="sqlite://", certification_max_retries=5)
    plan = plan_certification(
        settings, spec({"test_timeout_s": 4, "retry_base_ms": 50}), "us-east-1"
    )
    assert plan.test_timeout_s == 4.0
    assert (plan.policy.base_s, plan.policy.max_retries) == (0.05, 5)
    assert plan.quota == QuotaKey("bedrock", "us-east-1", "anthropic.claude-3-haiku")
    assert plan.deployment_label == "bedrock/anthropic.claude-3-haiku"
    assert [test_id for test_id, _ in plan.tests][:2] == ["basic-prompt", "streaming"]
    assert "anthropic-sampling" in dict(plan.tests)
