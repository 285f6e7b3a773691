"""DBOS set-up: the durable queues live in the application's own database.

One queue per region carries that region's concurrency and start-rate limits and the
deduplication of (deployment, region); every worker has a stable executor id; the
application version is pinned so that the API and every worker see each other's work.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from sqlalchemy import Connection, Engine, text

from modelcert import __version__
from modelcert.domain import Priority
from modelcert.settings import Settings

APP_NAME = "modelcert"
# Workflows are only picked up by workers of the same application version: pin it to
# the release so the API, the CLI and every worker agree.
APP_VERSION = f"modelcert-{__version__}"
# The durable certification (`jobs.workflows.CertificationWorkflow.certify`); the queue
# statistics and the reaper find its rows by this name.
WORKFLOW_NAME = "certify_deployment"
# Where the re-certification schedule's work runs (`jobs.schedule`), one at a time.
SCHEDULE_QUEUE = "modelcert-schedule"

# DBOS runs priority 0 first (and 0 is its default): always set one explicitly.
PRIORITY_VALUES: dict[Priority, int] = {Priority.HIGH: 1, Priority.NORMAL: 5, Priority.LOW: 9}


# PostgreSQL NOTIFY channel on which idle workers wait for work (`jobs.dispatch`): every
# transaction that makes a certification claimable sends it (delivered at commit).
WAKE_CHANNEL = "modelcert_work"


def wake_workers(connection: Connection) -> None:
    """Tell idle workers, at this transaction's commit, that there may be work to claim.
    PostgreSQL only (LISTEN/NOTIFY); on SQLite the workers poll, as one machine's do."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKE_CHANNEL})


def queue_name(settings: Settings, region: str) -> str:
    return f"{settings.certification_queue_name}.{region}"


def region_of_queue(settings: Settings, name: str) -> str | None:
    prefix = f"{settings.certification_queue_name}."
    return name[len(prefix) :] if name.startswith(prefix) else None


def default_executor_id(worker_name: str = "worker-1") -> str:
    """Stable across restarts of the same worker on the same host, unique per worker."""
    return f"{socket.gethostname()}-{worker_name}"


def queue_options(settings: Settings) -> dict[str, Any]:
    """The limits every region queue gets (DBOS `register_queue` keyword arguments)."""
    start_rate = settings.region_start_rate_per_second
    # DBOS limiters take an integer count per period: express fractional rates per 10 s.
    limiter = (
        {"limit": int(start_rate), "period": 1.0}
        if float(start_rate).is_integer()
        else {"limit": max(1, round(start_rate * 10)), "period": 10.0}
    )
    return {
        "global_concurrency": settings.region_concurrency,
        # DBOS requires a worker's share to fit within the region's total.
        "worker_concurrency": min(settings.certification_concurrency, settings.region_concurrency),
        "limiter": limiter,
        "polling_interval_sec": settings.queue_polling_interval_s,
    }


def dbos_config(settings: Settings, engine: Engine, executor_id: str) -> dict[str, Any]:
    """A DBOSConfig sharing the application's engine (so SQLite gets BEGIN IMMEDIATE)."""
    return {
        "name": APP_NAME,
        "system_database_url": engine.url.render_as_string(hide_password=False),
        "system_database_engine": engine,
        "executor_id": executor_id,
        "application_version": APP_VERSION,
        # Migrations ran in `store.db.upgrade` with DBOS's own engine.
        "run_migrations": False,
        "log_level": "WARNING",
        "max_executor_threads": 64,
    }


def dbos_table(dialect_name: str, table: str) -> str:
    """A DBOS system table's name in SQL: PostgreSQL keeps them in the `dbos` schema."""
    return table if dialect_name == "sqlite" else f"dbos.{table}"


# How often DBOS's own background work polls in a worker: its internal queue (scheduled
# ticks), the schedule's queue, and its jobs thread (DELAYED -> ENQUEUED). Each poll is a
# transaction or two; at DBOS's 1 s they were most of an idle worker's commits. A delayed
# certification or a re-certification tick starting up to this much later is harmless.
DBOS_BACKGROUND_POLL_S = 5.0


