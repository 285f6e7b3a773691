"""Throttling shared, in a process, by every call that draws on one provider quota.

A gate is keyed by the quota it protects (`QuotaKey`): by default one model of one
provider in one region, as Bedrock's and OpenAI's quotas are per model and region, so
one model's 429s never slow another. A deployment (or its provider's config) can widen
it: `"throttle_scope": "provider"` makes every model of the provider in a region share
one gate, `"quota_key": "<name>"` makes the deployments that name the same key share one
(an account-wide quota).

Two mechanisms, both learnt from the provider's own 429 answers:

- **Hold.** A 429's Retry-After (or backoff) closes the gate: every caller drawing on
  that quota waits it out, instead of each spending an attempt to learn it; the first in
  line goes as soon as it ends.
- **Pacing.** After the first 429 the gate spaces call starts at a learnt rate, so callers
  take turns one at a time (first come, first served) instead of all rushing in when a
  hold ends: a thundering herd turns into a burst of 429s and burns CPU. The rate is
  adjusted by AIMD, as TCP does, every `adjust_every_s`: cut by `decrease` after a window
  with a 429, raised by `increase` calls/s after a window without. Several processes
  sharing one quota each see the 429s when it runs dry, cut together and grow by the same
  step, and so converge to equal parts of it (a rule that followed each one's share of
  429s starved the slower one). When no 429 has been seen for `forget_after_s`, pacing
  stops: the work recovers as soon as the 429s stop.

So the work slows to what the quota allows and no test fails for RATE_LIMIT merely
because many ran at once. Workers sharing a quota can pace it together through a store
they all see (`SharedThrottleGate`, below: the worker's database)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")
log = logging.getLogger(__name__)
_WARN_EVERY_S = 30.0

THROTTLE_SCOPES = ("model", "provider")


@dataclass(frozen=True, order=True)
class QuotaKey:
    """The provider quota a call draws on."""

    provider: str
    region: str
    quota: str  # the model id, a named shared quota ("quota_key"), or "*" (whole provider)

    def __str__(self) -> str:
        return f"{self.provider}/{self.region}/{self.quota}"


class ThrottleGate:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        adjust_every_s: float = 0.5,
        decrease: float = 0.8,
        increase: float = 1.0,
        forget_after_s: float = 10.0,
        min_rate: float = 0.2,
    ) -> None:
        self._clock = clock
        self.adjust_every_s = adjust_every_s
        self.decrease = decrease
        self.increase = increase
        self.forget_after_s = forget_after_s
        self.min_rate = min_rate
        self.rate: float | None = None  # call starts per second; None: not paced
        self._closed_until = 0.0
        self._last_start = float("-inf")
        self._last_throttled = float("-inf")
        self._last_served = float("-inf")
        self._measuring = False  # between the first 429 and the first rate
        self._window_started = 0.0
        self._window_starts = 0
        self._window_ok = 0
        self._window_throttled = 0
        self._lock: asyncio.Lock | None = None  # created on the loop that uses it

    def hold(self, seconds: float) -> None:
        """Close the gate for `seconds` from now (never shortens an earlier hold)."""
        until = self._clock() + seconds
        if until > self._closed_until:
            self._closed_until = until
            self._last_start = float("-inf")  # the first in line goes when the hold ends

    def serving(self, *, within_s: float) -> bool:
        """Whether this quota answered a call in the last `within_s` seconds: a 429 then
        means "take your turn", not "this endpoint refuses everything"."""
        return self._clock() - self._last_served <= within_s

    def _next_start(self) -> float:
        start = self._closed_until
        if self.rate is not None:
            start = max(start, self._last_start + 1 / self.rate)
        return start

    async def wait(self, sleep: Sleep) -> float:
        """Wait for this caller's turn; returns the seconds waited."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        started = self._clock()
        async with self._lock:  # FIFO: one caller at a time watches the clock
            while (remaining := self._next_start() - self._clock()) > 0:
                await sleep(remaining)  # re-read after: the rate or a hold may have changed
            self._last_start = self._clock()
            self._window_starts += 1
        return max(0.0, self._last_start - started)

    def record(self, *, throttled: bool) -> None:
        """Feed back the outcome of one attempt that went through the gate."""
        now = self._clock()
        if throttled:
            self._last_throttled = now
            self._window_throttled += 1
        else:
            self._window_ok += 1
            self._last_served = now
        if self.rate is None and not self._measuring:
            if throttled:  # measure what the quota serves before pacing
                self._measuring = True
                self._new_window(now)
            return
        if now - self._last_throttled > self.forget_after_s:
            self.rate = None  # the 429s have stopped: no more pacing
            self._measuring = False
            return
        elapsed = now - self._window_started
        if elapsed < self.adjust_every_s:
            return
        sent = self._window_starts / elapsed
        if self.rate is None:
            self._measuring = False
            self.rate = max(self.min_rate, self._window_ok / elapsed)
        elif self._window_throttled:
            # Cut from what was really sent: a rate above the demand restrains nothing.
            self.rate = max(self.min_rate, min(self.rate, sent) * self.decrease)
        else:
            self.rate = min(self.rate + self.increase, max(sent, self.rate / 2) * 2)
        self._new_window(now)

    def _new_window(self, now: float) -> None:
        self._window_started = now
        self._window_starts = 0
        self._window_ok = 0
        self._window_throttled = 0


