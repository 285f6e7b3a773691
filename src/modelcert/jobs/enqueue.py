"""Enqueue certifications: one function for the API and the CLI.

The job row, the certifications marked QUEUED and the queued workflows are written in
ONE database transaction (DBOS's queue lives in the same database), so they can never
disagree. At most one queued-or-running certification per (deployment, region): the
queue's deduplication id refuses a second one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from dbos import DBOSClient
from dbos._utils import generate_uuid
from sqlalchemy import Connection, Engine, bindparam, or_, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import CertificationStatus, CertifyOptions, JobKind, Priority
from modelcert.errors import NotFoundError, UserError
from modelcert.jobs.control import region_queue_options
from modelcert.jobs.queues import PRIORITY_VALUES, dbos_table, queue_name, wake_workers
from modelcert.jobs.workflows import certification_options, certification_status
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, Deployment, Job, Provider, utcnow
from modelcert.store.suite_selection import check_suite_names
from modelcert.validation import id_in_range, is_digit_id

_T = TypeVar("_T")


@dataclass(frozen=True)
class QueuedCertification:
    deployment_id: int
    deployment: str  # provider-slug/model-id
    region: str
    workflow_id: str


@dataclass(frozen=True)
class RefusedCertification:
    deployment_id: int
    deployment: str
    region: str
    reason: str


@dataclass
class EnqueueResult:
    job_id: str | None
    kind: JobKind
    priority: Priority
    queued: list[QueuedCertification] = field(default_factory=list)
    refused: list[RefusedCertification] = field(default_factory=list)


DUPLICATE_REASON = "a certification of this deployment in this region is already queued or running"


def deduplication_id(deployment_id: int, region: str) -> str:
    return f"{deployment_id}@{region}"


def workflow_id_for(job_id: str, deployment_id: int, region: str) -> str:
    return f"{job_id}:{deployment_id}@{region}"


class Enqueuer:
    """Holds the DBOS client of this process (API or CLI) and the queues it registered."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        # An unreachable database is an answer here (the API's 503, the CLI's one line),
        # not a wait: DBOS's client would otherwise block the request until it returns.
        self.client = DBOSClient(system_database_engine=engine, retry_connection_errors=False)
        self._registered: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.destroy()

    def ensure_queue(self, region: str, *, update: bool = True) -> str:
        """Register a region's queue with the limits from settings, once per process.

        `update=False` (the enqueue path) only creates a queue no one registered yet and
        leaves an existing one's limits as they are: workers register theirs at start
        and `jobs.control` pauses and resumes them, so an enqueue can never resume a
        region paused between its read of the pause and its write."""
        name = queue_name(self.settings, region)
        with self._lock:
            if name in self._registered:
                return name
        # A paused region stays paused (modelcert.jobs.control).
        self.client.register_queue(
            name,
            on_conflict="always_update" if update else "never_update",
            **region_queue_options(self.engine, self.settings, region),
        )
        with self._lock:
            self._registered.add(name)
        return name

    def enqueue(
        self,
        factory: sessionmaker[Session],
        targets: Sequence[tuple[str | int, str]],
        *,
        kind: JobKind,
        priority: Priority = Priority.NORMAL,
        created_by: str | None = None,
        delay_s: float = 0.0,
        scope: dict[str, Any] | None = None,
        options: CertifyOptions | None = None,
    ) -> EnqueueResult:
        """Validate the targets, then write the job and queue its work in one transaction.

        Set-based: the targets are resolved in two queries, the pairs already queued or
        running found in one and refused up front, the workflows and the certifications
        written in one statement each. DBOS's unique deduplication index is the referee:
        a pair a concurrent enqueue queued after our look-up is skipped by the insert
        (ON CONFLICT DO NOTHING; PostgreSQL waits for the other transaction's outcome)
        and refused, exactly once."""
        if not targets:
            raise UserError("nothing to certify: no deployment × region matched", field="targets")
        if delay_s < 0:
            raise UserError("delay must be ≥ 0 seconds", field="delay")
        options = options or CertifyOptions()
        if options.budget_usd is not None and not (0 <= options.budget_usd < float("inf")):
            raise UserError("budget must be a number of dollars ≥ 0", field="budget_usd")
        result = EnqueueResult(job_id=None, kind=kind, priority=priority)
        regions = {str(region) for _, region in targets}
        if any(queue_name(self.settings, r) not in self._registered for r in regions):
            # First enqueue for a region in this process: check the targets, then register
            # its queue through DBOS's own connection, never inside our transaction (on
            # SQLite the second writer would wait for us forever). Later enqueues skip it.
            with transaction(factory) as session:
                checked = _resolve(session, targets)
            for region in sorted({region for _, _, region in checked}):
                self.ensure_queue(region, update=False)
        with transaction(factory) as session:
            resolved = _resolve(session, targets)
            if options.suites:
                check_suite_names(session, options.suites)
            job = Job(
                kind=kind.value,
                priority=priority.value,
                created_by=created_by,
                scope=scope or _scope(resolved),
                suites=list(options.suites) if options.suites is not None else None,
                smoke=options.smoke,
                budget_usd=options.budget_usd,
            )
            session.add(job)
            session.flush()
            connection = session.connection()
            queued = self._queue_workflows(connection, job.id, resolved, priority, delay_s)
            for deployment_id, label, region in resolved:
                workflow_id = queued.get((deployment_id, region))
                if workflow_id is None:
                    result.refused.append(
                        RefusedCertification(deployment_id, label, region, DUPLICATE_REASON)
                    )
                else:
                    result.queued.append(
                        QueuedCertification(deployment_id, label, region, workflow_id)
                    )
            _mark_queued(connection, list(queued), job.id)
            job.total = len(result.queued)
            if result.queued:
                wake_workers(connection)  # idle workers claim at commit
            if not result.queued:
                # Nothing new to do: leave no empty job behind.
                session.delete(job)
            else:
                result.job_id = job.id
        return result

    def _queue_workflows(
        self,
        connection: Connection,
        job_id: str,
        resolved: Sequence[tuple[int, str, str]],
        priority: Priority,
        delay_s: float,
    ) -> dict[tuple[int, str], str]:
        """Insert the workflows of the pairs not already queued or running, in the caller's
        transaction; the workflow id of each pair queued."""
        sys_db = self.client._sys_db
        # As `enqueue_in_transaction` does: DBOS's tables under their schema on our connection.
        sys_db._apply_caller_schema(connection)
        wanted = {
            (queue_name(self.settings, region), deduplication_id(deployment_id, region)): (
                deployment_id,
                region,
            )
            for deployment_id, _, region in resolved
        }
        taken = _taken(connection, list(wanted))
        # Sorted by the deduplication key: concurrent batches take its index entries in
        # one order, so on PostgreSQL one waits for the other instead of deadlocking.
        fresh = sorted(key for key in wanted if key not in taken)
        rows: list[dict[str, Any]] = []
        inputs: dict[str, str | None] = {}
        for name, dedup_id in fresh:
            deployment_id, region = wanted[(name, dedup_id)]
            options = certification_options(
                queue_name=name,
                workflow_id=workflow_id_for(job_id, deployment_id, region),
                deduplication_id=dedup_id,
                priority=PRIORITY_VALUES[priority],
                delay_s=delay_s,
            )
            status = certification_status(
                self.client, options, job_id=job_id, deployment_id=deployment_id, region=region
            )
            rows.append(_status_row(status))
            inputs[status["workflow_uuid"]] = status["inputs"]
        if not rows:
            return {}
        table = sys_db.tables.workflow_status
        inserted: set[str] = set()
        for chunk in _chunks(rows, _INSERT_CHUNK):
            statement = (
                sys_db.dialect.insert(table)
                .on_conflict_do_nothing()  # every unique key: the deduplication index too
                .returning(table.c.workflow_uuid)
            )
            inserted.update(connection.execute(statement, chunk).scalars())
        if inserted:
            input_table = sys_db.tables.workflow_input
            connection.execute(
                sys_db.dialect.insert(input_table).on_conflict_do_nothing(
                    index_elements=["workflow_uuid"]
                ),
                [{"workflow_uuid": w, "inputs": inputs[w]} for w in sorted(inserted)],
            )
        return {
            wanted[(row["queue_name"], row["deduplication_id"])]: row["workflow_uuid"]
            for row in rows
            if row["workflow_uuid"] in inserted
        }


