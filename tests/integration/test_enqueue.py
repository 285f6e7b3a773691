"""Set-based enqueue (`jobs.enqueue.Enqueuer`), on SQLite and on PostgreSQL: batches with
duplicates inside them and against pairs already queued, refusals reported per pair,
concurrent overlapping batches refused exactly once, delayed enqueue, the same errors as
the one-by-one look-up, and an in-process worker running what the bulk insert queued."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import CertificationStatus, JobKind, Priority
from modelcert.errors import NotFoundError, UserError
from modelcert.jobs.control import pause_region
from modelcert.jobs.enqueue import DUPLICATE_REASON, Enqueuer, recertify_targets
from modelcert.jobs.queues import PRIORITY_VALUES, dbos_table, queue_name
from modelcert.jobs.workflows import certification_options, enqueue_certification
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, Job
from tests.support.inprocess import StartWorker

REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")


@pytest.fixture
def catalog(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=list(REGIONS))
        repo.add_provider(session, slug="alt", kind="sim", regions=["us-east-1"])
        for name in ("m1", "m2", "m3", "shared"):
            repo.add_deployment(
                session,
                provider_slug="lab",
                provider_model_id=name,
                options={"profile": "healthy-fast", "latency_ms": 0},
            )
        repo.add_deployment(
            session,
            provider_slug="alt",
            provider_model_id="shared",
            options={"profile": "healthy-fast", "latency_ms": 0},
        )
    return factory


def _workflows(engine: Engine) -> list[dict[str, Any]]:
    table = dbos_table(engine.dialect.name, "workflow_status")
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                f"SELECT workflow_uuid, status, queue_name, deduplication_id, priority, "
                f"delay_until_epoch_ms, recovery_attempts, creator_xid, owner_xid, "
                f"executor_id, name, class_name, config_name, application_version "
                f"FROM {table} ORDER BY workflow_uuid"
            )
        )
        return [dict(row._mapping) for row in rows]


def _certifications(factory: sessionmaker[Session]) -> dict[tuple[str, str], tuple[str, str]]:
    with factory() as session:
        return {
            (f"{c.deployment.provider.slug}/{c.deployment.provider_model_id}", c.region): (
                c.status,
                c.job_id or "",
            )
            for c in session.scalars(select(Certification))
        }


def test_a_batch_with_duplicates_inside_and_against_queued_pairs(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, engine: Engine
) -> None:
    first = enqueuer.enqueue(catalog, [("lab/m1", "us-east-1")], kind=JobKind.SINGLE)
    assert first.job_id and [q.deployment for q in first.queued] == ["lab/m1"]
    with catalog() as session:
        m1 = repo.find_deployment(session, "lab/m1").id
    # m1 again (by name and by id, both already queued), m2 twice in the batch itself.
    targets: list[tuple[str | int, str]] = [
        ("lab/m1", "us-east-1"),
        ("lab/m2", "us-east-1"),
        (str(m1), "us-east-1"),
        ("m2", "us-east-1"),
        ("lab/m2", "eu-west-1"),
        ("alt/shared", "us-east-1"),
    ]
    batch = enqueuer.enqueue(catalog, targets, kind=JobKind.MULTIPLE, priority=Priority.HIGH)
    assert batch.job_id
    assert [(r.deployment, r.region, r.reason) for r in batch.refused] == [
        ("lab/m1", "us-east-1", DUPLICATE_REASON)
    ]
    assert [(q.deployment, q.region) for q in batch.queued] == [
        ("lab/m2", "us-east-1"),
        ("lab/m2", "eu-west-1"),
        ("alt/shared", "us-east-1"),
    ]
    with catalog() as session:
        job = session.get(Job, batch.job_id)
        assert job is not None and job.total == 3
    workflows = _workflows(engine)
    assert len(workflows) == 4
    # Each row as DBOS's own enqueue writes it: queued, owned by no one, DBOS's names.
    high = [w for w in workflows if w["workflow_uuid"].startswith(batch.job_id)]
    assert {w["status"] for w in high} == {"ENQUEUED"}
    assert {w["priority"] for w in high} == {PRIORITY_VALUES[Priority.HIGH]}
    assert all(w["owner_xid"] is None and w["executor_id"] is None for w in high)
    assert all(w["recovery_attempts"] == 0 and w["creator_xid"] for w in high)
    single = next(w for w in workflows if w["workflow_uuid"].startswith(first.job_id))
    for column in ("name", "class_name", "config_name", "application_version"):
        assert {w[column] for w in high} == {single[column]}
    assert {w["queue_name"] for w in high} == {
        queue_name(enqueuer.settings, "us-east-1"),
        queue_name(enqueuer.settings, "eu-west-1"),
    }
    certifications = _certifications(catalog)
    assert certifications[("lab/m1", "us-east-1")] == ("QUEUED", first.job_id)
    for deployment, region in (("lab/m2", "us-east-1"), ("alt/shared", "us-east-1")):
        assert certifications[(deployment, region)] == ("QUEUED", batch.job_id)


def test_a_batch_entirely_refused_leaves_no_job(
    catalog: sessionmaker[Session], enqueuer: Enqueuer
) -> None:
    targets: list[tuple[str | int, str]] = [("lab/m1", r) for r in REGIONS]
    assert len(enqueuer.enqueue(catalog, targets, kind=JobKind.MULTIPLE).queued) == 3
    again = enqueuer.enqueue(catalog, targets, kind=JobKind.MULTIPLE)
    assert again.job_id is None and not again.queued
    assert [r.region for r in again.refused] == list(REGIONS)
    with catalog() as session:
        assert len(list(session.scalars(select(Job)))) == 1


def test_a_pair_queued_one_by_one_is_refused_by_the_bulk_insert(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, engine: Engine, settings: Settings
) -> None:
    """The deduplication index referees even a row the batch's look-up did not see: it was
    written after the look-up (here inside the same transaction, through DBOS's own
    one-row enqueue), and the bulk insert skips it instead of failing."""
    from modelcert.jobs import enqueue as module

    with catalog() as session:
        m3 = repo.find_deployment(session, "lab/m3").id
        m2 = repo.find_deployment(session, "lab/m2").id
    real_taken = module._taken

    def taken_then_raced(connection: Any, keys: Any) -> set[tuple[str, str]]:
        seen = real_taken(connection, keys)
        options = certification_options(
            queue_name=queue_name(settings, "us-east-1"),
            workflow_id="raced",
            deduplication_id=module.deduplication_id(m3, "us-east-1"),
            priority=5,
        )
        enqueue_certification(
            enqueuer.client, connection, options, job_id=None, deployment_id=m3, region="us-east-1"
        )
        return seen

    module._taken = taken_then_raced  # type: ignore[assignment]
    try:
        result = enqueuer.enqueue(
            catalog, [("lab/m3", "us-east-1"), ("lab/m2", "us-east-1")], kind=JobKind.MULTIPLE
        )
    finally:
        module._taken = real_taken
    assert [r.deployment for r in result.refused] == ["lab/m3"]
    assert [q.deployment for q in result.queued] == ["lab/m2"]
    assert ("lab/m3", "us-east-1") not in _certifications(catalog)
    assert sorted(w["workflow_uuid"].split(":")[-1] for w in _workflows(engine)) == [
        f"{m2}@us-east-1",
        "raced",
    ]


def test_concurrent_overlapping_batches_refuse_each_pair_exactly_once(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, engine: Engine, settings: Settings
) -> None:
    enqueuer.ensure_queue("us-east-1")  # registered: both go straight to the transaction
    enqueuer.ensure_queue("eu-west-1")
    pairs = [(f"lab/{m}", r) for m in ("m1", "m2", "m3", "shared") for r in REGIONS[:2]]
    # Overlapping halves in opposite orders: every pair is asked for by both threads.
    batches = [pairs, list(reversed(pairs))]
    results: list[Any] = [None, None]
    barrier = threading.Barrier(2)
    other = Enqueuer(engine, settings)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = (enqueuer, other)[index].enqueue(
            catalog, batches[index], kind=JobKind.MULTIPLE
        )

    try:
        for _ in range(3):
            threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            queued = [(q.deployment, q.region) for r in results for q in r.queued]
            refused = [(x.deployment, x.region) for r in results for x in r.refused]
            assert sorted(queued) == sorted(pairs)  # each pair queued once, by one of them
            assert sorted(refused) == sorted(pairs)  # and refused once, by the other
            assert len(_workflows(engine)) == len(pairs)
            jobs = {q.workflow_id.split(":")[0] for r in results for q in r.queued}
            certifications = _certifications(catalog)
            assert {certifications[p][1] for p in pairs} <= jobs
            with engine.begin() as connection:  # free the pairs for the next round
                table = dbos_table(engine.dialect.name, "workflow_status")
                connection.execute(text(f"DELETE FROM {table}"))
    finally:
        other.close()


def test_delayed_enqueue(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, engine: Engine
) -> None:
    result = enqueuer.enqueue(
        catalog,
        [("lab/m1", "us-east-1"), ("lab/m2", "us-east-1")],
        kind=JobKind.MULTIPLE,
        delay_s=3600,
    )
    assert len(result.queued) == 2
    workflows = _workflows(engine)
    assert {w["status"] for w in workflows} == {"DELAYED"}
    assert all(w["delay_until_epoch_ms"] for w in workflows)
    # A delayed pair holds its deduplication id like a queued one.
    again = enqueuer.enqueue(catalog, [("lab/m1", "us-east-1")], kind=JobKind.SINGLE)
    assert again.job_id is None and [r.deployment for r in again.refused] == ["lab/m1"]


@pytest.mark.parametrize(
    ("ref", "region", "error", "message"),
    [
        ("lab/nope", "us-east-1", NotFoundError, "unknown deployment 'lab/nope'"),
        ("999999", "us-east-1", NotFoundError, "unknown deployment id 999999"),
        ("99999999999999999999", "us-east-1", NotFoundError, "unknown deployment id"),
        ("shared", "us-east-1", UserError, "'shared' is ambiguous: lab/shared, alt/shared"),
        ("alt/shared", "eu-west-1", UserError, "region 'eu-west-1' is not served by provider"),
    ],
)
def test_bad_targets_fail_as_the_one_by_one_look_up_did(
    catalog: sessionmaker[Session],
    enqueuer: Enqueuer,
    engine: Engine,
    ref: str,
    region: str,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        enqueuer.enqueue(catalog, [("lab/m1", "us-east-1"), (ref, region)], kind=JobKind.MULTIPLE)
    with catalog() as session:  # all or nothing
        assert not list(session.scalars(select(Job)))
    assert not _workflows(engine)


@pytest.mark.parametrize("deactivate", ["deployment", "provider"])
def test_deactivated_deployments_are_refused_and_not_due_for_recertification(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, engine: Engine, deactivate: str
) -> None:
    with transaction(catalog) as session:  # lab/m2 failed its last certification
        deployment = repo.find_deployment(session, "lab/m2")
        repo.certification_row(session, deployment.id, "us-east-1").status = "FAILED"
        if deactivate == "provider":
            deployment.provider.active = False
        else:
            deployment.active = False
        due = recertify_targets(session)
    assert due == []  # a deactivated one is not due, whatever its verdict
    why = "provider lab is deactivated" if deactivate == "provider" else "deactivated"
    with pytest.raises(UserError, match=rf"deployment lab/m2 is not active \({why}\)") as error:
        enqueuer.enqueue(
            catalog, [("alt/shared", "us-east-1"), ("lab/m2", "us-east-1")], kind=JobKind.MULTIPLE
        )
    assert error.value.field == "deployment"
    assert not _workflows(engine)  # all or nothing
    with transaction(catalog) as session:
        repo.find_deployment(session, "lab/m2").active = True
        repo.find_deployment(session, "lab/m2").provider.active = True
        assert recertify_targets(session) == [(deployment.id, "us-east-1")]


def test_a_paused_region_stays_paused_when_the_api_first_enqueues_there(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, engine: Engine, settings: Settings
) -> None:
    other = Enqueuer(engine, settings)
    try:
        other.ensure_queue("eu-west-1")
        assert pause_region(catalog, other.client, settings, "eu-west-1", paused_by="t")
    finally:
        other.close()
    enqueuer.enqueue(catalog, [("lab/m1", "eu-west-1")], kind=JobKind.SINGLE)
    table = dbos_table(engine.dialect.name, "queues")
    with engine.connect() as connection:
        concurrency = connection.execute(
            text(f"SELECT concurrency FROM {table} WHERE name = :name"),
            {"name": queue_name(settings, "eu-west-1")},
        ).scalar_one()
    assert concurrency == 0


def test_a_worker_runs_what_the_bulk_insert_queued(
    catalog: sessionmaker[Session], enqueuer: Enqueuer, start_worker: StartWorker
) -> None:
    targets: list[tuple[str | int, str]] = [
        (f"lab/{m}", r) for m in ("m1", "m2") for r in REGIONS
    ] + [("alt/shared", "us-east-1")]
    result = enqueuer.enqueue(catalog, targets, kind=JobKind.MULTIPLE)
    assert result.job_id and len(result.queued) == 7
    start_worker(regions=REGIONS, executor_id="w-bulk").drain()
    with catalog() as session:
        job = session.get(Job, result.job_id)
        assert job is not None and (job.processed, job.succeeded) == (7, 7)
        rows = {
            (c.deployment_id, c.region): c.status
            for c in session.scalars(select(Certification).where(Certification.job_id == job.id))
        }
    assert sorted(rows) == sorted((q.deployment_id, q.region) for q in result.queued)
    assert set(rows.values()) == {CertificationStatus.CERTIFIED.value}