class ThrottleGates:
    """One gate per provider quota."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, shared: PacingStore | None = None
    ) -> None:
        self._clock = clock
        self.shared = shared  # a store every worker sees (the worker's); None: local only
        self._gates: dict[QuotaKey, ThrottleGate] = {}
        self._store_thread: ThreadPoolExecutor | None = None

    def get(self, key: QuotaKey) -> ThrottleGate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = (
                ThrottleGate(self._clock)
                if self.shared is None
                else SharedThrottleGate(key, self.shared, self._clock, run=self._on_store_thread)
            )
        return gate

    async def _on_store_thread(self, call: Callable[..., T], *args: Any) -> T:
        """The shared store's calls, on threads of their own: behind the default pool's
        queue (the engine's writes), a call's start would wait on bookkeeping."""
        if self._store_thread is None:
            self._store_thread = ThreadPoolExecutor(2, thread_name_prefix="modelcert-pacing")
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, call, *args)

    def close(self) -> None:
        if self._store_thread is not None:
            self._store_thread.shutdown(wait=False, cancel_futures=True)
            self._store_thread = None

    def rates(self) -> dict[QuotaKey, float | None]:
        """The pacing rate per quota, None where not paced (for /health)."""
        # Read from the health server's thread while the event loop may add a gate: copy
        # the items in one C-level call before iterating in Python.
        return {key: _rate(gate) for key, gate in list(self._gates.items())}


def _rate(gate: ThrottleGate) -> float | None:
    if isinstance(gate, SharedThrottleGate) and gate.shared:
        return gate.shared_rate
    return gate.rate


# -- pacing shared across processes ----------------------------------------------------
#
# The same hold and AIMD pacing, on one state per quota that a store shares between
# workers (`modelcert.store.pacing`: one UPDATE statement per operation, the rule in SQL,
# on the database's clock): one schedule of call starts, pushed back by every 429's
# Retry-After, one rate cut or raised once per window by whichever worker closes it. The
# store is only used once this process has met a 429 on the quota: no cost while there
# are none. Its calls run on a thread of their own (`run`), not the default pool where the
# engine's writes queue, so a call start never waits behind bookkeeping.


class PacingSlot(Protocol):
    @property
    def granted(self) -> bool: ...  # False: none within the store's horizon, ask again
    @property
    def wait_s(self) -> float: ...  # until this caller's start (or until it may ask again)
    @property
    def rate(self) -> float | None: ...  # the shared rate (None: not paced)
    @property
    def served_ago_s(self) -> float: ...  # since the quota last answered any worker


class PacingStore(Protocol):
    def slot(self, quota: str) -> PacingSlot: ...
    def throttled(self, quota: str, retry_after_s: float) -> None: ...
    def served(self, quota: str, answered: int) -> None: ...


class SharedThrottleGate(ThrottleGate):
    """A gate whose hold and pacing live in a store every worker sees.

    Until this process meets a 429 on the quota it is a plain local gate (no store
    call). From then on every start takes its slot from the shared schedule, every 429
    pushes the schedule back (and may cut the rate), and answered calls report, at most
    once per adjustment window, that the quota serves (which may raise it). A store error
    falls back to the local gate for that call (logged, at most once per `_WARN_EVERY_S`),
    so pacing never fails a test. The local state is kept up to date all along: it is the
    fallback, and tells `serving()`."""

    def __init__(
        self,
        key: QuotaKey,
        store: PacingStore,
        clock: Callable[[], float] = time.monotonic,
        *,
        run: Callable[..., Awaitable[Any]] | None = None,
        **options: float,
    ) -> None:
        super().__init__(clock, **options)
        self.key = key
        self.store = store
        self.shared = False  # set at the first 429 this process meets on the quota
        self.shared_rate: float | None = None  # the store's rate at the last slot taken
        self.store_errors = 0
        self._shared_served_at = float("-inf")  # when the quota last answered anyone
        self._reported_served_at = float("-inf")
        self._unreported = 0  # answers since the last report to the store
        self._run = run or asyncio.to_thread
        self._warned_at = float("-inf")
        self._pending: set[asyncio.Task[Any]] = set()

    def _failed(self, what: str, error: BaseException) -> None:
        self.store_errors += 1
        now = self._clock()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "shared pacing of %s unavailable (%s: %s: %s): pacing locally for now",
                self.key,
                what,
                type(error).__name__,
                error,
            )

    def _background(self, what: str, call: Callable[..., None], *args: Any) -> None:
        async def go() -> None:
            try:
                await self._run(call, str(self.key), *args)
            except Exception as error:  # never fail a certification
                self._failed(what, error)

        task = asyncio.get_running_loop().create_task(go())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def serving(self, *, within_s: float) -> bool:
        # Served anyone, here or in another worker (the store's answer at the last slot).
        if super().serving(within_s=within_s):
            return True
        return self.shared and self._clock() - self._shared_served_at <= within_s

    def hold(self, seconds: float) -> None:
        super().hold(seconds)
        self.shared = True
        self._background("throttled", self.store.throttled, seconds)

    def record(self, *, throttled: bool) -> None:
        super().record(throttled=throttled)  # the local state: the fallback, and serving()
        if throttled:
            if not self.shared:
                self._unreported = 0  # answers before the 429 are not the store's window's
            self.shared = True
            return
        self._unreported += 1
        now = self._clock()
        # Twice per window at most: the store needs the count, not each answer.
        if self.shared and now - self._reported_served_at >= self.adjust_every_s / 2:
            self._reported_served_at = now
            answered, self._unreported = self._unreported, 0
            self._background("served", self.store.served, answered)

    async def wait(self, sleep: Sleep) -> float:
        if not self.shared:
            return await super().wait(sleep)
        if self._lock is None:
            self._lock = asyncio.Lock()
        started = self._clock()
        # One caller of this process at a time asks the store and waits for its slot (in
        # arrival order, as the local gate): each process holds at most one slot ahead,
        # so the schedule follows the rate as it changes, and waiting costs one poll per
        # process, not one per caller. (Letting the next caller book its slot while the
        # first waits for its own was measured worse: booked slots outlive a cut, B2
        # gave 700 retries and 13 tests failed for RATE_LIMIT, against 310 and none.)
        async with self._lock:
            delay = await self._shared_slot(sleep)
            if delay is not None:
                # This process's own hold may not be in the store yet (written in the
                # background).
                delay = max(delay, self._closed_until - self._clock())
                if delay > 0:
                    await sleep(delay)
                self._last_start = self._clock()
        if delay is None:  # the store failed: the local gate's turn
            return await super().wait(sleep)
        if self.shared_rate is None and self._clock() - self._last_throttled > self.forget_after_s:
            self.shared = False  # the 429s have stopped everywhere: back to no store cost
        return max(0.0, self._last_start - started)

    async def _shared_slot(self, sleep: Sleep) -> float | None:
        """Seconds until this caller's granted slot; None if the store failed."""
        while True:
            try:
                slot = await self._run(self.store.slot, str(self.key))
            except Exception as error:  # never fail a certification
                self._failed("slot", error)
                return None
            self.shared_rate = slot.rate
            self._shared_served_at = self._clock() - slot.served_ago_s
            if slot.granted:
                return slot.wait_s
            await sleep(slot.wait_s)  # the schedule is full for now: ask again then

    async def drain(self) -> None:
        """Wait for the outcomes and holds still being written (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
