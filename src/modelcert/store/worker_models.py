"""The workers' tables: each worker's heartbeat row, the lease that elects the reaper, and
the regions an operator paused."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from modelcert.store.models import Base, utcnow


class WorkerHeartbeat(Base):
    __tablename__ = "worker_heartbeats"

    executor_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    regions: Mapped[list[str]] = mapped_column(default=list)
    concurrency: Mapped[int] = mapped_column(Integer, default=0)
    in_flight: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    # +1 on every heartbeat: the reaper judges silence by this counter not advancing over
    # its own, uninterrupted watch (no comparison of two machines' clocks).
    beats: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Set on a graceful stop, or when the reaper took over a dead worker's work.
    stopped_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(String(500))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Lease(Base):
    """A named lease: whoever holds an unexpired one is the leader for that duty."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class RegionPause(Base):
    """A region whose queue an operator paused: nothing new starts there until resumed."""

    __tablename__ = "region_pauses"

    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused_by: Mapped[str | None] = mapped_column(String(200))
    paused_at: Mapped[datetime] = mapped_column(default=utcnow)
