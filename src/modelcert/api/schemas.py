"""Request and response bodies of the certification API, in the old API's camelCase
(`jobId`, `modelId`, `pageSize`…). Python code uses the snake_case attribute names."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modelcert.domain import CertifyOptions, JobKind, Priority
from modelcert.store.models import Certification, CertificationRun, Deployment, TestResultRow
from modelcert.validation import DeploymentRef, ProviderSlug, RegionName

T = TypeVar("T")


class ApiModel(BaseModel):
    """camelCase on the wire; built from snake_case names in code."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ApiRequest(ApiModel):
    """A request body: unknown fields are refused (a misspelt field must not be ignored)."""

    model_config = ConfigDict(extra="forbid")


# The boundary's validated types (modelcert.validation), under the names used here.
ModelRef = DeploymentRef
MAX_DELAY_S = 7 * 24 * 3600


# Requests

SuiteRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=120,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(@[0-9a-f]{1,64})?$",
        description="A loaded suite's name, NAME@VERSION, `builtin` or `smoke`.",
    ),
]


class CertifyWith(ApiRequest):
    """What the job certifies with: suites, smoke mode, budget."""

    suites: list[SuiteRef] | None = Field(
        None,
        min_length=1,
        max_length=20,
        description="Run exactly these suites. Default: the built-in battery and the "
        "suites attached to each deployment.",
    )
    smoke: bool = Field(
        False,
        description="Run the battery's cheapest meaningful subset instead of the whole "
        "battery (beside the suites named, if any).",
    )
    budget_usd: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Most the job may spend (USD); what would exceed it is not started.",
    )

    def options(self) -> CertifyOptions:
        return CertifyOptions(
            suites=tuple(self.suites) if self.suites is not None else None,
            smoke=self.smoke,
            budget_usd=self.budget_usd,
        )


class CertifyModelRequest(CertifyWith):
    model_id: ModelRef = Field(description="Deployment id or `provider/model-id`.")
    region: RegionName
    priority: Priority = Priority.NORMAL
    delay_seconds: float = Field(0.0, ge=0, le=MAX_DELAY_S, description="Wait before starting.")


class CertifyMultipleRequest(CertifyWith):
    model_ids: list[ModelRef] = Field(min_length=1, max_length=1000)
    regions: list[RegionName] = Field(min_length=1, max_length=100)
    priority: Priority = Priority.NORMAL


class CertifyAllRequest(CertifyWith):
    regions: list[RegionName] | None = Field(
        None, min_length=1, max_length=100, description="Default: every region served."
    )
    provider: ProviderSlug | None = Field(None, description="Only this provider's deployments.")
    priority: Priority = Priority.NORMAL


class RecertifyRequest(ApiRequest):
    priority: Priority = Priority.LOW


# Answers to enqueue and cancel


class CertifyModelResponse(ApiModel):
    job_id: str
    model_id: str
    deployment_id: int
    deployment: str
    region: str
    priority: Priority
    status: Literal["QUEUED"] = "QUEUED"


class QueuedOut(ApiModel):
    deployment_id: int
    deployment: str
    region: str
    workflow_id: str


class RefusedOut(ApiModel):
    deployment_id: int
    deployment: str
    region: str
    reason: str


class EnqueueResponse(ApiModel):
    job_id: str | None = Field(description="None when there was nothing to queue.")
    kind: JobKind
    priority: Priority
    queued: list[QueuedOut]
    refused: list[RefusedOut]


class ErrorResponse(ApiModel):
    """Every error the API answers: what went wrong, and the field it is about."""

    detail: str
    field: str | None = Field(None, description="The request field at fault, when one is.")


class ValidationIssue(ApiModel):
    loc: list[str | int] = Field(description="Where: body, query, path or header, then names.")
    msg: str
    type: str


class ValidationErrorResponse(ErrorResponse):
    """422: the first problem in `detail` and `field`, every one in `errors`."""

    errors: list[ValidationIssue] = []


class ConflictResponse(ErrorResponse):
    refused: list[RefusedOut] = []


class CancelResponse(ApiModel):
    job_id: str
    cancelled: int = Field(description="Certifications stopped (queued or running).")
    status: str


# Jobs


class JobCertificationOut(ApiModel):
    deployment_id: int
    deployment: str | None = None
    region: str
    status: str | None = None
    run_id: int | None = None
    rating: float | None = None
    badge: str | None = None
    tests_passed: int | None = None
    tests_total: int | None = None
    tests_done: int | None = Field(
        default=None, description="Tests of the run stored so far (it grows while it runs)."
    )
    error_category: str | None = None
    error_message: str | None = None
    executor_id: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    simulated: bool | None = None
    cost_usd: float | None = Field(
        default=None, description="What the run cost (USD); null: no price, or not run."
    )


class JobSummaryOut(ApiModel):
    job_id: str
    kind: str
    status: str
    priority: str
    created_by: str | None
    scope: dict[str, Any]
    total: int
    processed: int
    succeeded: int
    failed: int
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    suites: list[str] | None = Field(
        default=None, description="The suites the job asked for; null: the default choice."
    )
    smoke: bool = False
    budget_usd: float | None = Field(default=None, description="The job's budget (USD).")
    cost_usd: float | None = Field(
        default=None,
        description="What the job's runs cost so far (USD); null: none with a known price.",
    )
    certifications: list[JobCertificationOut]


# Verdicts: runs, their tests, current certifications


def _label(deployment: Deployment) -> str:
    return f"{deployment.provider.slug}/{deployment.provider_model_id}"


