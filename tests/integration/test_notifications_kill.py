"""A worker killed (SIGKILL, a real subprocess worker) in the middle of a delivery, on
SQLite and PostgreSQL: the receiver holds the first request until the worker is dead;
the same worker started again resumes the delivery's workflow and sends it again with
the same idempotency key. Nothing is lost (the row ends delivered) and nothing is
duplicated for a receiver that honours the key (one distinct key accepted)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.notify_events import Notifier
from modelcert.store import notifications
from modelcert.store.db import transaction
from modelcert.store.models import utcnow
from modelcert.store.notifications import Delivery, Event, NewSubscription
from tests.integration.test_queue_workers import workers
from tests.support.receiver import Receiver, running_receiver
from tests.support.waiting import wait_for
from tests.support.workers import StartProcesses

__all__ = ["workers"]  # the real worker processes fixture, shared with the queue's tests

SECRET = "whsec-kill-0123456789abcdef"
KEY = "job.finished:job-killed"


def the_delivery(factory: sessionmaker[Session]) -> Delivery:
    with factory() as session:
        return session.scalars(select(Delivery)).one()


def test_a_worker_killed_mid_delivery_neither_loses_nor_duplicates_it(
    factory: sessionmaker[Session], enqueuer: Enqueuer, workers: StartProcesses
) -> None:
    with running_receiver(Receiver(secret=SECRET, hold_first=True)) as receiver:
        with transaction(factory) as session:
            subscription = NewSubscription(
                name="kill",
                events=["job.finished"],
                target_kind="webhook",
                target_url=receiver.url,
                secret=SECRET,
            )
            notifications.add_subscription(session, subscription, created_by="test")
            event = Event(KEY, "job.finished", utcnow(), {"job_id": "job-killed"})
            assert len(Notifier(enqueuer.client).emit(session, event)) == 1
        [victim] = workers("w-notify", MODELCERT_NOTIFY_RETRY_BASE_S="0.01")
        wait_for(receiver.first_arrived.is_set, what="the first request at the receiver")
        victim.kill()  # while the receiver holds its request: no answer reaches it
        receiver.release.set()
        assert the_delivery(factory).status == "queued"
        workers("w-notify", MODELCERT_NOTIFY_RETRY_BASE_S="0.01")  # resumes its workflow
        wait_for(lambda: the_delivery(factory).status != "queued", what="the delivery to end")
        delivery = the_delivery(factory)
        assert (delivery.status, delivery.last_status_code) == ("delivered", 200)
        assert len(receiver.requests) == 2  # sent again after the kill: at least once
        assert all(r.signature_ok for r in receiver.requests)
        assert receiver.accepted_keys() == {KEY}  # and one event for the receiver
