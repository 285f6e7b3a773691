"""ORM models: the catalog (Provider, Model, Deployment), the verdicts (Certification,
one current row per deployment × region; CertificationRun, every execution, with its
TestResult rows) and Job (a batch someone asked for)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    and_,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from modelcert.domain import CertificationStatus, InferenceType, JobStatus, Priority


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Named constraints, so that later migrations can alter them on SQLite (batch mode) too.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Provider(Base):
    __tablename__ = "providers"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # bedrock | openai | sim
    name: Mapped[str] = mapped_column(String(200))
    base_url: Mapped[str | None] = mapped_column(String(500))
    auth_type: Mapped[str] = mapped_column(String(32), default="none")
    regions: Mapped[list[str]] = mapped_column(default=list)
    # Connection options; never secrets (keys are referenced by env var name).
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    deployments: Mapped[list[Deployment]] = relationship(back_populates="provider")


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("vendor", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    vendor: Mapped[str] = mapped_column(String(64))
    family: Mapped[str | None] = mapped_column(String(100))
    capabilities: Mapped[dict[str, Any]] = mapped_column(default=dict)
    deprecated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("provider_id", "provider_model_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    provider_model_id: Mapped[str] = mapped_column(String(300))
    inference_type: Mapped[str] = mapped_column(String(32), default=InferenceType.ON_DEMAND.value)
    cost_input_per_mtok: Mapped[float | None] = mapped_column(Float)
    cost_output_per_mtok: Mapped[float | None] = mapped_column(Float)
    # A fee per answered call, beside the token prices (migration 0011); the three
    # override the seed table (`modelcert.cost.prices`) for this deployment.
    cost_per_request: Mapped[float | None] = mapped_column(Float)
    # Free-form per-deployment options (sim profile, test timeout, retry base…).
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    provider: Mapped[Provider] = relationship(back_populates="deployments", lazy="joined")
    model: Mapped[Model] = relationship(lazy="joined")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    # What was asked: {"deployments": [ids], "regions": [...], ...}
    scope: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[str] = mapped_column(String(8), default=Priority.NORMAL.value)
    created_by: Mapped[str | None] = mapped_column(String(200))
    total: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    # What the job certifies with (migration 0011): suite names (None: the default
    # selection), smoke mode, and the most it may spend (None: no budget of its own).
    suites: Mapped[list[str] | None] = mapped_column(JSON)
    smoke: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    budget_usd: Mapped[float | None] = mapped_column(Float)


class _VerdictColumns:
    """Summary columns shared by a certification and each of its runs."""

    status: Mapped[str] = mapped_column(String(20), default=CertificationStatus.PENDING.value)
    score: Mapped[int | None] = mapped_column(Integer)
    rating: Mapped[float | None] = mapped_column(Float)
    badge: Mapped[str | None] = mapped_column(String(20))
    tests_total: Mapped[int] = mapped_column(Integer, default=0)
    tests_passed: Mapped[int] = mapped_column(Integer, default=0)
    tests_failed: Mapped[int] = mapped_column(Integer, default=0)
    tests_skipped: Mapped[int] = mapped_column(Integer, default=0)
    success_rate: Mapped[float | None] = mapped_column(Float)
    avg_latency_ms: Mapped[float | None] = mapped_column(Float)
    p50_latency_ms: Mapped[float | None] = mapped_column(Float)
    max_latency_ms: Mapped[float | None] = mapped_column(Float)
    total_retries: Mapped[int] = mapped_column(Integer, default=0)
    error_category: Mapped[str | None] = mapped_column(String(32))
    error_severity: Mapped[str | None] = mapped_column(String(16))
    error_message: Mapped[str | None] = mapped_column(Text)
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    duration_ms: Mapped[float | None] = mapped_column(Float)


class Certification(_VerdictColumns, Base):
    __tablename__ = "certifications"
    __table_args__ = (
        UniqueConstraint("deployment_id", "region"),
        Index("ix_certifications_status", "status"),
        Index("ix_certifications_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    region: Mapped[str] = mapped_column(String(64))
    certified_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    last_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("certification_runs.id", use_alter=True, ondelete="SET NULL")
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    deployment: Mapped[Deployment] = relationship(lazy="joined")

    def is_valid(self, now: datetime) -> bool:
        """THE validity rule (in SQL: `valid_clause`, next to it; use no other).

        Valid while the last verdict on the model was CERTIFIED or QUALITY_WARNING and has
        not expired. `expires_at` is set by a valid verdict and cleared by an invalid one,
        so it alone says so: a renewal that is QUEUED, RUNNING, INCOMPLETE, ERROR or was
        cancelled says nothing about the model and leaves the verdict it renews valid until
        that expires."""
        return self.expires_at is not None and self.expires_at > now

    @classmethod
    def valid_clause(cls, now: datetime) -> ColumnElement[bool]:
        """`is_valid` in SQL: `select(Certification).where(Certification.valid_clause(now))`."""
        # The IS NOT NULL makes `not_(valid_clause(now))` true for a NULL expires_at too.
        return and_(cls.expires_at.is_not(None), cls.expires_at > now)


class CertificationRun(_VerdictColumns, Base):
    __tablename__ = "certification_runs"
    __table_args__ = (
        # Trends read a pair's runs in a time range (migration 0008).
        Index("ix_runs_deployment_region_started", "deployment_id", "region", "started_at"),
        Index("uq_runs_run_key", "run_key", unique=True),
        # The day's spending (the daily budget) and cost reports read runs by start (0011).
        Index("ix_runs_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Who opened the run: the durable workflow's id (a re-executed `prepare` finds its run
    # by it instead of opening another), or `local-...` for an in-process certification.
    run_key: Mapped[str | None] = mapped_column(String(200))
    certification_id: Mapped[int] = mapped_column(
        ForeignKey("certifications.id", ondelete="CASCADE")
    )
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    region: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    executor_id: Mapped[str | None] = mapped_column(String(200))
    # The suite versions the run ran ("name@version"; migration 0011) and what it cost.
    suites: Mapped[list[str] | None] = mapped_column(JSON)
    cost_usd: Mapped[float | None] = mapped_column(Float)  # set when the run closes
    # What it was expected to cost when it started: budgets reserve it while it runs.
    estimate_usd: Mapped[float | None] = mapped_column(Float)

    tests: Mapped[list[TestResultRow]] = relationship(
        back_populates="run", order_by="TestResultRow.position", cascade="all, delete-orphan"
    )


class Suite(Base):
    """One version of a test suite, as loaded from its file (`modelcert.suites`)."""

    __tablename__ = "suites"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))  # content hash of the definition
    description: Mapped[str | None] = mapped_column(Text)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)  # validated, normalised
    source: Mapped[str] = mapped_column(Text)  # the YAML as loaded
    source_name: Mapped[str | None] = mapped_column(String(500))  # the file it came from
    current: Mapped[bool] = mapped_column(Boolean, default=True)  # the name's latest
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # False: removed
    loaded_by: Mapped[str | None] = mapped_column(String(200))
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow)


class TestResultRow(Base):
    """One test of one run."""

    __test__ = False
    __tablename__ = "test_results"
    __table_args__ = (UniqueConstraint("run_id", "test_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("certification_runs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    test_id: Mapped[str] = mapped_column(String(200))  # `suite/test` for a suite's own
    title: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_category: Mapped[str | None] = mapped_column(String(32))
    error_severity: Mapped[str | None] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(200))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)  # the provider's original text
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    throttled_s: Mapped[float] = mapped_column(Float, default=0.0)
    # RATE_LIMIT answers the test got (migration 0009); `retries` counts every retry.
    rate_limited: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    started_at: Mapped[datetime | None]
    duration_ms: Mapped[float | None] = mapped_column(Float)
    # Migration 0011: the suite ("name@version") the test came from, how it counts, what
    # each of its assertions decided, and what its calls cost (judge calls included).
    suite: Mapped[str | None] = mapped_column(String(140))
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    required: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    assertions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    cost_usd: Mapped[float | None] = mapped_column(Float)

    run: Mapped[CertificationRun] = relationship(back_populates="tests")
