"""Which certifications the re-certification schedule finds due, on real rows (SQLite and
PostgreSQL), at an injected "now"; and what one pass queues."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.errors import UserError
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.schedule import recertify_due, recertify_policy, select_due
from modelcert.obs.metrics import REGISTRY
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, Deployment, Job, Provider, utcnow

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=utcnow().tzinfo)
H = timedelta(hours=1)


def _provider(session: Session, slug: str, config: dict[str, Any] | None = None) -> None:
    repo.add_provider(
        session, slug=slug, kind="sim", regions=["us-east-1", "eu-west-1"], config=config or {}
    )


def _deployment(session: Session, provider: str, model: str) -> int:
    return repo.add_deployment(session, provider_slug=provider, provider_model_id=model).id


def _certification(
    session: Session,
    deployment_id: int,
    region: str,
    status: str,
    *,
    expires_at: datetime | None = None,
    completed_at: datetime | None = None,
) -> None:
    session.add(
        Certification(
            deployment_id=deployment_id,
            region=region,
            status=status,
            expires_at=expires_at,
            completed_at=completed_at,
            certified_at=None if expires_at is None else expires_at - timedelta(days=7),
        )
    )
    session.flush()


def _due(factory: sessionmaker[Session], settings: Settings) -> dict[str, str]:
    with transaction(factory) as session:
        report = select_due(session, settings, NOW)
    return {d.label: d.reason for d in report.due}


def test_valid_certifications_are_due_within_the_window_and_once_expired(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    with transaction(factory) as session:
        _provider(session, "lab")
        soon = _deployment(session, "lab", "soon")
        later = _deployment(session, "lab", "later")
        _certification(session, soon, "us-east-1", "CERTIFIED", expires_at=NOW + 23 * H)
        _certification(session, soon, "eu-west-1", "QUALITY_WARNING", expires_at=NOW - H)
        _certification(session, later, "us-east-1", "CERTIFIED", expires_at=NOW + 25 * H)
        # Already on its way: never selected again.
        _certification(session, later, "eu-west-1", "QUEUED", expires_at=NOW + H)
    assert _due(factory, settings) == {
        "lab/soon@us-east-1": "expiring",
        "lab/soon@eu-west-1": "expired",
    }


def test_failed_certifications_are_due_once_the_retry_interval_has_passed(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    with transaction(factory) as session:
        _provider(session, "lab")
        flaky = _deployment(session, "lab", "flaky")
        broken = _deployment(session, "lab", "broken")
        _certification(session, flaky, "us-east-1", "FAILED", completed_at=NOW - 7 * H)
        _certification(session, flaky, "eu-west-1", "FAILED", completed_at=NOW - 5 * H)
        _certification(session, broken, "us-east-1", "ERROR", completed_at=NOW - 6 * H)
        # Cancelled on purpose, or never run: not the schedule's business.
        _certification(session, broken, "eu-west-1", "CANCELLED", completed_at=NOW - 48 * H)
    assert _due(factory, settings) == {
        "lab/flaky@us-east-1": "failed",
        "lab/broken@us-east-1": "failed",
    }
    # The defaults (24 h window, 6 h retry) follow the settings.
    slower = settings.model_copy(update={"recertify_failed_after_h": 8.0})
    assert _due(factory, slower) == {}


def test_provider_config_overrides_or_disables_the_schedule(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    with transaction(factory) as session:
        _provider(session, "off", {"recertify": {"enabled": False}})
        _provider(session, "eager", {"recertify": {"window_h": 72, "failed_after_h": 1}})
        _provider(session, "default")
        for slug in ("off", "eager", "default"):
            model = _deployment(session, slug, "m")
            _certification(session, model, "us-east-1", "CERTIFIED", expires_at=NOW + 48 * H)
            _certification(session, model, "eu-west-1", "FAILED", completed_at=NOW - 2 * H)
    assert _due(factory, settings) == {
        "eager/m@us-east-1": "expiring",
        "eager/m@eu-west-1": "failed",
    }


def test_inactive_deployments_and_providers_are_never_requeued(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    with transaction(factory) as session:
        _provider(session, "lab")
        _provider(session, "retired")
        for slug, model in (("lab", "live"), ("lab", "gone"), ("retired", "m")):
            deployment_id = _deployment(session, slug, model)
            _certification(session, deployment_id, "us-east-1", "FAILED", completed_at=NOW - 30 * H)
        gone = select(Deployment).where(Deployment.provider_model_id == "gone")
        session.scalars(gone).one().active = False
        session.scalars(select(Provider).where(Provider.slug == "retired")).one().active = False
    assert _due(factory, settings) == {"lab/live@us-east-1": "failed"}


def test_a_region_the_provider_no_longer_serves_is_left_out(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    with transaction(factory) as session:
        _provider(session, "lab")
        model = _deployment(session, "lab", "m")
        _certification(session, model, "us-east-1", "CERTIFIED", expires_at=NOW + H)
        _certification(session, model, "eu-west-1", "CERTIFIED", expires_at=NOW + H)
        repo.get_provider(session, "lab").regions = ["us-east-1"]
    assert _due(factory, settings) == {"lab/m@us-east-1": "expiring"}


def test_a_misconfigured_provider_is_skipped_and_reported(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    with transaction(factory) as session:
        _provider(session, "typo", {"recertify": {"window": 12}})
        _provider(session, "lab")
        for slug in ("typo", "lab"):
            model = _deployment(session, slug, "m")
            _certification(session, model, "us-east-1", "CERTIFIED", expires_at=NOW + H)
    with transaction(factory) as session:
        report = select_due(session, settings, NOW)
    assert [d.label for d in report.due] == ["lab/m@us-east-1"]
    assert len(report.misconfigured) == 1
    assert report.misconfigured[0].startswith("typo: config.recertify: unknown key 'window'")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"window_h": 0}, "config.recertify.window_h"),
        ({"window_h": "12"}, "config.recertify.window_h"),
        ({"failed_after_h": -1}, "config.recertify.failed_after_h"),
        ({"failed_after_h": True}, "config.recertify.failed_after_h"),
        ({"enabled": "no"}, "config.recertify.enabled"),
        ({"every": 3}, "config.recertify.every"),
    ],
)
def test_bad_provider_overrides_name_the_key(override: dict[str, Any], field: str) -> None:
    with pytest.raises(UserError) as raised:
        recertify_policy({"recertify": override}, Settings())
    assert raised.value.field == field


def test_policy_defaults_come_from_the_settings() -> None:
    settings = Settings(recertify_window_h=2, recertify_failed_after_h=0.5)
    policy = recertify_policy({}, settings)
    assert (policy.enabled, policy.window, policy.failed_after) == (True, 2 * H, H / 2)
    assert recertify_policy({"recertify": {"window_h": 48}}, settings).window == 48 * H


@pytest.fixture
def enqueuer(engine: Engine, settings: Settings) -> Iterator[Enqueuer]:
    value = Enqueuer(engine, settings)
    yield value
    value.close()


def _queued_count(reason: str) -> float:
    labels = {"reason": reason, "outcome": "queued"}
    return REGISTRY.get_sample_value("modelcert_recertifications_total", labels) or 0.0


def test_one_pass_queues_one_low_priority_job_by_the_scheduler(
    factory: sessionmaker[Session], settings: Settings, enqueuer: Enqueuer
) -> None:
    now = utcnow()
    with transaction(factory) as session:
        _provider(session, "lab")
        model = _deployment(session, "lab", "m")
        _certification(session, model, "us-east-1", "CERTIFIED", expires_at=now + H)
        _certification(session, model, "eu-west-1", "FAILED", completed_at=now - 7 * H)
    before = _queued_count("expiring")

    preview = recertify_due(factory, settings, None, now=now, dry_run=True)
    assert len(preview.due) == 2 and preview.job_id is None and not preview.queued
    with transaction(factory) as session:
        assert session.scalars(select(Job)).all() == []

    report = recertify_due(factory, settings, enqueuer, now=now)
    assert sorted(d.label for d in report.queued) == ["lab/m@eu-west-1", "lab/m@us-east-1"]
    assert report.refused == []
    with transaction(factory) as session:
        job = session.scalars(select(Job)).one()
        statuses = {c.region: c.status for c in session.scalars(select(Certification))}
    assert (job.id, job.kind, job.priority, job.created_by, job.total) == (
        report.job_id,
        "RECERTIFY",
        "low",
        "scheduler",
        2,
    )
    assert statuses == {"us-east-1": "QUEUED", "eu-west-1": "QUEUED"}
    assert _queued_count("expiring") == before + 1

    # The next tick finds nothing due (both are queued) and leaves no job behind.
    again = recertify_due(factory, settings, enqueuer, now=now)
    assert again.due == [] and again.job_id is None
    with transaction(factory) as session:
        assert len(session.scalars(select(Job)).all()) == 1
