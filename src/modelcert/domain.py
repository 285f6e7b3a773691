"""Domain vocabulary: enums and small value types. Pure: no I/O, no clock, no globals."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

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

# The provider adapters there are (`modelcert.providers.registry` builds them).
PROVIDER_KINDS: tuple[str, ...] = (
    "sim",
    "bedrock",
    "openai",
    "azure-openai",
    "anthropic",  # Anthropic's own Messages API
    "gemini",  # Google's Gemini API, or Vertex AI (whose regions are its locations)
)


class CertificationStatus(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    CERTIFIED = "CERTIFIED"
    QUALITY_WARNING = "QUALITY_WARNING"
    FAILED = "FAILED"
    ERROR = "ERROR"  # an infrastructure fault, not the model's
    # Cut short before the evidence was in (CERTIFICATION_TIMEOUT): no verdict on the model;
    # the previous valid verdict, if any, stays valid until it expires.
    INCOMPLETE = "INCOMPLETE"
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
    SKIPPED = "SKIPPED"  # decided not to run: capability not declared, or fail-fast
    # Meant to run but did not, for a reason that is not the model's (the certification ran
    # out of time): missing evidence, which makes the certification INCOMPLETE.
    NOT_RUN = "NOT_RUN"

    @property
    def executed(self) -> bool:
        return self in (TestOutcome.PASSED, TestOutcome.FAILED)


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
    UNSUPPORTED_FEATURE = "UNSUPPORTED_FEATURE"  # an optional feature the endpoint rejects
    QUALITY_ISSUE = "QUALITY_ISSUE"
    SERVER_ERROR = "SERVER_ERROR"  # a 5xx answered over a working connection
    NETWORK_ERROR = "NETWORK_ERROR"  # the connection itself failed
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

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.CANCELLED)


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


@dataclass
class TestResult:
    """One battery test of one certification: outcome, timings, the classified failure."""

    __test__ = False

    test_id: str
    title: str
    outcome: TestOutcome
    detail: str = ""
    latency_ms: float | None = None
    ttft_ms: float | None = None
    retries: int = 0
    attempts: int = 0
    error_category: ErrorCategory | None = None
    error_severity: Severity | None = None
    error_code: str | None = None
    http_status: int | None = None
    error_message: str | None = None  # the provider's original text
    input_tokens: int | None = None
    output_tokens: int | None = None
    throttled_s: float = 0.0  # time spent waiting on RATE_LIMIT retries
    rate_limited: int = 0  # answers that were RATE_LIMIT (429s, throttling errors)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_ms: float = 0.0
    # A suite's own test (`modelcert.suites`): the suite version it came from
    # ("name@version"; None for the built-in battery), how it counts toward the score,
    # and what each of its assertions decided (JSON-able dicts, see `suites.assertions`).
    suite: str | None = None
    weight: float = 1.0
    required: bool = False
    assertions: list[dict[str, Any]] | None = None
    # What the test's calls cost at the deployment's prices (None: no price known).
    cost_usd: float | None = None


@dataclass(frozen=True)
class Score:
    """A certification's verdict, from its test results (`certify.scoring`).

    `rating`, `score` and `badge` are None when there is no verdict on the model
    (INCOMPLETE, or ERROR with nothing executed)."""

    status: CertificationStatus
    score: int | None  # 0-100
    rating: float | None  # 0-5, one decimal
    badge: Badge | None
    tests_total: int  # executed (not skipped, not "not run")
    tests_passed: int
    tests_failed: int
    tests_skipped: int  # skipped or not run
    success_rate: float  # 0-100
    avg_latency_ms: float | None  # over passed tests
    p50_latency_ms: float | None
    max_latency_ms: float | None
    total_retries: int
    error_category: ErrorCategory | None  # the decisive error
    error_severity: Severity | None
    error_message: str | None


@dataclass(frozen=True)
class Price:
    """What a deployment's calls cost, in US dollars, and where the figure came from
    (`modelcert.cost.prices`)."""

    input_per_mtok: float
    output_per_mtok: float
    per_request: float = 0.0
    source: str = "override"  # "override" (the deployment's own) or "seed:<as-of date>"

    def cost(self, input_tokens: int | None, output_tokens: int | None, calls: int) -> float:
        """The cost of `calls` answered calls that used these tokens (unknown counts as 0)."""
        return (
            (input_tokens or 0) * self.input_per_mtok / 1_000_000
            + (output_tokens or 0) * self.output_per_mtok / 1_000_000
            + calls * self.per_request
        )


@dataclass(frozen=True)
class RunUsage:
    """What one completed run used: tokens in and out over its calls (what a cost
    estimate learns from, `modelcert.cost.estimate`)."""

    input_tokens: int
    output_tokens: int
    calls: int


@dataclass(frozen=True)
class Spending:
    """What the budget check (`modelcert.cost.budget`) knows when a certification is about
    to start: its job's budget and what the job spent, the day's and what it spent."""

    job_budget_usd: float | None = None
    job_spent_usd: float = 0.0
    daily_budget_usd: float | None = None
    day_spent_usd: float = 0.0

    @property
    def limited(self) -> bool:
        """Whether any budget applies to the certification."""
        return self.job_budget_usd is not None or self.daily_budget_usd is not None


@dataclass(frozen=True)
class CertifyOptions:
    """What a job (or an in-process certification) certifies with: the suites it names
    (None: the default choice, `store.suite_selection`), smoke mode (`--smoke`, the
    battery's cheapest meaningful subset) and the most it may spend in US dollars."""

    suites: tuple[str, ...] | None = None
    smoke: bool = False
    budget_usd: float | None = None


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment as the certification engine needs it, detached from the database."""

    deployment_id: int
    provider_slug: str
    provider_kind: str
    provider_config: Mapping[str, Any]
    provider_regions: tuple[str, ...]
    model_id: str  # the provider's model id
    inference_type: InferenceType
    vendor: str
    capabilities: Capabilities
    options: Mapping[str, Any]  # the deployment's own options

    @property
    def label(self) -> str:
        return f"{self.provider_slug}/{self.model_id}"

    def option(self, key: str) -> Any:
        """A deployment option, falling back to its provider's config (None if neither)."""
        if key in self.options:
            return self.options[key]
        return self.provider_config.get(key)


@dataclass(frozen=True)
class JudgeTarget:
    """A deployment that grades `llm-judge` assertions, in the region it is called in."""

    spec: DeploymentSpec
    region: str
    price: Price | None


@dataclass(frozen=True)
class CertificationInputs:
    """What one certification is planned from (`store.certification_inputs` reads it):
    the deployment, the built-in battery it runs (`builtin`, `smoke` or None), the loaded
    suites' versions and definitions, the price of its calls, its judges, its budgets."""

    spec: DeploymentSpec
    builtin: str | None
    suites: tuple[tuple[str, dict[str, Any]], ...]  # (name@version, definition)
    suite_refs: tuple[str, ...]  # every suite version run, the built-in one included
    price: Price | None
    judges: Mapping[str, JudgeTarget] = field(default_factory=dict)  # by the suites' ref
    spending: Spending = field(default_factory=Spending)
    history: tuple[RunUsage, ...] = ()  # the pair's latest completed runs, for the estimate
