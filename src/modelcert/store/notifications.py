"""Notification subscriptions and their delivery log.

A subscription names the events it wants (`EVENT_KINDS`), optional filters (provider,
deployment, region) and a target: a generic webhook (signed with the subscription's
HMAC secret) or a Slack-compatible incoming webhook. The secret has to be stored as
given (it signs every delivery); it and the target URL (a Slack URL is a credential)
are never returned: `as_json` shows a masked URL and whether a secret is set.

An event becomes one delivery row per matching subscription, unique on (subscription,
idempotency key): the same event queued twice is one delivery (`queue_event`)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelcert.errors import NotFoundError, UserError
from modelcert.secrets import MASK
from modelcert.store.models import Base, utcnow

VERDICT_CHANGED = "verdict.changed"
CERTIFICATION_EXPIRING = "certification.expiring"
JOB_FINISHED = "job.finished"
LATENCY_DEGRADED = "latency.degraded"
EVENT_KINDS = (VERDICT_CHANGED, CERTIFICATION_EXPIRING, JOB_FINISHED, LATENCY_DEGRADED)

TARGET_KINDS = ("webhook", "slack")

# Delivery states: queued (a workflow will send it), delivered (a 2xx), failed (gave up).
QUEUED, DELIVERED, FAILED = "queued", "delivered", "failed"

DEFAULT_EXPIRING_WITHIN_H = 24.0
DEFAULT_DEGRADED_FACTOR = 2.0
MIN_SECRET_CHARS = 16
MAX_LIMIT = 1000


class Subscription(Base):
    __tablename__ = "notification_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    provider_slug: Mapped[str | None] = mapped_column(String(64))
    deployment: Mapped[str | None] = mapped_column(String(300))  # provider-slug/model-id
    region: Mapped[str | None] = mapped_column(String(64))
    expiring_within_h: Mapped[float] = mapped_column(Float, default=DEFAULT_EXPIRING_WITHIN_H)
    degraded_factor: Mapped[float] = mapped_column(Float, default=DEFAULT_DEGRADED_FACTOR)
    target_kind: Mapped[str] = mapped_column(String(16))
    # Both are credentials: never returned, never logged (`secrets.register` at send).
    target_url: Mapped[str] = mapped_column(String(1000))
    secret: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "events": list(self.events),
            "provider": self.provider_slug,
            "deployment": self.deployment,
            "region": self.region,
            "expiringWithinH": self.expiring_within_h,
            "degradedFactor": self.degraded_factor,
            "targetKind": self.target_kind,
            "targetUrl": masked_url(self.target_url),
            "hasSecret": self.secret is not None,
            "active": self.active,
            "createdBy": self.created_by,
            "createdAt": self.created_at.isoformat(),
        }


class Delivery(Base):
    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "idempotency_key"),
        Index("ix_notification_deliveries_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("notification_subscriptions.id", ondelete="CASCADE")
    )
    event_kind: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(300))
    event: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict
    )  # {id, kind, occurred_at, data}
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)  # redacted
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscriptionId": self.subscription_id,
            "eventKind": self.event_kind,
            "idempotencyKey": self.idempotency_key,
            "status": self.status,
            "attempts": self.attempts,
            "lastStatusCode": self.last_status_code,
            "lastError": self.last_error,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
            "deliveredAt": self.delivered_at.isoformat() if self.delivered_at else None,
        }


def masked_url(url: str) -> str:
    """`https://hooks.slack.com/***`: where it goes, not the path or query that hold the
    token."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/{MASK}"


@dataclass(frozen=True)
class NewSubscription:
    """What a user asks for, checked by `check_subscription` (the API and the CLI's one
    validation: every error names its field)."""

    name: str
    events: list[str]
    target_kind: str
    target_url: str
    secret: str | None = None
    provider: str | None = None
    deployment: str | None = None
    region: str | None = None
    expiring_within_h: float = DEFAULT_EXPIRING_WITHIN_H
    degraded_factor: float = DEFAULT_DEGRADED_FACTOR


