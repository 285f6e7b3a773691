"""The pacing learnt per provider quota, shared by every worker through the database.

One row per quota scope (`quota_pacing`): the hold that a 429's Retry-After set, the
pacing rate, the AIMD window and the next call start slot. `SharedPacing.update` runs a
caller's decision on one row under a row lock (`SELECT … FOR UPDATE` on PostgreSQL,
`BEGIN IMMEDIATE` on SQLite) with the database's clock as `now`, so several workers (on
several machines) draw slots from one schedule whatever their own clocks say: only
differences of the database clock are ever returned to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Boolean, Engine, Executable, Float, Integer, String, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelcert.store.db import make_session_factory, transaction
from modelcert.store.models import Base

T = TypeVar("T")


class QuotaPacing(Base):
    """The shared throttle state of one provider quota (times: database clock, epoch s)."""

    __tablename__ = "quota_pacing"

    quota: Mapped[str] = mapped_column(String(300), primary_key=True)
    rate: Mapped[float | None] = mapped_column(Float)  # call starts/s; None: not paced
    hold_until: Mapped[float] = mapped_column(Float, default=0.0)
    next_start: Mapped[float] = mapped_column(Float, default=0.0)
    last_throttled: Mapped[float] = mapped_column(Float, default=0.0)
    last_served: Mapped[float] = mapped_column(Float, default=0.0)
    measuring: Mapped[bool] = mapped_column(Boolean, default=False)
    window_started: Mapped[float] = mapped_column(Float, default=0.0)
    window_starts: Mapped[int] = mapped_column(Integer, default=0)
    window_ok: Mapped[int] = mapped_column(Integer, default=0)
    window_throttled: Mapped[int] = mapped_column(Integer, default=0)


_NOW = {
    "postgresql": "SELECT extract(epoch FROM clock_timestamp())",
    "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
}


class SharedPacing:
    """`update(quota, decide)`: `decide(row, db_now)` on the quota's locked row."""

    def __init__(self, engine: Engine) -> None:
        self._factory = make_session_factory(engine)
        self._dialect = engine.dialect.name
        self._now = text(_NOW.get(self._dialect, _NOW["postgresql"]))

    def update(self, quota: str, decide: Callable[[QuotaPacing, float], T]) -> T:
        with transaction(self._factory) as session:
            row = self._locked(session, quota)
            now = float(session.execute(self._now).scalar_one())
            if row is None:  # the first use of this quota, maybe by several at once
                session.execute(self._insert(quota, now))
                row = self._locked(session, quota)
                assert row is not None
            return decide(row, now)

    @staticmethod
    def _locked(session: Session, quota: str) -> QuotaPacing | None:
        return session.scalars(
            select(QuotaPacing).where(QuotaPacing.quota == quota).with_for_update()
        ).one_or_none()

    def _insert(self, quota: str, now: float) -> Executable:
        values = {
            "quota": quota,
            "rate": None,
            "hold_until": 0.0,
            "next_start": 0.0,
            "last_throttled": 0.0,
            "last_served": 0.0,
            "measuring": False,
            "window_started": now,
            "window_starts": 0,
            "window_ok": 0,
            "window_throttled": 0,
        }
        insert = sqlite_insert if self._dialect == "sqlite" else postgresql_insert
        return insert(QuotaPacing).values(values).on_conflict_do_nothing(index_elements=["quota"])