# Rows per INSERT (about 30 values each) and ids per IN list: far below every limit.
_INSERT_CHUNK = 500
_IN_CHUNK = 1000


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _status_row(status: dict[str, Any]) -> dict[str, Any]:
    """A `workflow_status` row exactly as DBOS's `_insert_workflow_status` writes a queued
    workflow (ENQUEUED or DELAYED: no executor, no owner, no recovery attempt yet; a
    fresh creator token; created_at / updated_at the database's defaults)."""
    return {
        "workflow_uuid": status["workflow_uuid"],
        "status": status["status"],
        "name": status["name"],
        "class_name": status["class_name"],
        "config_name": status["config_name"],
        "executor_id": status["executor_id"],
        "application_version": status["app_version"],
        "application_id": status["app_id"],
        "authenticated_user": status["authenticated_user"],
        "authenticated_roles": status["authenticated_roles"],
        "assumed_role": status["assumed_role"],
        "queue_name": status["queue_name"],
        "recovery_attempts": 0,
        "workflow_timeout_ms": status["workflow_timeout_ms"],
        "workflow_deadline_epoch_ms": status["workflow_deadline_epoch_ms"],
        "deduplication_id": status["deduplication_id"],
        "priority": status["priority"],
        "serialization": status["serialization"],
        "queue_partition_key": status["queue_partition_key"],
        "parent_workflow_id": status["parent_workflow_id"],
        "creator_xid": generate_uuid(),
        "owner_xid": None,
        "delay_until_epoch_ms": status["delay_until_epoch_ms"],
        "attributes": status["attributes"],
        "schedule_name": status["schedule_name"],
        "debounce_deadline_epoch_ms": status["debounce_deadline_epoch_ms"],
        "is_debounced": status["is_debounced"],
        "application_name": status["application_name"],
    }


