"""The durable certification: a DBOS adapter around the certification engine.

`CertificationWorkflow` is a DBOS configured instance holding the worker's engine. Its
workflow runs the engine's one loop (`CertificationEngine.certify`) with the instance
itself as the loop's steps: each phase (prepare, each test, finish) is a DBOS step that
calls back into the engine. A worker killed mid-certification resumes at its last
completed test (completed steps are read back from the database, not run again: no
paying twice for an LLM call).

The API and the CLI enqueue with `enqueue_certification` (a `DBOSClient`, no DBOS
runtime in their process); the row they write names this class, its instance and the
workflow, and the worker that dequeues it calls `CertificationWorkflow.certify` on its
own instance.

Each step is safe to execute twice (a kill after its write, before DBOS checkpointed
it): `prepare` reopens the run its workflow opened; a test already stored is read back,
not paid for again; `finish` closes the run once. Before each test and before the
verdict, the execution checks that it still owns the workflow (DBOS's ownership token):
one that was handed to another worker (the reaper, after a long silence) stops there,
with no further call to the provider and no write.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from dbos import DBOS, DBOSClient, DBOSConfiguredInstance, EnqueueOptions
from dbos._context import current_owner_xid
from dbos._error import DBOSWorkflowCancelledError, DBOSWorkflowConflictIDError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from modelcert.certify.engine import (
    CertificationEngine,
    CertificationRequest,
    PreparedRun,
    SlotReleased,
)
from modelcert.domain import Score, TestResult
from modelcert.errors import StoreUnavailable
from modelcert.jobs.queues import (
    APP_VERSION,
    WORKFLOW_NAME,
    dbos_table,
    owns_workflow,
    release_claim,
)
from modelcert.obs.logging import log_event
from modelcert.store.runs import RunStore, cancel_open_runs, stored_result

CLASS_NAME = "CertificationWorkflow"
INSTANCE_NAME = "certify"


@DBOS.dbos_class(CLASS_NAME)
class CertificationWorkflow(DBOSConfiguredInstance):
    """The engine's steps, made durable. One instance per worker process."""

    durable = True
    cancellation: tuple[type[BaseException], ...] = (DBOSWorkflowCancelledError,)

    def __init__(self, engine: CertificationEngine, store: RunStore, database: Engine) -> None:
        self.engine = engine
        self.store = store  # the engine's store: waits out database blips
        self.database = database  # where DBOS keeps the workflows (ownership checks)
        super().__init__(config_name=INSTANCE_NAME)

    @DBOS.workflow(name=WORKFLOW_NAME)
    async def certify(self, job_id: str | None, deployment_id: int, region: str) -> dict[str, Any]:
        """Certify one deployment in one region, durably; returns the outcome's summary."""
        request = CertificationRequest(deployment_id, region, job_id)
        workflow_id = DBOS.workflow_id
        assert workflow_id is not None
        try:
            outcome = await self.engine.certify(request, steps=self, run_key=workflow_id)
        except SlotReleased:
            # The worker is draining and this one never started: back to its queue, for
            # another worker (or this one, restarted).
            owner = _owner(workflow_id)
            with self.database.begin() as connection:
                release_claim(connection, workflow_id, owner)
            log_event("released", workflow_id=workflow_id)
            raise DBOSWorkflowConflictIDError(workflow_id) from None
        except StoreUnavailable as exc:
            # The database is away and this worker is stopping: the workflow stays
            # PENDING under this executor (resumed when it restarts, or by the reaper).
            # DBOS parks an execution that lost the right to write: that is the case.
            log_event("parked", workflow_id=workflow_id, error=str(exc))
            raise DBOSWorkflowConflictIDError(workflow_id) from None
        return outcome.summary()

    @DBOS.step(name="prepare")
    async def prepare(self, request: CertificationRequest, run_key: str) -> PreparedRun:
        return await self.engine.prepare(request, run_key)

    @DBOS.step(name="test")
    async def run_test(
        self, prepared: PreparedRun, position: int, basic_answered: bool
    ) -> TestResult:
        test_id = prepared.plan.planned(position).test.id
        stored = await self._resume_point(prepared.run_id, test_id)
        if stored is not None:  # done before a crash, checkpoint lost: not paid twice
            return stored
        return await self.engine.run_test(prepared, position, basic_answered)

    @DBOS.step(name="finish")
    async def finish(self, prepared: PreparedRun, results: list[TestResult]) -> Score:
        await self._resume_point(prepared.run_id, None)
        return await self.engine.finish(prepared, results)

    async def _resume_point(self, run_id: int, test_id: str | None) -> TestResult | None:
        """Stop here unless this execution still owns its workflow; then the test as an
        earlier execution stored it, if it did."""
        workflow_id = DBOS.workflow_id
        assert workflow_id is not None
        owner = _owner(workflow_id)

        def check() -> TestResult | None:
            # One connection for both reads (the ownership and the stored test): a step
            # costs as few round trips as its durability needs.
            with self.database.connect() as connection:
                if not owns_workflow(connection, workflow_id, owner):
                    raise _Superseded(workflow_id)
                if test_id is None:
                    return None
                with Session(connection) as session:
                    return stored_result(session, run_id, test_id)

        try:
            return await asyncio.to_thread(self.store.retrying, check)
        except _Superseded:
            log_event("superseded", workflow_id=workflow_id)
            raise DBOSWorkflowConflictIDError(workflow_id) from None


