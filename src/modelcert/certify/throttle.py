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
because many ran at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Sleep = Callable[[float], Awaitable[None]]

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

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._gates: dict[QuotaKey, ThrottleGate] = {}

    def get(self, key: QuotaKey) -> ThrottleGate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = ThrottleGate(self._clock)
        return gate

    def rates(self) -> dict[QuotaKey, float | None]:
        """The pacing rate per quota, None where not paced (for /health)."""
        # Read from the health server's thread while the event loop may add a gate: copy
        # the items in one C-level call before iterating in Python.
        return {key: gate.rate for key, gate in list(self._gates.items())}
