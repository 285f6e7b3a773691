"""The one Settings object: from the environment and `.env`.

The old system's variable names (DOMAIN §6) keep their meaning and defaults;
durations stay in milliseconds where they were milliseconds. New knobs use the
`MODELCERT_` prefix.
"""

from __future__ import annotations

from functools import lru_cache

from croniter import croniter  # type: ignore[import-untyped]
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Levels every entry point accepts (logging's and uvicorn's names alike).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The databases this project runs on, and their drivers (psycopg 3 for PostgreSQL).
SUPPORTED_DRIVERS = {"sqlite": ("pysqlite",), "postgresql": ("psycopg",)}
DATABASE_URL_FORMS = "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/NAME"


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        # A duration or rate of inf or nan is never meant (and would overflow where used).
        allow_inf_nan=False,
    )

    database_url: str = Field(
        "sqlite:///modelcert.db",
        validation_alias=_env("MODELCERT_DATABASE_URL"),
        description="SQLAlchemy URL; the default is a SQLite file in the working directory.",
    )
    certification_queue_name: str = Field(
        "model-certification", validation_alias=_env("CERTIFICATION_QUEUE_NAME")
    )
    certification_concurrency: int = Field(
        10,
        ge=1,
        validation_alias=_env("CERTIFICATION_CONCURRENCY"),
        description=(
            "Certifications in flight at once per worker. The work is network-bound async "
            "I/O (each certification waits on its provider most of the time), so one "
            "process keeps 10 busy on a fraction of a core; the old default was 3 and "
            "was never applied."
        ),
    )
    shared_pacing: bool = Field(
        True,
        validation_alias=_env("MODELCERT_SHARED_PACING"),
        description=(
            "Workers pace a provider quota together once it answers 429: one schedule of "
            "call starts and one rate learnt from the 429s per quota, kept in the database "
            "(`quota_pacing`, one UPDATE per call start while a quota is paced, nothing "
            "before its first 429). `false`: each worker learns its own rate (N workers "
            "then probe the quota N times over)."
        ),
    )
    worker_prefetch: int = Field(
        0,
        ge=0,
        le=1000,
        validation_alias=_env("MODELCERT_WORKER_PREFETCH"),
        description=(
            "Certifications a worker claims beyond those it runs (they wait in it for a "
            "slot): 0 splits a batch evenly over the workers and strands nothing but "
            "in-flight work when one dies; a few hide the claim's round trip when "
            "certifications are very short."
        ),
    )
    region_concurrency: int = Field(
        20,
        ge=1,
        validation_alias=_env("MODELCERT_REGION_CONCURRENCY"),
        description="Certifications running at once in one region, across all workers.",
    )
    region_start_rate_per_second: float = Field(
        5.0,
        gt=0,
        validation_alias=_env("MODELCERT_REGION_START_RATE"),
        description="Certification starts per second in one region, across all workers.",
    )
    queue_polling_interval_s: float = Field(
        0.5,
        gt=0,
        validation_alias=_env("MODELCERT_QUEUE_POLL_S"),
        description=(
            "How often a worker looks again at work it saw waiting but could not claim "
            "(its regions at their limits) and, on SQLite, how often an idle worker looks "
            "for work (on PostgreSQL an idle worker waits on LISTEN/NOTIFY instead). One "
            "query per look, whatever the number of regions."
        ),
    )
    executor_id: str | None = Field(
        None,
        validation_alias=_env("MODELCERT_EXECUTOR_ID"),
        description="Stable, unique id of a worker process (default: host name + worker name).",
    )
    worker_dead_after_s: float = Field(
        60.0,
        gt=0,
        validation_alias=_env("MODELCERT_WORKER_DEAD_AFTER_S"),
        description=(
            "A worker whose heartbeat the reaper watched stand still this long is dead: its "
            "work is requeued (at least 5 s: 2.5 heartbeat intervals)."
        ),
    )
    shutdown_grace_s: float = Field(
        60.0,
        ge=0,
        validation_alias=_env("MODELCERT_SHUTDOWN_GRACE_S"),
        description=(
            "On SIGTERM, how long in-flight certifications may take to finish (heartbeats go "
            "on meanwhile; what is left goes back to the queue)."
        ),
    )
    certification_timeout_ms: int = Field(
        300_000,
        ge=1,
        validation_alias=_env("CERTIFICATION_TIMEOUT"),
        description="Upper bound for one whole certification, in milliseconds.",
    )
    certification_max_retries: int = Field(
        3,
        ge=0,
        validation_alias=_env("CERTIFICATION_MAX_RETRIES"),
        description="Retries of one provider call for temporary error categories.",
    )
    retry_base_ms: int = Field(
        2_000,
        ge=0,
        validation_alias=_env("MODELCERT_RETRY_BASE_MS"),
        description="First retry delay; doubles each retry (with jitter).",
    )
    retry_max_ms: int = Field(
        16_000,
        ge=0,
        validation_alias=_env("MODELCERT_RETRY_MAX_MS"),
        description="Cap on one retry delay (Retry-After from the provider may exceed it).",
    )
    daily_budget_usd: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        validation_alias=_env("MODELCERT_DAILY_BUDGET_USD"),
        description=(
            "Most that certification may spend per UTC day, all jobs together, in US "
            "dollars at the deployments' prices. A certification whose estimate would "
            "exceed what is left is not started (SKIPPED, saying so). Unset: no daily limit."
        ),
    )
    availability_gap_s: float = Field(
        2.0,
        ge=0,
        validation_alias=_env("MODELCERT_AVAILABILITY_GAP_S"),
        description=(
            "Pause between the two calls of the `availability` test. Keep 2 s in "
            "production; the test suite sets it near 0 instead of waiting."
        ),
    )
    worker_health_port: int = Field(
        3002,
        ge=0,
        le=65535,
        validation_alias=_env("WORKER_HEALTH_PORT"),
        description=(
            "Port of a worker's health server (/live, /ready, /health, /metrics); 0: any free port."
        ),
    )
    worker_health_host: str = Field(
        "0.0.0.0",
        validation_alias=_env("MODELCERT_WORKER_HEALTH_HOST"),
        description=(
            "Address the worker health server binds: all interfaces by default, so that "
            "Kubernetes probes and Prometheus can reach it; 127.0.0.1 keeps it local."
        ),
    )
    start_rate_per_second: float = Field(
        5.0,
        gt=0,
        validation_alias=_env("MODELCERT_START_RATE_PER_SECOND"),
        description="Global certification start rate (the old queue's 5 jobs/s).",
    )
    aws_region: str = Field(
        "us-east-1",
        validation_alias=_env("AWS_REGION", "AWS_DEFAULT_REGION"),
        description="Default region for AWS calls that need one.",
    )
    log_level: str = Field(
        "INFO",
        validation_alias=_env("MODELCERT_LOG_LEVEL", "LOG_LEVEL"),
        description="DEBUG, INFO, WARNING, ERROR or CRITICAL (any case); anything else is refused.",
    )
    log_json: bool = Field(
        False,
        validation_alias=_env("MODELCERT_LOG_JSON"),
        description="JSON log lines (for machines) instead of console lines (for people).",
    )

    recertify_schedule: str = Field(
        "*/10 * * * *",
        validation_alias=_env("MODELCERT_RECERTIFY_SCHEDULE"),
        description=(
            "When workers look for certifications due for re-certification: a cron "
            "expression (5 fields, or 6 with seconds first, UTC), or `off`."
        ),
    )
    recertify_window_h: float = Field(
        24.0,
        gt=0,
        validation_alias=_env("MODELCERT_RECERTIFY_WINDOW_H"),
        description="Re-queue a valid certification this many hours before it expires.",
    )
    recertify_failed_after_h: float = Field(
        6.0,
        gt=0,
        validation_alias=_env("MODELCERT_RECERTIFY_FAILED_AFTER_H"),
        description="Retry a FAILED or ERROR certification this many hours after its last run.",
    )

    trend_metrics_max_pairs: int = Field(
        1000,
        ge=0,
        validation_alias=_env("MODELCERT_TREND_METRICS_MAX_PAIRS"),
        description=(
            "The API's /metrics exports latency p50/p95, pass ratio and runs of the last "
            "24 h for at most this many deployment × region pairs (those run most recently; "
            '`modelcert_deployment_trend_pairs{state="omitted"}` counts the others): '
            "4 series a pair. 1000 is a fleet of 50 deployments × 20 regions; 0 "
            "turns these series off."
        ),
    )

    notify_timeout_s: float = Field(
        10.0,
        gt=0,
        le=120,
        validation_alias=_env("MODELCERT_NOTIFY_TIMEOUT_S"),
        description="How long one notification delivery attempt waits for the receiver.",
    )
    notify_max_attempts: int = Field(
        6,
        ge=1,
        le=20,
        validation_alias=_env("MODELCERT_NOTIFY_MAX_ATTEMPTS"),
        description=(
            "Attempts per notification delivery (network errors, 5xx and 429 are retried) "
            "before it is marked failed."
        ),
    )
    notify_retry_base_s: float = Field(
        2.0,
        ge=0,
        le=3600,
        validation_alias=_env("MODELCERT_NOTIFY_RETRY_BASE_S"),
        description=(
            "Backoff before a notification's second attempt; doubled for each next one "
            "(a durable sleep: a restarted worker keeps the schedule)."
        ),
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        # Refused here, at start-up and in one line, rather than as a traceback from the
        # first connection. The value is never echoed: it may hold a password.
        try:
            url = make_url(value.strip().replace("postgres://", "postgresql://", 1))
        except (ArgumentError, ValueError):
            raise ValueError(f"not a database URL; expected {DATABASE_URL_FORMS}") from None
        backend, _, driver = url.drivername.partition("+")
        if backend not in SUPPORTED_DRIVERS or (
            driver and driver not in SUPPORTED_DRIVERS[backend]
        ):
            raise ValueError(
                f"unsupported database driver {url.drivername!r}; expected {DATABASE_URL_FORMS}"
            )
        return value.strip()

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
        return level

    @field_validator("recertify_schedule")
    @classmethod
    def _check_recertify_schedule(cls, value: str) -> str:
        value = value.strip()
        if value.lower() == "off":
            return "off"
        # The same check DBOS applies when the schedule is installed, but at start-up.
        if not croniter.is_valid(value, second_at_beginning=True):
            raise ValueError(
                "must be a cron expression (5 fields, or 6 with seconds first) or 'off', "
                f"not {value!r}"
            )
        return value

    @property
    def recertify_enabled(self) -> bool:
        return self.recertify_schedule != "off"

    @property
    def certification_timeout_s(self) -> float:
        return self.certification_timeout_ms / 1000

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
