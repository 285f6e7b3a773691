"""Queue statistics, straight from DBOS's workflow table (it has no count API)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from modelcert.jobs.queues import WORKFLOW_NAME, dbos_table, region_of_queue
from modelcert.settings import Settings

# DBOS workflow status -> the old queue's vocabulary (DOMAIN §6).
STATE_OF = {
    "ENQUEUED": "waiting",
    "DELAYED": "delayed",
    "PENDING": "active",
    "SUCCESS": "completed",
    "ERROR": "failed",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "failed",
    "CANCELLED": "cancelled",
}
STATES = ("waiting", "delayed", "active", "completed", "failed", "cancelled")


def _table(session: Session) -> str:
    # PostgreSQL keeps DBOS's tables in the `dbos` schema; SQLite has no schemas.
    return (
        "workflow_status" if session.get_bind().dialect.name == "sqlite" else "dbos.workflow_status"
    )


def queue_counts(session: Session, settings: Settings) -> dict[tuple[str, str], int]:
    """(region, state) -> number of certification workflows."""
    table = dbos_table(session.get_bind().dialect.name, "workflow_status")
    rows = session.execute(
        text(
            f"SELECT queue_name, status, COUNT(*) FROM {table} "
            "WHERE name = :name AND queue_name IS NOT NULL GROUP BY queue_name, status"
        ),
        {"name": WORKFLOW_NAME},
    )
    counts: Counter[tuple[str, str]] = Counter()
    for queue, status, count in rows:
        region = region_of_queue(settings, queue)
        if region is not None:
            counts[(region, STATE_OF.get(status, status.lower()))] += int(count)
    return dict(counts)


def queue_stats(session: Session, settings: Settings) -> dict[str, Any]:
    """Totals by state and per region, in the old API's shape plus `byRegion`."""
    counts = queue_counts(session, settings)
    totals = dict.fromkeys(STATES, 0)
    by_region: dict[str, dict[str, int]] = {}
    for (region, state), count in counts.items():
        totals[state] = totals.get(state, 0) + count
        by_region.setdefault(region, dict.fromkeys(STATES, 0))[state] = count
    return {**totals, "paused": 0, "byRegion": by_region}