def _taken(connection: Connection, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (queue, deduplication id) are held now: by a queued, delayed or running
    workflow (DBOS clears the id when one ends), one query per thousand pairs."""
    table = dbos_table(connection.dialect.name, "workflow_status")
    statement = text(
        f"SELECT queue_name, deduplication_id FROM {table} "
        "WHERE queue_name IN :queues AND deduplication_id IN :ids"
    ).bindparams(bindparam("queues", expanding=True), bindparam("ids", expanding=True))
    taken: set[tuple[str, str]] = set()
    for chunk in _chunks(keys, _IN_CHUNK):
        found = connection.execute(
            statement,
            {"queues": sorted({q for q, _ in chunk}), "ids": [d for _, d in chunk]},
        )
        taken.update((q, d) for q, d in found)
    return taken


def _resolve(
    session: Session, targets: Sequence[tuple[str | int, str]]
) -> list[tuple[int, str, str]]:
    """(deployment id, label, region) of each distinct target, in order, as
    `repo.find_deployment` and `repo.check_region` would find and check them one by one
    (the same errors, for the first target that fails), in two queries."""
    refs = [(str(ref).strip(), region) for ref, region in targets]
    ids = {int(t) for t, _ in refs if is_digit_id(t) and id_in_range(int(t))}
    names = {t for t, _ in refs if not is_digit_id(t)}
    slugs: set[str] = set()
    model_ids = set(names)
    for name in names:
        slug, _, model_id = name.partition("/")
        if model_id:
            slugs.add(slug)
            model_ids.add(model_id)
    by_id: dict[int, _Found] = {}
    by_model: dict[str, list[_Found]] = {}
    if ids or model_ids:
        query = (
            select(
                Deployment.id,
                Deployment.provider_model_id,
                Provider.slug,
                Provider.regions,
                Deployment.active,
                Provider.active,
            )
            .join(Provider)
            .where(
                or_(
                    Deployment.id.in_(sorted(ids)),
                    Deployment.provider_model_id.in_(sorted(model_ids)),
                )
            )
            .order_by(Deployment.id)
        )
        for row in session.execute(query):
            found = _Found(row[0], row[1], row[2], list(row[3] or []), row[4], row[5])
            by_id[found.id] = found
            by_model.setdefault(found.model_id, []).append(found)
    # A slug names a provider when one of its deployments was read; whether the others
    # name one matters only when some model id is the whole `slug/model` text (rare): one
    # query then, none otherwise.
    known_slugs = {f.slug for found in by_model.values() for f in found} & slugs
    unsure = sorted(
        slug
        for slug in slugs - known_slugs
        if any(name.startswith(f"{slug}/") and name in by_model for name in names)
    )
    if unsure:
        known_slugs |= set(session.scalars(select(Provider.slug).where(Provider.slug.in_(unsure))))
    resolved: list[tuple[int, str, str]] = []
    seen: set[tuple[int, str]] = set()
    for text_ref, region in refs:
        deployment = _find(text_ref, by_id, by_model, known_slugs)
        if not (deployment.active and deployment.provider_active):
            # Every way in (API, CLI, dashboard, schedule) comes through here.
            why = (
                f"provider {deployment.slug} is deactivated"
                if not deployment.provider_active
                else "deactivated"
            )
            raise UserError(
                f"deployment {deployment.label} is not active ({why}): reactivate it to certify it",
                field="deployment",
            )
        if region not in deployment.regions:
            raise UserError(
                f"region {region!r} is not served by provider {deployment.slug!r} "
                f"(known: {', '.join(deployment.regions)})",
                field="region",
            )
        if (deployment.id, region) not in seen:
            seen.add((deployment.id, region))
            resolved.append((deployment.id, deployment.label, region))
    return resolved


@dataclass(frozen=True)
class _Found:
    id: int
    model_id: str
    slug: str
    regions: list[str]
    active: bool = True
    provider_active: bool = True

    @property
    def label(self) -> str:
        return f"{self.slug}/{self.model_id}"


def _find(
    text_ref: str,
    by_id: dict[int, _Found],
    by_model: dict[str, list[_Found]],
    known_slugs: set[str],
) -> _Found:
    """`repo.find_deployment`'s rule, on rows already read."""
    if is_digit_id(text_ref):
        found = by_id.get(int(text_ref)) if id_in_range(int(text_ref)) else None
        if found is not None:
            return found
        raise NotFoundError(f"unknown deployment id {text_ref}", field="deployment")
    slug, _, model_id = text_ref.partition("/")
    if model_id and slug in known_slugs:
        matches = [f for f in by_model.get(model_id, []) if f.slug == slug]
    else:
        matches = by_model.get(text_ref, [])
    if not matches:
        raise NotFoundError(
            f"unknown deployment {text_ref!r} (see `modelcert catalog list`)", field="deployment"
        )
    if len(matches) > 1:
        ids = ", ".join(f.label for f in matches)
        raise UserError(f"deployment {text_ref!r} is ambiguous: {ids}", field="deployment")
    return matches[0]


def _scope(resolved: Sequence[tuple[int, str, str]]) -> dict[str, Any]:
    return {
        "deployments": sorted({d for d, _, _ in resolved}),
        "regions": sorted({r for _, _, r in resolved}),
    }


def _mark_queued(connection: Connection, pairs: Sequence[tuple[int, str]], job_id: str) -> None:
    """Each pair's one current certification, created if there is none, marked QUEUED by
    this job: one upsert (in (deployment, region) order, the order every batch locks in)."""
    if not pairs:
        return
    now = utcnow()
    statement = _MARK_QUEUED.get(connection.dialect.name)
    if statement is None:  # built once per dialect (its `excluded` alias is not free)
        table = Certification.__table__
        insert = _dialect_insert(connection)(table)
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.deployment_id, table.c.region],
            set_={
                "status": insert.excluded.status,
                "job_id": insert.excluded.job_id,
                "updated_at": insert.excluded.updated_at,
            },
        )
        _MARK_QUEUED[connection.dialect.name] = statement
    rows = [
        {
            "deployment_id": deployment_id,
            "region": region,
            "status": CertificationStatus.QUEUED.value,
            "job_id": job_id,
            "updated_at": now,
        }
        for deployment_id, region in sorted(pairs)
    ]
    for chunk in _chunks(rows, _INSERT_CHUNK):
        connection.execute(statement, list(chunk))


