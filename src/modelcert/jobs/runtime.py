"""What a worker process's workflows share: database, settings, provider connections,
its executor id, and the concurrency limit of certifications in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from modelcert.certify.throttle import ThrottleGates
from modelcert.providers.registry import ProviderPool
from modelcert.settings import Settings


@dataclass
class WorkerRuntime:
    factory: sessionmaker[Session]
    settings: Settings
    executor_id: str
    pool: ProviderPool = field(default_factory=ProviderPool)
    gates: ThrottleGates = field(default_factory=ThrottleGates)
    # workflow id -> what it is doing, for /health and the dashboard
    in_flight: dict[str, dict[str, Any]] = field(default_factory=dict)
    _semaphore: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def slot(self, workflow_id: str, deployment_id: int, region: str) -> AsyncIterator[None]:
        """Hold one of the worker's CERTIFICATION_CONCURRENCY slots for a certification.

        DBOS limits each region queue per worker; this bounds the worker's total across
        all the regions it serves."""
        if self._semaphore is None:  # created lazily, on the loop that runs workflows
            self._semaphore = asyncio.Semaphore(self.settings.certification_concurrency)
        async with self._semaphore:
            self.in_flight[workflow_id] = {
                "deployment": deployment_id,
                "region": region,
                "started_at": time.time(),
                "test": None,
            }
            try:
                yield
            finally:
                self.in_flight.pop(workflow_id, None)

    def note_test(self, workflow_id: str | None, test_id: str) -> None:
        if workflow_id and workflow_id in self.in_flight:
            self.in_flight[workflow_id]["test"] = test_id


_runtime: WorkerRuntime | None = None


def configure_runtime(value: WorkerRuntime) -> None:
    global _runtime
    _runtime = value


def runtime() -> WorkerRuntime:
    if _runtime is None:
        raise RuntimeError("the worker runtime is not configured (configure_runtime first)")
    return _runtime
