"""Certification reports: the current verdict of every deployment × region and the
recent status changes, for people and for CI gates (rendered by `reports.formats`).

`build_report` reads the database once; everything after it (states, reasons, changes,
the renderings) is pure, so the decisions are unit-tested without a database."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from modelcert.domain import CERTIFICATION_VALIDITY, CertificationStatus
from modelcert.errors import UserError
from modelcert.store import repo
from modelcert.store.models import Certification, CertificationRun, Deployment, Provider

SCHEMA = "modelcert.report/1"  # bump when a field of the JSON changes meaning or goes away
DEFAULT_SINCE = "7d"
NEVER_CERTIFIED = "NEVER_CERTIFIED"
EXPIRED = "EXPIRED"
VALID_STATUSES = (CertificationStatus.CERTIFIED.value, CertificationStatus.QUALITY_WARNING.value)
# Run statuses that are a verdict on the model; a CANCELLED run says nothing about it.
# Runs that changed the verdict (INCOMPLETE and CANCELLED runs gave none).
_VERDICTS = (*VALID_STATUSES, CertificationStatus.FAILED.value, CertificationStatus.ERROR.value)
_SINCE = re.compile(r"(\d+)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MESSAGE_LIMIT = 300  # Markdown and failure messages; the JSON keeps the full text


def parse_since(text: str, now: datetime) -> datetime:
    """`30m`, `12h`, `7d`, `2w` before `now`, or an ISO 8601 date or time (UTC if naive)."""
    value = text.strip()
    match = _SINCE.fullmatch(value)
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(
            f"since: {text!r} is neither a duration (30m, 12h, 7d, 2w) nor an ISO 8601 date",
            field="since",
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@dataclass(frozen=True)
class ReportFilters:
    provider: str | None = None
    region: str | None = None
    model: str | None = None
    since: str = DEFAULT_SINCE


@dataclass(frozen=True)
class Entry:
    """The current certification of one deployment in one region (or its absence)."""

    deployment_id: int
    provider: str
    model_id: str
    model: str
    region: str
    status: str | None  # as stored; None when never certified
    state: str  # status, or EXPIRED / NEVER_CERTIFIED
    valid: bool
    simulated: bool
    rating: float | None = None
    score: int | None = None
    badge: str | None = None
    certified_at: datetime | None = None
    expires_at: datetime | None = None
    error_category: str | None = None
    error_message: str | None = None
    last_run_id: int | None = None
    # What the last run proved and cost: the suite versions it ran, its price (None:
    # unknown).
    suites: tuple[str, ...] = ()
    last_run_cost_usd: float | None = None

    @property
    def deployment(self) -> str:
        return f"{self.provider}/{self.model_id}"

    @property
    def reason(self) -> str | None:
        """Why this is not a valid certification; None when it is."""
        if self.valid:
            return None
        if self.state == NEVER_CERTIFIED:
            return f"never certified in {self.region}"
        if self.state == EXPIRED:
            return f"certification expired at {when_iso(self.expires_at)}"
        if self.state in (CertificationStatus.QUEUED, CertificationStatus.RUNNING):
            return f"{self.state}: a certification is in progress, no verdict yet"
        if self.state == CertificationStatus.CANCELLED:
            return "CANCELLED: the last certification was cancelled before its verdict"
        if self.state == CertificationStatus.INCOMPLETE:
            return f"INCOMPLETE: no verdict ({self.error_message})"
        notes = [self.error_category] if self.error_category else []
        if self.badge == "UNAVAILABLE" and self.error_category != "UNAVAILABLE":
            notes.append("badge UNAVAILABLE")
        text = f"{self.state} ({', '.join(notes)})" if notes else self.state
        return f"{text}: {self.error_message}" if self.error_message else text


@dataclass(frozen=True)
class RunVerdict:
    """The outcome of one finished run, as the change history needs it."""

    run_id: int
    deployment_id: int
    region: str
    status: str
    completed_at: datetime
    error_category: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class Change:
    """A (deployment, region) went from one state to another (`from_state` None: its first
    verdict). `run_id` is None for an expiry, which no run causes."""

    deployment_id: int
    region: str
    from_state: str | None
    to_state: str
    changed_at: datetime
    run_id: int | None = None
    error_category: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    since: datetime
    filters: ReportFilters
    entries: list[Entry]
    changes: list[Change]
    labels: dict[int, str] = field(default_factory=dict)  # deployment id → provider/model-id

    @property
    def simulated(self) -> bool:
        return any(e.simulated for e in self.entries)

    def label(self, deployment_id: int) -> str:
        return self.labels.get(deployment_id, f"deployment {deployment_id}")


def certification_state(status: str | None, expires_at: datetime | None, now: datetime) -> str:
    """The stored status, except: no row → NEVER_CERTIFIED; a lapsed verdict → EXPIRED."""
    if status is None:
        return NEVER_CERTIFIED
    if status in VALID_STATUSES and (expires_at is None or expires_at <= now):
        return EXPIRED
    return status


def derive_changes(runs: Iterable[RunVerdict], since: datetime, now: datetime) -> list[Change]:
    """State transitions at or after `since`, newest first, from finished runs (give each
    pair's last verdict before `since` too, so that the first change in the window has
    its "from"). A valid verdict not renewed within its validity EXPIRES in between."""
    by_pair: dict[tuple[int, str], list[RunVerdict]] = {}
    for run in sorted(runs, key=lambda r: (r.completed_at, r.run_id)):
        by_pair.setdefault((run.deployment_id, run.region), []).append(run)
    changes = [change for history in by_pair.values() for change in _pair_changes(history, now)]
    recent = [c for c in changes if since <= c.changed_at <= now]
    return sorted(recent, key=lambda c: (c.changed_at, c.run_id or 0), reverse=True)


def _pair_changes(history: Sequence[RunVerdict], now: datetime) -> list[Change]:
    """Every transition of one (deployment, region), from its runs in completion order."""
    changes: list[Change] = []
    state: str | None = None
    valid_until: datetime | None = None
    for run in [*history, None]:
        moment = now if run is None else run.completed_at
        if valid_until is not None and valid_until <= moment:
            first = history[0]
            changes.append(Change(first.deployment_id, first.region, state, EXPIRED, valid_until))
            state, valid_until = EXPIRED, None
        if run is None:
            break
        if run.status != state:
            changes.append(
                Change(
                    run.deployment_id,
                    run.region,
                    state,
                    run.status,
                    run.completed_at,
                    run.run_id,
                    run.error_category,
                    run.error_message,
                )
            )
        state = run.status
        valid_until = run.completed_at + CERTIFICATION_VALIDITY if state in VALID_STATUSES else None
    return changes


def _entry(deployment: Deployment, region: str, c: Certification | None, now: datetime) -> Entry:
    provider = deployment.provider
    if c is None:
        return Entry(
            deployment_id=deployment.id,
            provider=provider.slug,
            model_id=deployment.provider_model_id,
            model=deployment.model.name,
            region=region,
            status=None,
            state=NEVER_CERTIFIED,
            valid=False,
            simulated=provider.kind == "sim",
        )
    state = certification_state(c.status, c.expires_at, now)
    return Entry(
        deployment_id=deployment.id,
        provider=provider.slug,
        model_id=deployment.provider_model_id,
        model=deployment.model.name,
        region=region,
        status=c.status,
        state=state,
        # The rule of the whole service (Certification.is_valid): a renewal that is
        # queued, running or was cancelled leaves the verdict it renews valid until it
        # expires, so a nightly re-certification does not fail release gates meanwhile.
        valid=c.is_valid(now),
        simulated=c.simulated or provider.kind == "sim",
        rating=c.rating,
        score=c.score,
        badge=c.badge,
        certified_at=c.certified_at,
        expires_at=c.expires_at,
        error_category=c.error_category,
        error_message=c.error_message,
        last_run_id=c.last_run_id,
    )


def _check_region(session: Session, region: str) -> None:
    served = {r for regions in session.scalars(select(Provider.regions)) for r in regions}
    served |= set(session.scalars(select(Certification.region).distinct()))
    if region not in served:
        known = ", ".join(sorted(served)) or "none"
        raise UserError(f"unknown region {region!r} (known: {known})", field="region")


def build_report(session: Session, filters: ReportFilters, now: datetime) -> Report:
    """Every current certification matching the filters, each active deployment's served
    regions it was never certified in, and the changes since `filters.since`."""
    since = parse_since(filters.since, now)
    deployments = select(Deployment).join(Provider)
    if filters.provider:
        deployments = deployments.where(
            Provider.id == repo.get_provider(session, filters.provider).id
        )
    if filters.model:
        found = repo.find_deployment(session, filters.model)
        deployments = deployments.where(Deployment.id == found.id)
    if filters.region:
        _check_region(session, filters.region)
    catalog = {d.id: d for d in session.scalars(deployments).unique()}

    current = select(Certification).where(Certification.deployment_id.in_(list(catalog)))
    if filters.region:
        current = current.where(Certification.region == filters.region)
    stored = {(c.deployment_id, c.region): c for c in session.scalars(current).unique()}
    pairs = set(stored)
    for d in catalog.values():
        if d.active and d.provider.active:
            served = d.provider.regions
            pairs |= {(d.id, r) for r in served if filters.region in (None, r)}
    entries = sorted(
        (_entry(catalog[d], r, stored.get((d, r)), now) for d, r in pairs),
        key=lambda e: (e.provider, e.model_id, e.region),
    )
    entries = _with_last_runs(session, entries)
    runs = _run_verdicts(session, list(catalog), filters.region, since)
    labels = {d.id: f"{d.provider.slug}/{d.provider_model_id}" for d in catalog.values()}
    return Report(now, since, filters, entries, derive_changes(runs, since, now), labels)


def _with_last_runs(session: Session, entries: list[Entry]) -> list[Entry]:
    """Each entry with its last run's suites and cost (one query for all)."""
    ids = [e.last_run_id for e in entries if e.last_run_id is not None]
    if not ids:
        return entries
    found = {
        run_id: (tuple(suites or ()), cost)
        for run_id, suites, cost in session.execute(
            select(CertificationRun.id, CertificationRun.suites, CertificationRun.cost_usd).where(
                CertificationRun.id.in_(ids)
            )
        )
    }
    return [
        replace(e, suites=found[e.last_run_id][0], last_run_cost_usd=found[e.last_run_id][1])
        if e.last_run_id in found
        else e
        for e in entries
    ]