class VerdictOut(ApiModel):
    """What a certification and each of its runs both record."""

    status: str
    score: int | None
    rating: float | None
    badge: str | None
    tests_total: int
    tests_passed: int
    tests_failed: int
    tests_skipped: int
    success_rate: float | None
    avg_latency_ms: float | None
    p50_latency_ms: float | None
    max_latency_ms: float | None
    total_retries: int
    error_category: str | None
    error_severity: str | None
    error_message: str | None
    simulated: bool
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: float | None


def _verdict(row: Certification | CertificationRun, deployment: Deployment) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in VerdictOut.model_fields}
    values.update(
        deployment_id=deployment.id,
        deployment=_label(deployment),
        provider=deployment.provider.slug,
        model_id=deployment.provider_model_id,
        region=row.region,
        job_id=row.job_id,
    )
    return values


class RunOut(VerdictOut):
    run_id: int
    deployment_id: int
    deployment: str
    provider: str
    model_id: str = Field(description="The provider's model id.")
    region: str
    job_id: str | None
    executor_id: str | None
    suites: list[str] = Field(
        default_factory=list,
        description="The suite versions the run ran (`name@version`, the built-in battery's "
        "included); empty for runs from before suites.",
    )
    cost_usd: float | None = Field(
        None, description="What the run's calls cost in US dollars; null: no price known."
    )

    @classmethod
    def of(cls, run: CertificationRun, deployment: Deployment) -> RunOut:
        """A run's summary (without its tests)."""
        return cls.model_validate(
            {
                **_verdict(run, deployment),
                "run_id": run.id,
                "executor_id": run.executor_id,
                "suites": list(run.suites or ()),
                "cost_usd": run.cost_usd,
            }
        )


class TestOut(ApiModel):
    __test__ = False  # not a pytest class, despite the name

    position: int
    test_id: str
    title: str
    outcome: str
    detail: str | None
    latency_ms: float | None
    ttft_ms: float | None
    retries: int
    attempts: int
    error_category: str | None
    error_severity: str | None
    error_code: str | None
    http_status: int | None
    error_message: str | None = Field(description="The provider's original error text.")
    input_tokens: int | None
    output_tokens: int | None
    throttled_s: float
    rate_limited: int = Field(description="Answers that were RATE_LIMIT (429 or throttling).")
    started_at: datetime | None
    duration_ms: float | None
    suite: str | None = Field(
        None, description="The suite version (`name@version`) of a suite's test; null: built-in."
    )
    weight: float = Field(1.0, description="How much the test counts toward the score.")
    required: bool = Field(False, description="A required test failing fails the run.")
    assertions: list[dict[str, Any]] | None = Field(
        None,
        description="A suite test's assertions, in order: `type`, `passed`, `detail`, an "
        "optional `description`, `children` (any-of / all-of); an llm-judge's `judge`, "
        "`score`, `reasoning` and tokens. Null: built-in, or no answer to judge.",
    )
    cost_usd: float | None = Field(
        None, description="What the test's calls cost (its judges' included); null: unknown."
    )

    @classmethod
    def of(cls, row: TestResultRow) -> TestOut:
        """One stored test result."""
        values = {name: getattr(row, name) for name in cls.model_fields}
        if values["weight"] is None:  # rows from before migration 0011 default to 1
            values["weight"] = 1.0
        values["required"] = bool(values["required"])
        return cls.model_validate(values)


class RunDetailOut(RunOut):
    tests: list[TestOut]

    @classmethod
    def of_run(cls, run: CertificationRun, deployment: Deployment) -> RunDetailOut:
        """A run with every test it ran or skipped."""
        summary = RunOut.of(run, deployment).model_dump()
        return cls.model_validate({**summary, "tests": [TestOut.of(t) for t in run.tests]})


class CertificationOut(VerdictOut):
    deployment_id: int
    deployment: str
    provider: str
    model_id: str = Field(description="The provider's model id.")
    region: str
    valid: bool = Field(description="CERTIFIED or QUALITY_WARNING, and not expired.")
    certified_at: datetime | None
    expires_at: datetime | None
    last_run_id: int | None
    job_id: str | None
    updated_at: datetime | None

    @classmethod
    def of(cls, c: Certification, now: datetime) -> CertificationOut:
        """The current certification of one deployment in one region."""
        return cls.model_validate(
            {
                **_verdict(c, c.deployment),
                "valid": c.is_valid(now),
                "certified_at": c.certified_at,
                "expires_at": c.expires_at,
                "last_run_id": c.last_run_id,
                "updated_at": c.updated_at,
            }
        )


class CertificationDetailOut(ApiModel):
    certification: CertificationOut
    runs: list[RunOut] = Field(description="The latest runs, newest first.")


class Page(ApiModel, Generic[T]):
    items: list[T]
    page: int
    page_size: int
    total: int = Field(description="Items matching the filters, on every page.")


class StatsOut(ApiModel):
    """Queue counts (the old queue's states), certification counts, the latest runs."""

    waiting: int
    delayed: int
    active: int
    completed: int
    failed: int
    cancelled: int
    paused: int
    by_region: dict[str, dict[str, int]]
    by_status: dict[str, int] = Field(description="Current certifications by status.")
    valid_certifications: int
    recent: list[RunOut]


class ProviderRegionsOut(ApiModel):
    provider: str
    name: str
    kind: str
    regions: list[str]


class RegionsOut(ApiModel):
    providers: list[ProviderRegionsOut]
    regions: list[str] = Field(description="Every region some active provider serves.")
