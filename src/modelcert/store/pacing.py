"""The pacing learnt per provider quota, shared by every worker through the database.

One row per quota scope (`quota_pacing`): the learnt rate of call starts, the schedule of
starts (`next_start`: the earliest the next caller may go, which a 429's Retry-After also
pushes back), and the AIMD bookkeeping. Every operation is **one UPDATE statement** on
that row, the rule written in SQL, so the row lock lasts one statement and no worker
waits on another's round trips (a first version locked the row, read it, decided in
Python and wrote it back: three workers at 60 calls/s queued on the lock and left the
quota half used, docs/benchmarks.md B2):

- `slot`: take the next start in the schedule (paced quotas: spaced 1/rate apart) and
  count it; returns how long to wait for it. Only a start within `horizon_s` is granted:
  a later caller asks again nearer the time, at the rate then.
- `throttled`: a 429 — push the schedule past its Retry-After; on an unpaced quota start
  measuring what it serves, on a paced one cut the rate (multiplicative decrease), at
  most once per adjustment window whoever saw it.
- `served`: calls answered — after a measuring window the first rate is what all the
  workers were answered in it (those that had not met a 429 yet did not count theirs);
  then raise the rate once per window without a 429, doubling it until the first cut (as
  TCP's slow start) and by `increase` after, never beyond twice what was really started;
  forget it when no 429 has come for a while.

Times are the database's clock (`now` is evaluated in the statement), so workers on
several machines draw on one schedule whatever their own clocks say: only differences
of the database clock are returned to them. Tests inject `clock` instead (no waiting)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, Connection, Engine, Float, Integer, String, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from modelcert.store.models import Base


class QuotaPacing(Base):
    """The shared throttle state of one provider quota (times: database clock, epoch s)."""

    __tablename__ = "quota_pacing"

    quota: Mapped[str] = mapped_column(String(300), primary_key=True)
    rate: Mapped[float | None] = mapped_column(Float)  # call starts/s; None: not paced
    next_start: Mapped[float] = mapped_column(Float, default=0.0)
    measuring: Mapped[bool] = mapped_column(Boolean, default=False)  # for the first rate
    probing: Mapped[bool] = mapped_column(Boolean, default=False)  # measured, no cut since
    last_throttled: Mapped[float] = mapped_column(Float, default=0.0)
    last_served: Mapped[float] = mapped_column(Float, default=0.0)
    last_adjusted: Mapped[float] = mapped_column(Float, default=0.0)
    starts: Mapped[int] = mapped_column(Integer, default=0)  # since last_adjusted
    answered: Mapped[int] = mapped_column(Integer, default=0)  # since last_adjusted
    granted: Mapped[bool] = mapped_column(Boolean, default=False)  # the last slot asked for


@dataclass(frozen=True)
class Aimd:
    """The adjustment rule's constants (`certify.throttle.ThrottleGate`'s, shared)."""

    adjust_every_s: float = 0.5
    decrease: float = 0.8
    increase: float = 1.0
    forget_after_s: float = 10.0
    min_rate: float = 0.2
    horizon_s: float = 0.25  # how far ahead a slot may be granted


@dataclass(frozen=True)
class Slot:
    granted: bool  # False: none within the horizon; ask again after wait_s
    wait_s: float  # until this caller's start (granted), or until it may ask again
    rate: float | None  # the shared rate (None: not paced)
    served_ago_s: float  # since the quota last answered any worker


_DB_NOW = {
    "postgresql": "extract(epoch FROM clock_timestamp())::float8",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}
_GREATEST = {"postgresql": "greatest", "sqlite": "max"}
_LEAST = {"postgresql": "least", "sqlite": "min"}

# {now}, {greatest} and {least} are filled per dialect; in SET, every column named on
# the right is the row's value before the statement (SQL's rule, PostgreSQL and SQLite).
# A slot is granted when it starts within :horizon (unpaced quotas: always); beyond it,
# nothing is taken and the caller asks again nearer the time: a caller that reserved a
# start far ahead at a low rate would keep it after the rate has risen.
_GRANT = "(rate IS NULL OR {greatest}(next_start, {now}) <= {now} + :horizon)"
_SLOT = """
UPDATE quota_pacing SET
  granted = {grant},
  next_start = CASE WHEN rate IS NULL OR NOT {grant} THEN next_start
                    ELSE {greatest}(next_start, {now}) + 1.0 / rate END,
  starts = starts + CASE WHEN {grant} THEN 1 ELSE 0 END
WHERE quota = :quota
RETURNING granted, next_start, rate, last_served, {now}
"""
# The first 429 on an unpaced quota starts a measuring window; one on a paced quota a
# window after the last adjustment cuts the rate (from what was really started).
_STARTS_MEASURING = "(rate IS NULL AND NOT measuring)"
_CUTS = "(rate IS NOT NULL AND last_adjusted <= {now} - :adjust)"
_THROTTLED = """
UPDATE quota_pacing SET
  next_start = {greatest}(next_start, {now} + :retry_after),
  last_throttled = {now},
  rate = CASE WHEN {cuts} THEN {greatest}(:min_rate,
      {least}(rate, starts / {greatest}({now} - last_adjusted, :adjust)) * :decrease)
    ELSE rate END,
  measuring = CASE WHEN {starts_measuring} THEN {true} ELSE measuring END,
  probing = CASE WHEN {cuts} THEN {false} ELSE probing END,
  starts = CASE WHEN {starts_measuring} OR {cuts} THEN 0 ELSE starts END,
  answered = CASE WHEN {starts_measuring} OR {cuts} THEN 0 ELSE answered END,
  last_adjusted = CASE WHEN {starts_measuring} OR {cuts} THEN {now} ELSE last_adjusted END