def _run_verdicts(
    session: Session, deployment_ids: list[int], region: str | None, since: datetime
) -> list[RunVerdict]:
    """Verdict runs finished since `since`, and each pair's last one before it. Expiry
    looks back one validity period further: a verdict from then may lapse in the window."""
    run = CertificationRun
    scope: list[ColumnElement[bool]] = [
        run.deployment_id.in_(deployment_ids),
        run.status.in_(_VERDICTS),
        run.completed_at.is_not(None),
    ]
    if region:
        scope.append(run.region == region)
    horizon = since - CERTIFICATION_VALIDITY
    before = (
        select(func.max(run.id))
        .where(*scope, run.completed_at < horizon)
        .group_by(run.deployment_id, run.region)
    )
    columns = select(
        run.id,
        run.deployment_id,
        run.region,
        run.status,
        run.completed_at,
        run.error_category,
        run.error_message,
    ).where(*scope)
    rows = session.execute(columns.where((run.completed_at >= horizon) | run.id.in_(before)))
    return [
        RunVerdict(id_, deployment_id, region_, status, completed_at, category, message)
        for id_, deployment_id, region_, status, completed_at, category, message in rows
        if completed_at is not None
    ]


# Requirements: the CI gate.


@dataclass(frozen=True)
class Requirement:
    model: str
    region: str

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """`MODEL@REGION`; MODEL as `--deployment` takes it (id, provider/model-id, …)."""
        model, _, region = text.strip().rpartition("@")
        if not model or not region:
            raise UserError(f"--require: expected MODEL@REGION, got {text!r}", field="require")
        return cls(model, region)

    def __str__(self) -> str:
        return f"{self.model}@{self.region}"


def check_requirements(
    session: Session, requirements: Sequence[Requirement], now: datetime
) -> list[tuple[Requirement, Entry]]:
    """Each requirement with the entry it names; unknown deployments or regions a provider
    does not serve are `UserError`s (a typo must not pass or fail a gate silently)."""
    checked = []
    for requirement in requirements:
        deployment = repo.find_deployment(session, requirement.model)
        stored = session.scalar(
            select(Certification).where(
                Certification.deployment_id == deployment.id,
                Certification.region == requirement.region,
            )
        )
        if stored is None:
            repo.check_region(deployment.provider, requirement.region)
        checked.append((requirement, _entry(deployment, requirement.region, stored, now)))
    return checked


def when_iso(value: datetime | None) -> str | None:
    """A moment as ISO 8601 in UTC, to the second (None stays None)."""
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else None