class _Superseded(Exception):
    """Raised in a thread (and turned into DBOS's conflict there): not ours any more."""


def _owner(workflow_id: str) -> str:
    owner = current_owner_xid(workflow_id)
    assert owner is not None, "a durable step runs inside its workflow"
    return owner


def certification_options(
    *,
    queue_name: str,
    workflow_id: str,
    deduplication_id: str,
    priority: int,
    delay_s: float = 0.0,
) -> EnqueueOptions:
    """Options that make a queued row run `CertificationWorkflow.certify`."""
    options: EnqueueOptions = {
        "workflow_name": WORKFLOW_NAME,
        "class_name": CLASS_NAME,
        "instance_name": INSTANCE_NAME,
        "queue_name": queue_name,
        "workflow_id": workflow_id,
        "deduplication_id": deduplication_id,
        "priority": priority,
        "app_version": APP_VERSION,
    }
    if delay_s:
        options["delay_seconds"] = delay_s
    return options


def enqueue_certification(
    client: DBOSClient,
    connection: Connection,
    options: EnqueueOptions,
    *,
    job_id: str | None,
    deployment_id: int,
    region: str,
) -> None:
    """Queue `CertificationWorkflow.certify(job_id, deployment_id, region)` in the caller's
    transaction. Raises `DBOSQueueDeduplicatedError` when its deduplication id is taken."""
    args = (job_id, deployment_id, region)
    # The row is run by name in another process: check here, against the workflow itself,
    # that these are the arguments it takes (a changed signature fails at enqueue, loudly).
    _CERTIFY_SIGNATURE.bind(None, *args)
    client.enqueue_in_transaction(connection, options, *args)


def certification_status(
    client: DBOSClient,
    options: EnqueueOptions,
    *,
    job_id: str | None,
    deployment_id: int,
    region: str,
) -> dict[str, Any]:
    """The queued row `enqueue_certification` would write, built by DBOS itself (its
    status fields and its serialization of the inputs), for a bulk insert of many
    (`jobs.enqueue`). Not written here."""
    args = (job_id, deployment_id, region)
    _CERTIFY_SIGNATURE.bind(None, *args)
    _, status = client._build_enqueue_status(options, *args)
    return dict(status)


_CERTIFY_SIGNATURE = inspect.signature(CertificationWorkflow.certify)


def adopt_legacy_certifications(engine: Engine) -> int:
    """Carry over certifications that modelcert 0.1 queued (before the engine refactor).

    0.1 queued a plain-function workflow under another application version: as they are,
    this version's workers would neither dequeue nor recover them, and their
    deduplication ids would refuse new requests for those pairs. Queued ones are
    rewritten to name `CertificationWorkflow` and this version. Ones a 0.1 worker was
    running (killed, or not drained before the upgrade) cannot resume: their checkpoints
    are in the old shape. They are queued again from the start (their checkpoints
    dropped, the run they had opened closed as CANCELLED), so the pair is certified once
    more rather than left RUNNING. Returns how many were carried over. Idempotent."""
    dialect = engine.dialect.name
    status_table = dbos_table(dialect, "workflow_status")
    outputs_table = dbos_table(dialect, "operation_outputs")
    legacy = "name = :name AND class_name IS NULL AND status IN ('ENQUEUED', 'DELAYED', 'PENDING')"
    with engine.begin() as connection:
        rows = connection.execute(
            text(f"SELECT workflow_uuid, status FROM {status_table} WHERE {legacy}"),
            {"name": WORKFLOW_NAME},
        ).all()
        if not rows:
            return 0
        restarted = [workflow_id for workflow_id, status in rows if status == "PENDING"]
        for workflow_id in restarted:
            connection.execute(
                text(f"DELETE FROM {outputs_table} WHERE workflow_uuid = :id"), {"id": workflow_id}
            )
            job_id, _, pair = workflow_id.partition(":")
            deployment, _, region = pair.partition("@")
            if deployment.isdigit():
                cancel_open_runs(
                    connection,
                    job_id=job_id,
                    deployment_id=int(deployment),
                    region=region,
                    message="interrupted by the upgrade to modelcert 0.2: certified again",
                )
        connection.execute(
            text(
                f"UPDATE {status_table} SET class_name = :class, config_name = :instance, "
                "application_version = :version, "
                "status = CASE WHEN status = 'PENDING' THEN 'ENQUEUED' ELSE status END, "
                "executor_id = CASE WHEN status = 'PENDING' THEN NULL ELSE executor_id END "
                f"WHERE {legacy}"
            ),
            {
                "name": WORKFLOW_NAME,
                "class": CLASS_NAME,
                "instance": INSTANCE_NAME,
                "version": APP_VERSION,
            },
        )
    return len(rows)