_MARK_QUEUED: dict[str, Any] = {}


def _dialect_insert(connection: Connection) -> Any:
    return sqlite_insert if connection.dialect.name == "sqlite" else postgresql_insert


def all_active_targets(
    session: Session, regions: Sequence[str], provider_slug: str | None = None
) -> list[tuple[int, str]]:
    """Every active deployment (of one provider, or all) × the requested regions it serves."""
    query = (
        select(Deployment)
        .join(Provider)
        .where(Deployment.active.is_(True), Provider.active.is_(True))
    )
    if provider_slug:
        repo.get_provider(session, provider_slug)
        query = query.where(Provider.slug == provider_slug)
    targets = []
    for deployment in session.scalars(query).unique():
        served = deployment.provider.regions
        for region in regions or served:
            if region in served:
                targets.append((deployment.id, region))
    return targets


def recertify_targets(session: Session, now: datetime | None = None) -> list[tuple[int, str]]:
    """Certifications that expired, failed, errored or ran out of time, of deployments
    and providers still active."""
    now = now or utcnow()
    query = (
        select(Certification)
        .join(Deployment, Deployment.id == Certification.deployment_id)
        .join(Provider, Provider.id == Deployment.provider_id)
        .where(Deployment.active.is_(True), Provider.active.is_(True))
        .where(
            or_(
                Certification.status.in_(
                    [
                        CertificationStatus.FAILED.value,
                        CertificationStatus.ERROR.value,
                        CertificationStatus.INCOMPLETE.value,
                    ]
                ),
                Certification.expires_at <= now,
            )
        )
    )
    return [(c.deployment_id, c.region) for c in session.scalars(query)]
