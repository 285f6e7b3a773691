"""Throttling shared by every call to one (provider, region) in a process.

When one certification hits a 429, the others calling the same provider in the same
region wait out the same Retry-After (or backoff) instead of each spending an attempt
to learn it: the work slows to what the quota allows and recovers as soon as the
429s stop, and no test fails for RATE_LIMIT merely because many ran at once."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]


class ThrottleGate:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._closed_until = 0.0

    def hold(self, seconds: float) -> None:
        """Close the gate for `seconds` from now (never shortens an earlier hold)."""
        self._closed_until = max(self._closed_until, self._clock() + seconds)

    async def wait(self, sleep: Sleep) -> float:
        """Wait until the gate opens; returns the seconds waited."""
        waited = 0.0
        while (remaining := self._closed_until - self._clock()) > 0:
            await sleep(remaining)
            waited += remaining
        return waited


class ThrottleGates:
    """One gate per (provider, region)."""

    def __init__(self) -> None:
        self._gates: dict[tuple[str, str], ThrottleGate] = {}

    def get(self, provider: str, region: str) -> ThrottleGate:
        return self._gates.setdefault((provider, region), ThrottleGate())
