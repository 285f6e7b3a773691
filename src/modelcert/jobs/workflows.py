"""The durable certification: a DBOS adapter around the certification engine.

`CertificationWorkflow` is a DBOS configured instance holding the worker's engine. Its
workflow runs the engine's one loop (`CertificationEngine.certify`) with the instance
itself as the loop's phases (prepare, each test, finish), which call back into the
engine. The phases are not DBOS steps: the certification's own rows are its checkpoints.
A re-executed workflow (a worker killed mid-certification, recovered) reopens the run its
workflow opened and reads back the tests stored so far: it resumes at its last completed
test, and no completed test is paid for twice. A certification costs one DBOS claim and
one output, and one write of ours per phase (14 for a 12-test battery), where a DBOS step
per phase cost a checkpoint and an ownership query more each. A workflow recovered with
checkpoints of the step-per-phase shape (0.2 before this change) resumes the same way:
it never calls a step, so DBOS never reads them; its test rows were written before each
step's checkpoint, so they cover every checkpointed test.

The API and the CLI enqueue with `enqueue_certification` (a `DBOSClient`, no DBOS
runtime in their process); the row they write names this class, its instance and the
workflow, and the worker that dequeues it calls `CertificationWorkflow.certify` on its
own instance.

Each phase is safe to execute twice: `prepare` reopens the run its workflow opened; a
test is stored once; `finish` closes the run once. Every write is fenced
(`store.runs.Fence`): it happens only while the workflow is PENDING under this
execution's DBOS ownership token, checked in the write's own statement. So the write
that ends a test is also the check before the next one: an execution whose workflow was
handed to another (the reaper, a drain) or cancelled learns it at its next write, which
is refused, and makes no further provider call. Superseded, it stops with no write;
cancelled, it closes its run as CANCELLED (what `jobs.cancel` does too).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

from dbos import DBOS, DBOSClient, DBOSConfiguredInstance, EnqueueOptions
from dbos._context import current_owner_xid
from dbos._error import DBOSWorkflowCancelledError, DBOSWorkflowConflictIDError
from sqlalchemy import Connection, Engine, text

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
    release_claim,
)
from modelcert.obs.logging import log_event
from modelcert.store.runs import Fence, NotOwned, RunStore, cancel_open_runs

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
        self.database = database  # where DBOS keeps the workflows (hand-backs)
        self.schema = None if database.dialect.name == "sqlite" else "dbos"
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

    # The phases are plain coroutines, not DBOS steps: the run's own rows are the
    # checkpoints (module docstring), each write fenced by this execution's ownership.

    async def prepare(self, request: CertificationRequest, run_key: str) -> PreparedRun:
        fence = Fence(run_key, _owner(run_key), self.schema)
        with _fenced(run_key):
            return await self.engine.prepare(request, run_key, fence=fence)

    async def run_test(
        self, prepared: PreparedRun, position: int, basic_answered: bool
    ) -> TestResult:
        with _fenced(prepared.fence.workflow_id):
            return await self.engine.run_test(prepared, position, basic_answered)

    async def finish(self, prepared: PreparedRun, results: list[TestResult]) -> Score:
        with _fenced(prepared.fence.workflow_id):
            return await self.engine.finish(prepared, results)


@contextlib.contextmanager
def _fenced(workflow_id: str) -> Iterator[None]:
    """A refused write, as DBOS's own outcome: cancelled (the engine closes the run as
    CANCELLED), or no longer ours (stop here, with no further call and no write; DBOS
    parks the execution and adopts the owner's outcome)."""
    try:
        yield
    except NotOwned as refused:
        if refused.cancelled:
            raise DBOSWorkflowCancelledError(f"Workflow {workflow_id} is cancelled") from None
        log_event("superseded", workflow_id=workflow_id)
        raise DBOSWorkflowConflictIDError(workflow_id) from None


def _owner(workflow_id: str) -> str:
    owner = current_owner_xid(workflow_id)
    assert owner is not None, "a durable phase runs inside its workflow"
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
