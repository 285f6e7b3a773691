"""resolve_model_id: which id goes on the wire for each inference type and region."""

from __future__ import annotations

import pytest

from modelcert.domain import InferenceType
from modelcert.providers.bedrock import resolve_model_id

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123"
PROFILE = InferenceType.INFERENCE_PROFILE


@pytest.mark.parametrize(
    ("model_id", "region", "inference_type", "expected"),
    [
        (CLAUDE, "us-east-1", PROFILE, f"us.{CLAUDE}"),
        (CLAUDE, "us-west-2", PROFILE, f"us.{CLAUDE}"),
        (CLAUDE, "ca-central-1", PROFILE, f"us.{CLAUDE}"),
        (CLAUDE, "us-gov-west-1", PROFILE, f"us-gov.{CLAUDE}"),
        (CLAUDE, "eu-west-1", PROFILE, f"eu.{CLAUDE}"),
        (CLAUDE, "eu-central-1", PROFILE, f"eu.{CLAUDE}"),
        (CLAUDE, "ap-southeast-1", PROFILE, f"apac.{CLAUDE}"),
        (CLAUDE, "ap-northeast-1", PROFILE, f"apac.{CLAUDE}"),
        # Already resolved: never prefixed twice.
        (f"us.{CLAUDE}", "us-east-1", PROFILE, f"us.{CLAUDE}"),
        (f"eu.{CLAUDE}", "us-east-1", PROFILE, f"eu.{CLAUDE}"),
        (f"apac.{CLAUDE}", "ap-southeast-1", PROFILE, f"apac.{CLAUDE}"),
        (f"global.{CLAUDE}", "eu-west-1", PROFILE, f"global.{CLAUDE}"),
        # ARNs and non-profile types pass through.
        (ARN, "us-east-1", PROFILE, ARN),
        (ARN, "us-east-1", InferenceType.PROVISIONED, ARN),
        (CLAUDE, "eu-west-1", InferenceType.PROVISIONED, CLAUDE),
        (CLAUDE, "us-east-1", InferenceType.ON_DEMAND, CLAUDE),
        # No known geo prefix for the region: unchanged, Bedrock will say what is wrong.
        (CLAUDE, "sa-east-1", PROFILE, CLAUDE),
        (CLAUDE, "global", PROFILE, CLAUDE),
    ],
)
def test_resolve_model_id(
    model_id: str, region: str, inference_type: InferenceType, expected: str
) -> None:
    assert resolve_model_id(model_id, region, inference_type) == expected