def check_subscription(new: NewSubscription) -> NewSubscription:
    """`new`, or a `UserError` naming the field that is wrong. Never echoes the URL or
    the secret."""
    if not new.name.strip() or len(new.name) > 200:
        raise UserError("name: 1 to 200 characters", field="name")
    if not new.events:
        raise UserError(f"events: at least one of {', '.join(EVENT_KINDS)}", field="events")
    for kind in new.events:
        if kind not in EVENT_KINDS:
            raise UserError(
                f"events: unknown event kind {kind[:40]!r} (known: {', '.join(EVENT_KINDS)})",
                field="events",
            )
    if new.target_kind not in TARGET_KINDS:
        raise UserError(
            f"targetKind: {new.target_kind[:20]!r} is not one of {', '.join(TARGET_KINDS)}",
            field="targetKind",
        )
    parts = urllib.parse.urlsplit(new.target_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or len(new.target_url) > 1000:
        raise UserError("targetUrl: not an http(s) URL", field="targetUrl")
    if new.target_kind == "webhook":
        if not new.secret:
            raise UserError("secret: a webhook needs an HMAC secret to sign with", field="secret")
        if len(new.secret) < MIN_SECRET_CHARS or len(new.secret) > 200:
            raise UserError(f"secret: {MIN_SECRET_CHARS} to 200 characters", field="secret")
    elif new.secret:
        raise UserError("secret: Slack webhooks are not signed; give no secret", field="secret")
    if not 0 < new.expiring_within_h <= 24 * 90:
        raise UserError("expiringWithinH: more than 0, at most 2160", field="expiringWithinH")
    if not 1 < new.degraded_factor <= 100:
        raise UserError("degradedFactor: more than 1, at most 100", field="degradedFactor")
    if new.deployment is not None and "/" not in new.deployment:
        raise UserError("deployment: provider-slug/model-id", field="deployment")
    return new


def add_subscription(
    session: Session, new: NewSubscription, *, created_by: str | None
) -> Subscription:
    """Check and store a subscription, in the caller's transaction."""
    check_subscription(new)
    subscription = Subscription(
        name=new.name.strip(),
        events=list(dict.fromkeys(new.events)),
        provider_slug=new.provider,
        deployment=new.deployment,
        region=new.region,
        expiring_within_h=new.expiring_within_h,
        degraded_factor=new.degraded_factor,
        target_kind=new.target_kind,
        target_url=new.target_url.strip(),
        secret=new.secret,
        created_by=created_by[:200] if created_by else None,
    )
    session.add(subscription)
    session.flush()
    return subscription


def subscriptions(session: Session, *, active_only: bool = False) -> list[Subscription]:
    query = select(Subscription).order_by(Subscription.id)
    if active_only:
        query = query.where(Subscription.active.is_(True))
    return list(session.scalars(query))


def remove_subscription(session: Session, subscription_id: int) -> Subscription:
    """Delete a subscription and its delivery log; `NotFoundError` when unknown."""
    subscription = session.get(Subscription, subscription_id)
    if subscription is None:
        raise NotFoundError(f"no subscription {subscription_id}", field="id")
    session.delete(subscription)
    session.flush()
    return subscription


def deliveries(
    session: Session,
    *,
    subscription_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """The delivery log, newest first."""
    query = select(Delivery)
    if subscription_id is not None:
        query = query.where(Delivery.subscription_id == subscription_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    limit = max(1, min(limit, MAX_LIMIT))
    return list(session.scalars(query.order_by(Delivery.id.desc()).limit(limit)))


@dataclass(frozen=True)
class Event:
    """One thing that happened, under a deterministic id (its idempotency key)."""

    key: str
    kind: str
    occurred_at: datetime
    data: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {
            "id": self.key,
            "kind": self.kind,
            "occurred_at": self.occurred_at.isoformat(),
            "data": self.data,
        }


def matches(subscription: Subscription, event: Event) -> bool:
    """Whether an active subscription wants this event (its kind and its filters; a
    filter on a field the event has not, such as a job's region, does not apply)."""
    if not subscription.active or event.kind not in subscription.events:
        return False
    filters = (
        (subscription.provider_slug, "provider"),
        (subscription.deployment, "deployment"),
        (subscription.region, "region"),
    )
    return all(
        wanted is None or field not in event.data or event.data[field] == wanted
        for wanted, field in filters
    )


def queue_event(
    session: Session, event: Event, targets: list[Subscription] | None = None
) -> list[int]:
    """A delivery row for each matching subscription (or each of `targets`) that has none
    for this event yet; the ids of the new rows. In the caller's transaction."""
    candidates = targets if targets is not None else subscriptions(session, active_only=True)
    wanted = [s for s in candidates if matches(s, event)]
    if not wanted:
        return []
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    created: list[int] = []
    for subscription in wanted:
        statement = (
            insert(Delivery)
            .values(
                subscription_id=subscription.id,
                event_kind=event.kind,
                idempotency_key=event.key,
                event=event.body(),
                status=QUEUED,
                attempts=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["subscription_id", "idempotency_key"])
            .returning(Delivery.id)
        )
        row_id = session.execute(statement).scalar()
        if row_id is not None:
            created.append(int(row_id))
    return created