WHERE quota = :quota
"""
# Answers reported (:answered of them since the reporter's last report). A measuring
# window a window long sets the first rate: what the quota answered in it, all workers
# together. A paced window a window long without a 429 raises the rate, never beyond twice
# what was started. No 429 for :forget seconds: not paced any more.
_FORGETS = "(last_throttled <= {now} - :forget)"
_MEASURED = "(rate IS NULL AND measuring AND last_adjusted <= {now} - :adjust)"
_RAISES = (
    "(rate IS NOT NULL AND last_adjusted <= {now} - :adjust AND last_throttled <= {now} - :adjust)"
)
_SERVED = """
UPDATE quota_pacing SET
  last_served = {now},
  rate = CASE
    WHEN {forgets} THEN NULL
    WHEN {measured} THEN {greatest}(:min_rate,
      (answered + :answered) / {greatest}({now} - last_adjusted, :adjust))
    WHEN {raises} THEN {least}(CASE WHEN probing THEN rate * 2 ELSE rate + :increase END,
      {greatest}(starts / {greatest}({now} - last_adjusted, :adjust), rate / 2) * 2)
    ELSE rate END,
  measuring = CASE WHEN {forgets} OR {measured} THEN {false} ELSE measuring END,
  probing = CASE WHEN {forgets} THEN {false} WHEN {measured} THEN {true} ELSE probing END,
  starts = CASE WHEN {measured} OR {raises} THEN 0 ELSE starts END,
  answered = CASE WHEN {measured} OR {raises} THEN 0 ELSE answered + :answered END,
  last_adjusted = CASE WHEN {measured} OR {raises} THEN {now} ELSE last_adjusted END
WHERE quota = :quota
"""


class SharedPacing:
    """The quota_pacing operations, one statement each (see the module's docstring)."""

    def __init__(
        self, engine: Engine, aimd: Aimd | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        dialect = engine.dialect.name if engine.dialect.name in _DB_NOW else "postgresql"
        self.aimd = aimd or Aimd()
        self._clock = clock
        # One statement, its own transaction: on PostgreSQL autocommit (one round trip);
        # SQLite's transactions are local (BEGIN IMMEDIATE takes its write lock).
        self._engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if dialect == "postgresql"
            else engine
        )
        now = ":now" if clock is not None else _DB_NOW[dialect]
        words = {
            "now": now,
            "greatest": _GREATEST[dialect],
            "least": _LEAST[dialect],
            "true": "true" if dialect == "postgresql" else "1",
            "false": "false" if dialect == "postgresql" else "0",
        }
        for name, rule in (
            ("cuts", _CUTS),
            ("starts_measuring", _STARTS_MEASURING),
            ("forgets", _FORGETS),
            ("measured", _MEASURED),
            ("raises", _RAISES),
        ):
            words[name] = rule.format(**words)
        words["grant"] = _GRANT.format(**words)
        self._slot = text(_SLOT.format(**words))
        self._throttled = text(_THROTTLED.format(**words))
        self._served = text(_SERVED.format(**words))
        # The row, with the model's defaults, the first time a quota is used here.
        insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        self._insert = insert(QuotaPacing).on_conflict_do_nothing(index_elements=["quota"])
        self._known: set[str] = set()  # quotas whose row exists

    def _params(self, quota: str, **values: float) -> dict[str, object]:
        params: dict[str, object] = {"quota": quota, **values}
        if self._clock is not None:
            params["now"] = self._clock()
        return params

    def _run(
        self, quota: str, statement: object, params: dict[str, object]
    ) -> list[tuple[Any, ...]]:
        with self._engine.begin() as connection:
            if quota not in self._known:
                connection.execute(self._insert, {"quota": quota})
            rows = self._execute(connection, statement, params)
        self._known.add(quota)
        return rows

    @staticmethod
    def _execute(
        connection: Connection, statement: object, params: dict[str, object]
    ) -> list[tuple[Any, ...]]:
        result = connection.execute(statement, params)  # type: ignore[call-overload]
        return [tuple(row) for row in result] if result.returns_rows else []

    def slot(self, quota: str) -> Slot:
        horizon = self.aimd.horizon_s
        rows = self._run(quota, self._slot, self._params(quota, horizon=horizon))
        granted, next_start, rate, last_served, now = rows[0]
        served_ago = max(0.0, now - last_served)
        if not granted:  # asks again when the schedule's end comes within the horizon
            return Slot(False, max(0.02, next_start - horizon - now), rate, served_ago)
        start = next_start - 1.0 / rate if rate else next_start
        return Slot(True, max(0.0, start - now), rate, served_ago)

    def throttled(self, quota: str, retry_after_s: float) -> None:
        a = self.aimd
        self._run(
            quota,
            self._throttled,
            self._params(
                quota,
                retry_after=max(0.0, retry_after_s),
                adjust=a.adjust_every_s,
                min_rate=a.min_rate,
                decrease=a.decrease,
            ),
        )

    def served(self, quota: str, answered: int = 1) -> None:
        a = self.aimd
        self._run(
            quota,
            self._served,
            self._params(
                quota,
                answered=answered,
                forget=a.forget_after_s,
                adjust=a.adjust_every_s,
                increase=a.increase,
                min_rate=a.min_rate,
            ),
        )

    def rate(self, quota: str) -> float | None:
        with self._engine.connect() as connection:
            return connection.execute(
                text("SELECT rate FROM quota_pacing WHERE quota = :quota"), {"quota": quota}
            ).scalar_one_or_none()
