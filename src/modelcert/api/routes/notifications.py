"""Notification subscriptions and their delivery log over HTTP. Writing needs the
operator role, reading any key. A subscription's target URL and secret are write-only:
answers show a masked URL and whether a secret is set (`store.notifications`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from pydantic import Field

from modelcert.api.deps import CurrentKey, FactoryDep, OperatorKey
from modelcert.api.errors import BODY_ERRORS, ROLE_ERRORS, VIEWER_ERRORS, error_responses
from modelcert.api.schemas import ApiModel, ApiRequest
from modelcert.store import notifications
from modelcert.store.db import transaction
from modelcert.store.notifications import NewSubscription
from modelcert.validation import RowId

router = APIRouter(prefix="/api/notifications", tags=["notifications"])

SubscriptionIdPath = Annotated[RowId, Path(alias="subscriptionId")]
EVENTS_DOC = ", ".join(notifications.EVENT_KINDS)


class SubscriptionRequest(ApiRequest):
    name: str = Field(max_length=200)
    events: list[str] = Field(max_length=len(notifications.EVENT_KINDS), description=EVENTS_DOC)
    target_kind: str = Field(max_length=20, description="webhook or slack.")
    target_url: str = Field(max_length=1000, description="http(s); never returned.")
    secret: str | None = Field(
        None, max_length=200, description="The HMAC secret (webhooks only); never returned."
    )
    provider: str | None = Field(None, max_length=64, description="Only this provider's.")
    deployment: str | None = Field(None, max_length=300, description="provider-slug/model-id.")
    region: str | None = Field(None, max_length=64)
    expiring_within_h: float = Field(
        notifications.DEFAULT_EXPIRING_WITHIN_H,
        description="certification.expiring: this many hours before the expiry.",
    )
    degraded_factor: float = Field(
        notifications.DEFAULT_DEGRADED_FACTOR,
        description="latency.degraded: p95 of the last 24 h over this × the 7-day one.",
    )


class SubscriptionOut(ApiModel):
    id: int
    name: str
    events: list[str]
    provider: str | None
    deployment: str | None
    region: str | None
    expiring_within_h: float
    degraded_factor: float
    target_kind: str
    target_url: str = Field(description="Masked: scheme and host only.")
    has_secret: bool
    active: bool
    created_by: str | None
    created_at: datetime


class DeliveryOut(ApiModel):
    id: int
    subscription_id: int
    event_kind: str
    idempotency_key: str
    status: str = Field(description="queued, delivered or failed.")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


class RemovedOut(ApiModel):
    id: int
    removed: bool = True


@router.post(
    "/subscriptions",
    response_model=SubscriptionOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, *BODY_ERRORS, *ROLE_ERRORS),
)
def add_subscription(
    body: SubscriptionRequest, key: OperatorKey, factory: FactoryDep
) -> SubscriptionOut:
    """Subscribe a webhook or a Slack incoming webhook to events. 400 naming the field for
    an unknown event kind, a bad URL, a webhook without a secret."""
    new = NewSubscription(**body.model_dump())
    with transaction(factory) as session:
        subscription = notifications.add_subscription(session, new, created_by=key.name)
        return SubscriptionOut.model_validate(subscription.as_json())


@router.get(
    "/subscriptions",
    response_model=list[SubscriptionOut],
    responses=error_responses(*VIEWER_ERRORS),
)
def list_subscriptions(factory: FactoryDep, _viewer: CurrentKey) -> list[SubscriptionOut]:
    """Every subscription (URLs masked, secrets never shown)."""
    with transaction(factory) as session:
        return [
            SubscriptionOut.model_validate(s.as_json())
            for s in notifications.subscriptions(session)
        ]


@router.delete(
    "/subscriptions/{subscriptionId}",
    response_model=RemovedOut,
    responses=error_responses(404, 422, *ROLE_ERRORS),
)
def remove_subscription(
    subscription_id: SubscriptionIdPath, _operator: OperatorKey, factory: FactoryDep
) -> RemovedOut:
    """Remove a subscription and its delivery log (deliveries still queued are dropped)."""
    with transaction(factory) as session:
        notifications.remove_subscription(session, subscription_id)
    return RemovedOut(id=subscription_id)


@router.get(
    "/deliveries",
    response_model=list[DeliveryOut],
    responses=error_responses(422, *VIEWER_ERRORS),
)
def deliveries(
    factory: FactoryDep,
    _viewer: CurrentKey,
    subscription: Annotated[RowId | None, Query(description="Only this subscription's.")] = None,
    delivery_status: Annotated[
        str | None, Query(alias="status", pattern="^(queued|delivered|failed)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=notifications.MAX_LIMIT)] = 100,
) -> list[DeliveryOut]:
    """The delivery log, newest first: status, attempts, last response code and error."""
    with transaction(factory) as session:
        rows = notifications.deliveries(
            session, subscription_id=subscription, status=delivery_status, limit=limit
        )
        return [DeliveryOut.model_validate(row.as_json()) for row in rows]
