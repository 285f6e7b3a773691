"""Delivering one event to one subscription, durably: a DBOS workflow per delivery row.

The workflow's id is derived from the row's id (`delivery_workflow_id`), so queuing the
same delivery again is the same workflow (DBOS dedupes). Each attempt is one DBOS step
rather than one step with DBOS's own retries: the row records every attempt as it ends
(its number, response code, error), and the backoff between attempts is a durable
`DBOS.sleep`, so a worker killed mid-backoff resumes the schedule instead of starting
it over. An attempt that got a 2xx marks the row delivered before it returns; a step
killed after the receiver answered and before that write runs again and sends again,
with the same `Idempotency-Key` (receivers dedupe on it: at least once on the wire,
exactly once for a receiver that honours the key).

Retried: network errors and timeouts, 5xx, 429 and 408. Another 4xx fails at once (the
receiver refuses this request; sending it again would not change its mind).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from dbos import DBOS, DBOSClient, DBOSConfiguredInstance, EnqueueOptions
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from modelcert import secrets
from modelcert.jobs.queues import APP_VERSION
from modelcert.obs.logging import log_event
from modelcert.settings import Settings
from modelcert.store import notifications
from modelcert.store.db import transaction
from modelcert.store.models import utcnow
from modelcert.store.notifications import DELIVERED, FAILED, Delivery, Subscription

NOTIFY_QUEUE = "modelcert-notify"
DELIVERY_CLASS = "NotificationDelivery"
DELIVERY_INSTANCE = "notify"
DELIVERY_WORKFLOW = "notify_deliver"
SIGNATURE_HEADER = "X-Modelcert-Signature"
TIMESTAMP_HEADER = "X-Modelcert-Timestamp"
RETRIED_CODES = frozenset({408, 429})
MAX_ERROR_CHARS = 500


def delivery_workflow_id(delivery_id: int) -> str:
    return f"notify-delivery:{delivery_id}"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: `sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def slack_text(event: dict[str, Any]) -> str:
    """One readable line for a Slack-compatible webhook."""
    data = event.get("data", {})
    kind = event.get("kind")
    where = f"{data.get('deployment', '?')} in {data.get('region', '?')}"
    if kind == notifications.VERDICT_CHANGED:
        return f"modelcert: {where} went from {data.get('from')} to {data.get('to')}"
    if kind == notifications.CERTIFICATION_EXPIRING:
        return f"modelcert: the certification of {where} expires at {data.get('expires_at')}"
    if kind == notifications.LATENCY_DEGRADED:
        return (
            f"modelcert: latency p95 of {where} is {data.get('p95_ms')} ms over the last 24 h, "
            f"{data.get('ratio')}× its 7-day baseline of {data.get('baseline_p95_ms')} ms"
        )
    return (
        f"modelcert: job {data.get('job_id')} ({data.get('job_kind')}) finished "
        f"{data.get('status')}: {data.get('succeeded')} succeeded, {data.get('failed')} failed"
    )


def request_for(
    subscription: Subscription, delivery: Delivery, now: float
) -> tuple[bytes, dict[str, str]]:
    """The body and headers one attempt sends."""
    headers = {"Content-Type": "application/json", "User-Agent": "modelcert-notify"}
    if subscription.target_kind == "slack":
        body = json.dumps({"text": slack_text(delivery.event)}).encode()
        return body, headers
    body = json.dumps(delivery.event, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(now))
    assert subscription.secret is not None, "a webhook subscription has a secret"
    headers[SIGNATURE_HEADER] = sign(subscription.secret, timestamp, body)
    headers[TIMESTAMP_HEADER] = timestamp
    headers["Idempotency-Key"] = delivery.idempotency_key
    return body, headers


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retry(self) -> bool:
        if self.status_code is None:
            return True
        return self.status_code >= 500 or self.status_code in RETRIED_CODES


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Answer:
    """POST once; the response code, or the error (redacted: never the URL)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Answer(response.status, None)
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        text = f"{type(exc).__name__}: {reason}".replace(url, notifications.masked_url(url))
        return Answer(None, secrets.redact(text)[:MAX_ERROR_CHARS])


def backoff_s(settings: Settings, attempt: int) -> float:
    """The wait after attempt `attempt` (1-based): base, 2 × base, 4 × base… at most 1 h."""
    return float(min(settings.notify_retry_base_s * 2 ** (attempt - 1), 3600.0))


@DBOS.dbos_class(DELIVERY_CLASS)
class NotificationDelivery(DBOSConfiguredInstance):
    """A worker's delivery duty: one workflow per delivery row, one step per attempt."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self.factory = factory
        self.settings = settings
        super().__init__(config_name=DELIVERY_INSTANCE)

    @DBOS.workflow(name=DELIVERY_WORKFLOW)
    def deliver(self, delivery_id: int) -> str:
        """Send until a 2xx, a refusal or the last attempt; the row's final status."""
        attempts = self.settings.notify_max_attempts
        for attempt in range(1, attempts + 1):
            outcome = self.attempt(delivery_id, attempt, final=attempt == attempts)
            if outcome != "retry":
                return outcome
            DBOS.sleep(backoff_s(self.settings, attempt))
        return FAILED

    # `post` never raises: what does is the database (a blip), and the step runs again
    # (a POST already answered is sent again with its Idempotency-Key).
    @DBOS.step(name="notify_attempt", retries_allowed=True, max_attempts=3)
    def attempt(self, delivery_id: int, attempt: int, final: bool) -> str:
        """One POST, recorded on the row before the step returns: delivered, failed or
        retry."""
        with transaction(self.factory) as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:  # its subscription was removed meanwhile
                return FAILED
            if delivery.status in (DELIVERED, FAILED):  # an earlier execution ended it
                return delivery.status
            subscription = session.get(Subscription, delivery.subscription_id)
            assert subscription is not None
            secrets.register(subscription.target_url, subscription.secret)
            body, headers = request_for(subscription, delivery, time.time())
            url = subscription.target_url
        answer = post(url, body, headers, self.settings.notify_timeout_s)
        status = DELIVERED if answer.delivered else FAILED if final or not answer.retry else "retry"
        with transaction(self.factory) as session:
            now = utcnow()
            session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(
                    attempts=attempt,
                    last_status_code=answer.status_code,
                    last_error=answer.error,
                    status=notifications.QUEUED if status == "retry" else status,
                    updated_at=now,
                    delivered_at=now if status == DELIVERED else None,
                )
            )
        log_event(
            "notification_attempt",
            delivery_id=delivery_id,
            attempt=attempt,
            status=status,
            status_code=answer.status_code,
        )
        return status


def delivery_options(delivery_id: int) -> EnqueueOptions:
    return {
        "workflow_name": DELIVERY_WORKFLOW,
        "class_name": DELIVERY_CLASS,
        "instance_name": DELIVERY_INSTANCE,
        "queue_name": NOTIFY_QUEUE,
        "workflow_id": delivery_workflow_id(delivery_id),
        "app_version": APP_VERSION,
    }


def enqueue_deliveries(client: DBOSClient, session: Session, delivery_ids: list[int]) -> None:
    """Queue each delivery's workflow in the caller's transaction (with the rows: a
    delivery row is never left without its workflow)."""
    for delivery_id in delivery_ids:
        client.enqueue_in_transaction(
            session.connection(), delivery_options(delivery_id), delivery_id
        )
