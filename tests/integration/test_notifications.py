"""Notifications through the real durable path, on SQLite and PostgreSQL: events found
where the engine stores a verdict or closes a job (and by the periodic checks, at an
injected time), one delivery row per (event, subscription), each delivered by its own
DBOS workflow in a real in-process worker to a real local HTTP receiver that checks the
signature. (A worker killed mid-delivery: test_notifications_kill.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from modelcert.certify.engine import CertificationEngine, CertificationRequest
from modelcert.domain import JobKind
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.notify_events import Notifier
from modelcert.jobs.schedule import check_notifications
from modelcert.obs.logging import configure_logging
from modelcert.settings import Settings
from modelcert.store import notifications, repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, Deployment, utcnow
from modelcert.store.notifications import Delivery, Event, NewSubscription
from modelcert.store.runs import RunStore
from tests.support.inprocess import StartWorker
from tests.support.receiver import Receiver, running_receiver
from tests.support.trend_seed import add_run

REGION = "us-east-1"
SECRET = "whsec-0123456789abcdef-notify"
FAST = {"notify_retry_base_s": 0.01}


@pytest.fixture
def lab(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=[REGION])
        repo.add_deployment(
            session,
            provider_slug="lab",
            provider_model_id="flip",
            options={"profile": "healthy-fast", "latency_ms": 5},
        )
    return factory


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(Receiver(secret=SECRET)) as running:
        yield running


def subscribe(
    factory: sessionmaker[Session], url: str, events: list[str], **options: object
) -> int:
    with transaction(factory) as session:
        new = NewSubscription(
            name="team",
            events=events,
            target_kind=str(options.pop("target_kind", "webhook")),
            target_url=url,
            secret=options.pop("secret", SECRET),  # type: ignore[arg-type]
            **options,  # type: ignore[arg-type]
        )
        return notifications.add_subscription(session, new, created_by="test").id


def log(factory: sessionmaker[Session]) -> list[Delivery]:
    with factory() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def set_profile(factory: sessionmaker[Session], profile: str) -> None:
    with transaction(factory) as session:
        session.execute(update(Deployment).values(options={"profile": profile, "latency_ms": 5}))


def certify(enqueuer: Enqueuer, factory: sessionmaker[Session], worker: object) -> str:
    job = enqueuer.enqueue(factory, [("lab/flip", REGION)], kind=JobKind.SINGLE)
    worker.drain()  # type: ignore[attr-defined]
    assert job.job_id is not None
    return job.job_id


def test_a_verdict_change_fires_once_each_way_and_every_job_once(
    lab: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    receiver: Receiver,
) -> None:
    subscribe(lab, receiver.url, ["verdict.changed", "job.finished"])
    worker = start_worker(regions=(REGION,), executor_id="w-notify", **FAST)
    jobs = [certify(enqueuer, lab, worker)]  # the first verdict: no change
    set_profile(lab, "access-denied")
    jobs.append(certify(enqueuer, lab, worker))  # certified -> failed
    jobs.append(certify(enqueuer, lab, worker))  # failed -> failed: no change
    set_profile(lab, "healthy-fast")
    jobs.append(certify(enqueuer, lab, worker))  # recovered

    bodies = [r.json for r in receiver.requests]
    assert all(r.signature_ok for r in receiver.requests)
    finished = [b["data"]["job_id"] for b in bodies if b["kind"] == "job.finished"]
    assert sorted(finished) == sorted(jobs)
    changes = [b["data"] for b in bodies if b["kind"] == "verdict.changed"]
    assert [(c["from"], c["to"], c["recovered"]) for c in changes] == [
        ("CERTIFIED", "FAILED", False),
        ("FAILED", "CERTIFIED", True),
    ]
    assert {c["deployment"] for c in changes} == {"lab/flip"}
    for request in receiver.requests:  # the key is the event's id, on the wire too
        assert request.headers["Idempotency-Key"] == request.json["id"]
    rows = log(lab)
    assert len(rows) == 6
    assert {(r.status, r.attempts, r.last_status_code) for r in rows} == {("delivered", 1, 200)}


def emit(
    factory: sessionmaker[Session], enqueuer: Enqueuer, key: str = "job.finished:j-1"
) -> list[int]:
    data = {
        "job_id": "j-1",
        "job_kind": "SINGLE",
        "status": "COMPLETED",
        "succeeded": 1,
        "failed": 0,
    }
    event = Event(key=key, kind="job.finished", occurred_at=utcnow(), data=data)
    with transaction(factory) as session:
        return Notifier(enqueuer.client).emit(session, event)


def test_a_receiver_failing_three_times_gets_one_accepted_delivery_after_four_attempts(
    lab: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    receiver: Receiver,
) -> None:
    receiver.script = [500, 500, 500, 200]
    subscribe(lab, receiver.url, ["job.finished"])
    assert len(emit(lab, enqueuer)) == 1
    assert emit(lab, enqueuer) == []  # the same event again: not queued twice
    start_worker(regions=(REGION,), executor_id="w-retry", **FAST).drain()

    assert [r.answered for r in receiver.requests] == [500, 500, 500, 200]
    assert receiver.accepted_keys() == {"job.finished:j-1"}
    [row] = log(lab)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 4, 200)
    assert row.delivered_at is not None


def test_a_delivery_gives_up_after_its_attempts_and_a_4xx_at_once(
    lab: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    receiver: Receiver,
) -> None:
    receiver.script = [503, 429, 500]  # every answer retried, three attempts allowed
    retried = subscribe(lab, receiver.url, ["job.finished"])
    with running_receiver(Receiver(secret=SECRET, script=[400])) as refusing:
        refused = subscribe(lab, refusing.url, ["job.finished"])
        emit(lab, enqueuer)
        start_worker(
            regions=(REGION,), executor_id="w-give-up", notify_max_attempts=3, **FAST
        ).drain()
    rows = {r.subscription_id: r for r in log(lab)}
    assert (rows[retried].status, rows[retried].attempts) == ("failed", 3)
    assert rows[retried].last_status_code == 500
    assert (rows[refused].status, rows[refused].attempts) == ("failed", 1)
    assert rows[refused].last_status_code == 400
    assert [r.answered for r in receiver.requests] == [503, 429, 500]
    assert [r.answered for r in refusing.requests] == [400]


def test_an_unreachable_receiver_is_retried_and_its_url_and_secret_stay_out_of_the_log(
    lab: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 9 of localhost: every attempt is a connection error.
    url = "http://127.0.0.1:9/services/T0SECRET/B0SECRET/xoxb-path-token"
    subscribe(lab, url, ["job.finished"])
    emit(lab, enqueuer)
    # Every log line of the worker, DEBUG included, into a buffer of this test's own.
    buffer, process_stderr = io.StringIO(), sys.stderr
    sys.stderr = buffer
    try:
        configure_logging(json_lines=True, level="DEBUG")
    finally:
        sys.stderr = process_stderr
    try:
        with caplog.at_level(logging.DEBUG):
            start_worker(
                regions=(REGION,), executor_id="w-refused", notify_max_attempts=2, **FAST
            ).drain()
    finally:
        configure_logging(json_lines=False, level="INFO")
    logged = caplog.text + buffer.getvalue()
    [row] = log(lab)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 2, None)
    assert row.last_error
    assert "notification_attempt" in logged  # the attempts' log lines were read
    for text in (row.last_error, logged, json.dumps(row.as_json())):
        assert "xoxb-path-token" not in text
        assert SECRET not in text


def test_slack_gets_one_readable_line(
    lab: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    receiver: Receiver,
) -> None:
    subscribe(lab, receiver.url, ["job.finished"], target_kind="slack", secret=None)
    emit(lab, enqueuer)
    start_worker(regions=(REGION,), executor_id="w-slack", **FAST).drain()
    [request] = receiver.requests
    assert request.signature_ok is None
    assert request.json == {
        "text": "modelcert: job j-1 (SINGLE) finished COMPLETED: 1 succeeded, 0 failed"
    }


def test_filters_choose_the_subscriptions_an_event_reaches(
    lab: sessionmaker[Session], enqueuer: Enqueuer
) -> None:
    url = "http://127.0.0.1:9/hook"
    everything = subscribe(lab, url, ["verdict.changed"])
    this_region = subscribe(lab, url, ["verdict.changed"], region=REGION)
    other_region = subscribe(lab, url, ["verdict.changed"], region="eu-west-1")
    other_model = subscribe(lab, url, ["verdict.changed"], deployment="lab/other")
    other_kind = subscribe(lab, url, ["job.finished"])
    with transaction(lab) as session:
        notifications.remove_subscription(session, other_kind)
    event = Event(
        key="verdict.changed:1",
        kind="verdict.changed",
        occurred_at=utcnow(),
        data={"deployment": "lab/flip", "provider": "lab", "region": REGION},
    )
    with transaction(lab) as session:
        Notifier(enqueuer.client).emit(session, event)
    reached = {row.subscription_id for row in log(lab)}
    assert reached == {everything, this_region}
    assert not reached & {other_region, other_model}


def test_expiring_certifications_and_degraded_latency_are_found_once_at_an_injected_time(
    lab: sessionmaker[Session], enqueuer: Enqueuer
) -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=utcnow().tzinfo)
    url = "http://127.0.0.1:9/hook"
    soon = subscribe(lab, url, ["certification.expiring"], expiring_within_h=6)
    later = subscribe(lab, url, ["certification.expiring"], expiring_within_h=48)
    slow = subscribe(lab, url, ["latency.degraded"], degraded_factor=2.0)
    lenient = subscribe(lab, url, ["latency.degraded"], degraded_factor=5.0)
    with transaction(lab) as session:
        deployment = repo.find_deployment(session, "lab/flip")
        certification = repo.certification_row(session, deployment.id, REGION)
        certification.status = "CERTIFIED"
        certification.expires_at = now + timedelta(hours=12)
        session.flush()
        # A 7-day baseline of 100-200 ms, then 24 h at 600-700 ms: p95 3.5× the baseline.
        for hours in (30, 60, 100):
            add_run(
                session,
                certification,
                now - timedelta(hours=hours),
                "CERTIFIED",
                [("PASSED", 100, None), ("PASSED", 200, None)],
            )
        for hours in (2, 10):
            add_run(
                session,
                certification,
                now - timedelta(hours=hours),
                "CERTIFIED",
                [("PASSED", 600, None), ("PASSED", 700, None)],
            )
    notifier = Notifier(enqueuer.client)
    with transaction(lab) as session:
        first = notifier.check(session, now)
    with transaction(lab) as session:
        again = notifier.check(session, now + timedelta(minutes=10))
    assert len(first) == 2 and again == []
    rows = log(lab)
    assert {(r.subscription_id, r.event_kind) for r in rows} == {
        (later, "certification.expiring"),
        (slow, "latency.degraded"),
    }
    assert not {soon, lenient} & {r.subscription_id for r in rows}
    degraded = next(r.event for r in rows if r.event_kind == "latency.degraded")
    # p95 by linear interpolation: 200 of [100 ×3, 200 ×3] and 700 of [600 ×2, 700 ×2].
    assert degraded["data"]["baseline_p95_ms"] == 200.0
    assert degraded["data"]["p95_ms"] == 700.0
    assert degraded["data"]["ratio"] == 3.5
    expiring = next(r.event for r in rows if r.event_kind == "certification.expiring")
    assert expiring["data"]["hours_left"] == 12.0
    with transaction(lab) as session:  # a renewed verdict expires later: a new event
        session.execute(update(Certification).values(expires_at=now + timedelta(hours=40)))
    with transaction(lab) as session:
        assert len(notifier.check(session, now + timedelta(hours=1))) == 1


def test_a_repeated_finish_step_queues_no_second_delivery(
    lab: sessionmaker[Session], settings: Settings, enqueuer: Enqueuer
) -> None:
    """The `finish` step run twice (killed after its write, before DBOS's checkpoint),
    through the engine and the store a worker uses: `job.finished` is queued once (the
    second finds the run closed; the unique key would refuse a second row anyway)."""
    subscribe(lab, "http://127.0.0.1:9/hook", ["job.finished", "verdict.changed"])
    job = enqueuer.enqueue(lab, [("lab/flip", REGION)], kind=JobKind.SINGLE)
    store = RunStore(lab)
    store.notifier = Notifier(enqueuer.client)
    engine = CertificationEngine(store, settings)
    request = CertificationRequest("lab/flip", REGION, job.job_id)

    async def twice() -> None:
        prepared = await engine.prepare(request, "wf-notify")
        results = [
            await engine.run_test(prepared, i, True) for i in range(len(prepared.plan.tests))
        ]
        await engine.finish(prepared, results)
        await engine.finish(prepared, results)
        await engine.aclose()

    asyncio.run(twice())
    assert [r.idempotency_key for r in log(lab)] == [f"job.finished:{job.job_id}"]


def test_the_schedules_tick_queues_the_periodic_events_and_a_worker_delivers_them(
    lab: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    receiver: Receiver,
) -> None:
    now = utcnow()
    subscribe(lab, receiver.url, ["certification.expiring"], expiring_within_h=24)
    with transaction(lab) as session:
        deployment = repo.find_deployment(session, "lab/flip")
        certification = repo.certification_row(session, deployment.id, REGION)
        certification.status = "CERTIFIED"
        certification.expires_at = now + timedelta(hours=3)
    # What the tick's `notify_check` step runs, at the tick's time.
    assert check_notifications(lab, enqueuer, now) == 1
    assert check_notifications(lab, enqueuer, now + timedelta(minutes=10)) == 0
    start_worker(regions=(REGION,), executor_id="w-tick", **FAST).drain()
    [request] = receiver.requests
    assert request.signature_ok
    assert request.json["kind"] == "certification.expiring"
    assert request.json["data"]["deployment"] == "lab/flip"
    assert request.json["data"]["hours_left"] == 3.0
