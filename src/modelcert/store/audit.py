"""The audit log: who did what to the queue or the catalog, and when.

One row per operator action (pause / resume a region, change a job's priority, cancel a
job, retry its failures, deactivate / reactivate / remove a deployment or a provider,
load or remove a test suite),
written by `modelcert.api.operations` for the API, the CLI and the dashboard alike, in the
transaction of the change itself where the change is ours alone. Never a secret: the
actor is an API key's *name* or the operating-system user, never a key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelcert.store.models import Base, utcnow

# Where an action came from.
INTERFACES = ("api", "cli", "dashboard")

# The actions there are (the API documents them; `modelcert audit --action` takes them).
ACTIONS = (
    "region.pause",
    "region.resume",
    "job.priority",
    "job.cancel",
    "job.retry_failed",
    "deployment.deactivate",
    "deployment.activate",
    "deployment.remove",
    "deployment.price_set",
    "deployment.price_clear",
    "provider.deactivate",
    "provider.activate",
    "provider.remove",
    "suite.load",
    "suite.remove",
)

MAX_LIMIT = 1000


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))  # API key name, or the OS user
    interface: Mapped[str] = mapped_column(String(16))  # api | cli | dashboard
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(300))  # region, job id, provider/model…
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "interface": self.interface,
            "action": self.action,
            "target": self.target,
            "details": self.details,
        }


def record(
    session: Session,
    *,
    actor: str,
    interface: str,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Add one entry to the log, in the caller's transaction."""
    if interface not in INTERFACES:
        raise ValueError(f"unknown interface {interface!r}")
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    entry = AuditEntry(
        at=at or utcnow(),
        actor=actor[:200],
        interface=interface,
        action=action,
        target=target[:300],
        details=details or {},
    )
    session.add(entry)
    session.flush()
    return entry


def entries(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries, newest first: from `since` (inclusive) to `until` (exclusive), of one
    actor, action (`region.pause`) or kind of action (`region`), or target."""
    query = select(AuditEntry)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        if "." in action:
            query = query.where(AuditEntry.action == action)
        else:
            query = query.where(AuditEntry.action.like(f"{action}.%"))
    if target is not None:
        query = query.where(AuditEntry.target == target)
    limit = max(1, min(limit, MAX_LIMIT))
    query = query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    return list(session.scalars(query))
