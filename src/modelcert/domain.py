"""Domain vocabulary: enums and small value types. Pure: no I/O, no clock, no globals."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

CERTIFICATION_VALIDITY = timedelta(days=7)

# Regions the old API accepted; a provider may declare its own list.
DEFAULT_REGIONS: tuple[str, ...] = (
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-northeast-1",
)

# The pseudo-region of an endpoint that has no regions (a single OpenAI-compatible URL).
GLOBAL_REGION = "global"


class CertificationStatus(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    CERTIFIED = "CERTIFIED"
    QUALITY_WARNING = "QUALITY_WARNING"
    FAILED = "FAILED"
    ERROR = "ERROR"  # an infrastructure fault, not the model's
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"

    @property
    def is_valid_verdict(self) -> bool:
        """A certification counts as valid in these states (while unexpired)."""
        return self in (CertificationStatus.CERTIFIED, CertificationStatus.QUALITY_WARNING)

    @property
    def is_final(self) -> bool:
        return self not in (
            CertificationStatus.PENDING,
            CertificationStatus.QUEUED,
            CertificationStatus.RUNNING,
        )


class TestOutcome(StrEnum):
    __test__ = False  # not a pytest class, despite the name

    PASSED = "PASSED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


class InferenceType(StrEnum):
    ON_DEMAND = "ON_DEMAND"
    INFERENCE_PROFILE = "INFERENCE_PROFILE"
    PROVISIONED = "PROVISIONED"


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"


class ErrorCategory(StrEnum):
    UNAVAILABLE = "UNAVAILABLE"
    PERMISSION_ERROR = "PERMISSION_ERROR"
    AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"
    CONFIGURATION_ERROR = "CONFIGURATION_ERROR"
    PROVISIONING_REQUIRED = "PROVISIONING_REQUIRED"
    RATE_LIMIT = "RATE_LIMIT"
    TIMEOUT = "TIMEOUT"
    QUALITY_ISSUE = "QUALITY_ISSUE"
    NETWORK_ERROR = "NETWORK_ERROR"
    UNKNOWN_ERROR = "UNKNOWN_ERROR"


# Categories meaning "this deployment is not usable here", whatever the success rate.
NOT_AVAILABLE_CATEGORIES = frozenset(
    {
        ErrorCategory.UNAVAILABLE,
        ErrorCategory.PERMISSION_ERROR,
        ErrorCategory.AUTHENTICATION_ERROR,
        ErrorCategory.CONFIGURATION_ERROR,
        ErrorCategory.PROVISIONING_REQUIRED,
    }
)


class Badge(StrEnum):
    PREMIUM = "PREMIUM"
    RECOMMENDED = "RECOMMENDED"
    FUNCTIONAL = "FUNCTIONAL"
    LIMITED = "LIMITED"
    NOT_RECOMMENDED = "NOT_RECOMMENDED"
    UNAVAILABLE = "UNAVAILABLE"


class JobKind(StrEnum):
    SINGLE = "SINGLE"
    MULTIPLE = "MULTIPLE"
    ALL = "ALL"
    RECERTIFY = "RECERTIFY"


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Capabilities(BaseModel):
    """What a base model declares it can do; tests for undeclared capabilities are SKIPPED."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    streaming: bool = True
    tools: bool = False
    json_output: bool = False
    vision: bool = False
    system_prompt: bool = True
    stop_sequences: bool = True
    max_context: int | None = None
    max_output: int | None = None