def calm_dbos_background() -> None:
    """Slow DBOS's own pollers in this process to `DBOS_BACKGROUND_POLL_S` (call before
    `DBOS.launch()`). DBOS has no setting for the internal queue's interval or its jobs
    thread's: they are set on its registry and module, as `forget_instances` does."""
    from dbos import _workflow_commands
    from dbos._dbos import _get_or_create_dbos_registry

    _workflow_commands._BACKGROUND_JOBS_INTERVAL_SEC = DBOS_BACKGROUND_POLL_S
    internal = _get_or_create_dbos_registry().get_internal_queue()
    internal._polling_interval_sec = DBOS_BACKGROUND_POLL_S


def forget_instances(*instances: object) -> None:
    """Drop configured instances from DBOS's registry once their DBOS runtime is destroyed.

    DBOS refuses a second instance under a name already registered in the process, and
    offers no way to unregister one: without this a process could host only one worker
    in its lifetime (the tests run one per test, in-process)."""
    from dbos._dbos import _get_or_create_dbos_registry

    registry = _get_or_create_dbos_registry()
    for key, value in list(registry.instance_info_map.items()):
        if any(value is instance for instance in instances):
            del registry.instance_info_map[key]


def owns_workflow(connection: Connection, workflow_id: str, owner_xid: str) -> bool:
    """Whether the execution holding `owner_xid` (DBOS's token for one execution, written
    when it claimed the workflow) still owns `workflow_id`: a reaper's or a drain's
    hand-off, or another claim, replaced or cleared it."""
    table = dbos_table(connection.dialect.name, "workflow_status")
    current = connection.execute(
        text(f"SELECT owner_xid, status FROM {table} WHERE workflow_uuid = :id"),
        {"id": workflow_id},
    ).first()
    return current is not None and current[0] == owner_xid and current[1] == "PENDING"


def _hand_back(
    connection: Connection,
    workflow_id: str,
    held_by: str,
    params: dict[str, Any],
    extra_set: str = "",
) -> bool:
    """Put one PENDING workflow back on its queue as before DBOS's claim (DBOS has no call
    for it): ENQUEUED, no owner, not started; only while `held_by` (SQL) holds."""
    table = dbos_table(connection.dialect.name, "workflow_status")
    result = connection.execute(
        text(
            f"UPDATE {table} SET status = 'ENQUEUED', owner_xid = NULL, "
            f"started_at_epoch_ms = NULL, updated_at = :now{extra_set} "
            f"WHERE workflow_uuid = :id AND status = 'PENDING' AND {held_by}"
        ),
        {"id": workflow_id, "now": int(time.time() * 1000), **params},
    )
    if result.rowcount:
        wake_workers(connection)  # queued again: an idle worker may take it now
    return bool(result.rowcount)


def release_claim(connection: Connection, workflow_id: str, owner_xid: str) -> bool:
    """Hand a claimed workflow that has not started back to its queue, as if never claimed:
    this dispatch is not counted toward its recovery attempts. Only while `owner_xid`
    still owns it; True when it was released."""
    uncount = (
        ", recovery_attempts = CASE WHEN recovery_attempts > 0 "
        "THEN recovery_attempts - 1 ELSE 0 END"
    )
    return _hand_back(connection, workflow_id, "owner_xid = :owner", {"owner": owner_xid}, uncount)


def release_unfinished(connection: Connection, workflow_ids: list[str], executor_id: str) -> int:
    """Hand the workflows a stopping worker did not finish back to their queues (another
    worker resumes each at its last completed step); only those still PENDING under
    `executor_id`. How many were handed back."""
    return sum(
        _hand_back(connection, workflow_id, "executor_id = :executor", {"executor": executor_id})
        for workflow_id in workflow_ids
    )
