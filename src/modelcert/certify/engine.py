"""THE certification loop, for every caller: `modelcert certify`, the in-process demo, the
tests, and the DBOS workflow that workers run (`jobs.workflows`, a thin adapter).

    prepare  resolve the deployment, plan its battery, mark it RUNNING, open a run
    tests    one at a time, in the battery's order: fail-fast skips, a time budget per
             test, the throttle gate of the quota the calls draw on, each result stored
             as it ends (progress shows while the run goes on) and counted in metrics
    finish   score, store the verdict (or why there is none) and count it toward its job

CERTIFICATION_TIMEOUT bounds the tests; the ones it cuts off are NOT_RUN, which makes
the certification INCOMPLETE (no verdict from missing evidence). Cancelled, it ends
CANCELLED; our own failure ends ERROR; both keep the verdict it was renewing valid.

The three phases are the engine's `CertificationSteps`; the DBOS adapter implements the
same interface with each phase a durable step that calls back into the engine, so a
worker killed mid-way resumes at its last completed test. Everything the engine uses
comes in through its constructor: the store it persists through, provider connections,
throttle gates, the in-flight registry, the clocks and sleeps (`Timing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelcert.certify.evidence import (
    basic_request_answered,
    refine_feature_failure,
    skip_reason_after,
)
from modelcert.certify.plan import CertificationPlan, plan_from_inputs
from modelcert.certify.runner import (
    Clock,
    JudgeConnection,
    Sleep,
    failed_before_calling,
    not_run,
    run_test,
    skipped,
)
from modelcert.certify.scoring import not_started_score, score_results
from modelcert.certify.throttle import ThrottleGates
from modelcert.cost.budget import total_cost
from modelcert.cost.estimate import estimate_certification_cost
from modelcert.domain import (
    CertificationInputs,
    CertificationStatus,
    Score,
    Spending,
    TestResult,
)
from modelcert.errors import StoreUnavailable
from modelcert.obs import metrics
from modelcert.obs.logging import log_event
from modelcert.providers.base import ProviderClient, ProviderError
from modelcert.providers.registry import ProviderPool
from modelcert.settings import Settings

# A step's own writes normally take milliseconds; beyond this, the database was waited for.
BOOKKEEPING_SLACK_S = 0.5


class RunStore(Protocol):
    """Where a certification is recorded (`store.runs.RunStore` on the database). Each
    method is one transaction; the engine calls them from a thread."""

    def load_inputs(
        self,
        ref: str | int,
        region: str,
        *,
        job_id: str | None,
        suites: Sequence[str] | None,
        smoke: bool,
        budget_usd: float | None,
        daily_budget_usd: float | None,
    ) -> CertificationInputs: ...

    def open_run(
        self,
        deployment_id: int,
        region: str,
        *,
        run_key: str,
        simulated: bool,
        job_id: str | None,
        executor_id: str | None,
        suites: Sequence[str] = (),
        estimate_usd: float | None = None,
        budget: Spending | None = None,
    ) -> tuple[int, str | None]: ...

    def record_test(self, run_id: int, position: int, result: TestResult) -> None: ...

    def finish_run(
        self, run_id: int, results: list[TestResult], score: Score, *, job_id: str | None
    ) -> None: ...

    def abort_run(
        self, run_id: int, status: CertificationStatus, message: str, *, job_id: str | None
    ) -> None: ...


@dataclass(frozen=True)
class Timing:
    """The engine's clocks and waits. Production keeps the defaults; tests inject a short
    availability gap (and may inject sleeps and clocks) instead of waiting."""

    availability_gap_s: float = 2.0
    sleep: Sleep = asyncio.sleep
    clock: Clock = time.perf_counter

    @classmethod
    def from_settings(cls, settings: Settings) -> Timing:
        return cls(availability_gap_s=settings.availability_gap_s)


@dataclass(frozen=True)
class CertificationRequest:
    """One deployment in one region, as asked for (and by which job, if any)."""

    deployment: str | int  # id, provider/model-id, or a model id unique across providers
    region: str
    job_id: str | None = None
    # Which suites to run (`store.suite_selection`; None: the job's, else the default),
    # smoke mode, and the most this certification's job may spend. A durable
    # certification reads them from its job.
    suites: tuple[str, ...] | None = None
    smoke: bool = False
    budget_usd: float | None = None


@dataclass(frozen=True)
class PreparedRun:
    """A certification under way: what the tests need, as DBOS checkpoints it."""

    run_id: int
    job_id: str | None
    plan: CertificationPlan
    simulated: bool
    # Set when a budget keeps the certification from starting: why (it ends SKIPPED).
    refusal: str | None = None
    estimate_usd: float | None = None  # what the certification was expected to cost


@dataclass(frozen=True)
class CertificationOutcome:
    """How one certification ended."""

    run_id: int
    plan: CertificationPlan
    results: tuple[TestResult, ...]
    score: Score
    simulated: bool
    duration_s: float
    refusal: str | None = None  # not started: a budget would have been exceeded

    @property
    def region(self) -> str:
        return self.plan.target.region

    @property
    def cost_usd(self) -> float | None:
        return total_cost(r.cost_usd for r in self.results)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (what the durable workflow returns)."""
        score = self.score
        return {
            "run_id": self.run_id,
            "deployment": self.plan.deployment_label,
            "region": self.region,
            "status": score.status.value,
            "rating": score.rating,
            "badge": score.badge.value if score.badge else None,
            "error_category": score.error_category.value if score.error_category else None,
            "simulated": self.simulated,
            "suites": list(self.plan.suites),
            "cost_usd": self.cost_usd,
            "refusal": self.refusal,
        }


class CertificationSteps(Protocol):
    """The phases of one certification, as the loop calls them."""

    # True: an interrupted certification resumes later (leave its rows as they are);
    # False: interrupted means CANCELLED.
    durable: bool
    # Exceptions that mean "someone cancelled this certification".
    cancellation: tuple[type[BaseException], ...]

    async def prepare(self, request: CertificationRequest, run_key: str) -> PreparedRun: ...

    async def run_test(
        self, prepared: PreparedRun, position: int, basic_answered: bool
    ) -> TestResult: ...

    async def finish(self, prepared: PreparedRun, results: list[TestResult]) -> Score: ...


ResultCallback = Callable[[int, int, TestResult], Awaitable[None] | None]


class SlotReleased(Exception):
    """The process is draining: a certification still waiting for a slot is handed back
    (to the queue, by the durable adapter) instead of started."""


@dataclass
class InFlight:
    """The certifications running in this process: at most `limit` at once, and what each
    is doing (for the worker's /health and the dashboard). `release_waiting()` (from any
    thread) starts draining: whatever waits for a slot, or asks for one later, gets
    `SlotReleased`; what already runs goes on."""

    limit: int | None = None
    # run key (the workflow id in a worker) -> deployment, region, started_at, test
    current: dict[str, dict[str, Any]] = field(default_factory=dict)
    draining: bool = False
    _semaphore: asyncio.Semaphore | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _waiting: set[asyncio.Task[Any]] = field(default_factory=set)

    @asynccontextmanager
    async def slot(self, key: str, deployment: str | int, region: str) -> AsyncIterator[None]:
        if self.draining:
            raise SlotReleased(key)
        if self._semaphore is None and self.limit is not None:
            # Created lazily, on the loop that runs the certifications.
            self._semaphore = asyncio.Semaphore(self.limit)
        self._loop = asyncio.get_running_loop()
        if self._semaphore is not None:
            task = asyncio.current_task()
            assert task is not None
            self._waiting.add(task)
            try:
                await self._semaphore.acquire()
            except asyncio.CancelledError:
                if self.draining and task.cancelling() == 0:
                    raise SlotReleased(key) from None
                raise
            finally:
                self._waiting.discard(task)
            if self.draining:  # released while the slot was being granted
                self._semaphore.release()
                raise SlotReleased(key)
        self.current[key] = {
            "deployment": deployment,
            "region": region,
            "started_at": time.time(),
            "test": None,
        }
        try:
            yield
        finally:
            self.current.pop(key, None)
            if self._semaphore is not None:
                self._semaphore.release()

    def release_waiting(self) -> None:
        """Drain: refuse new slots, and wake whatever waits for one with SlotReleased."""
        self.draining = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def wake() -> None:
            for task in list(self._waiting):
                task.cancel()
                task.uncancel()  # see slot(): counted as a release, not a cancellation

        with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
            loop.call_soon_threadsafe(wake)

    def note_test(self, key: str, test_id: str) -> None:
        if key in self.current:
            self.current[key]["test"] = test_id

    def __len__(self) -> int:
        return len(self.current)


class CertificationEngine:
    """Certifies deployments; also the in-process implementation of `CertificationSteps`."""

    durable = False
    cancellation: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        store: RunStore,
        settings: Settings,
        *,
        providers: ProviderPool | None = None,
        gates: ThrottleGates | None = None,
        in_flight: InFlight | None = None,
        timing: Timing | None = None,
        executor_id: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        # `is None`, not `or`: an empty InFlight is falsy (it has a length), and dropping
        # the worker's own would lift its CERTIFICATION_CONCURRENCY limit.
        self.providers = ProviderPool() if providers is None else providers
        self.gates = ThrottleGates() if gates is None else gates
        self.in_flight = InFlight() if in_flight is None else in_flight
        self.timing = Timing.from_settings(settings) if timing is None else timing
        self.executor_id = executor_id

    async def aclose(self) -> None:
        await self.providers.aclose()

    # -- the loop ----------------------------------------------------------------------

    async def certify(
        self,
        request: CertificationRequest,
        *,
        steps: CertificationSteps | None = None,
        run_key: str | None = None,
        on_result: ResultCallback | None = None,
    ) -> CertificationOutcome:
        """Certify one deployment in one region, through `steps` (default: in-process)."""
        steps = steps or self
        key = run_key or f"local-{uuid.uuid4().hex[:12]}"
        async with self.in_flight.slot(key, request.deployment, request.region):
            # CERTIFICATION_TIMEOUT counts from here, once this process has a slot for the
            # run (waiting for one is not running).
            started = time.monotonic()
            prepared = await self._prepare_through(steps, request, key, started)
            plan = prepared.plan
            region = plan.target.region
            log_event(
                "active",
                run_key=key,
                deployment=plan.deployment_label,
                region=region,
                job_id=request.job_id,
            )
            if prepared.refusal is not None:
                return await self._refused(prepared, key, started)
            metrics.record_certification_started(region, plan.provider_kind)
            try:
                results = await self._run_tests(steps, prepared, key, on_result)
                score = await steps.finish(prepared, results)
            except steps.cancellation:
                await self._abort(prepared, CertificationStatus.CANCELLED, "cancelled", started)
                log_event("cancelled", run_key=key, deployment=plan.deployment_label, region=region)
                raise
            except StoreUnavailable:
                # The database is away and we may not wait longer: nothing can be written,
                # and nothing about the model is known. Durable: the workflow stays
                # pending and resumes; in-process: the caller says so.
                raise
            except asyncio.CancelledError:
                if not steps.durable:
                    # Interrupted in-process (Ctrl+C): never leave the run RUNNING. In the
                    # thread-free way: this task is being cancelled.
                    self._abort_now(prepared, CertificationStatus.CANCELLED, "cancelled", started)
                # Durable: the worker is stopping and the workflow resumes later.
                raise
            except Exception as exc:
                message = f"internal error: {type(exc).__name__}: {exc}"
                await self._abort(prepared, CertificationStatus.ERROR, message, started)
                log_event("error", run_key=key, error=message)
                raise
        outcome = CertificationOutcome(
            run_id=prepared.run_id,
            plan=plan,
            results=tuple(results),
            score=score,
            simulated=prepared.simulated,
            duration_s=time.monotonic() - started,
        )
        metrics.record_certification_finished(
            region, plan.provider_kind, score.status.value, outcome.duration_s
        )
        event = "completed" if score.status.is_valid_verdict else "failed"
        log_event(event, run_key=key, **outcome.summary())
        return outcome

    async def _refused(
        self, prepared: PreparedRun, key: str, started: float
    ) -> CertificationOutcome:
        """A budget kept this certification from starting: its run ends SKIPPED, saying so;
        the verdict it would have renewed stays as it was."""
        reason = prepared.refusal or "a budget"
        message = f"not started: {reason}"
        await self._abort(prepared, CertificationStatus.SKIPPED, message, started)
        log_event("refused", run_key=key, deployment=prepared.plan.deployment_label, error=message)
        return CertificationOutcome(
            run_id=prepared.run_id,
            plan=prepared.plan,
            results=(),
            score=not_started_score(message),
            simulated=prepared.simulated,
            duration_s=time.monotonic() - started,
            refusal=reason,
        )

    async def _prepare_through(
        self, steps: CertificationSteps, request: CertificationRequest, key: str, started: float
    ) -> PreparedRun:
        if steps.durable:
            return await steps.prepare(request, key)
        # In-process, an interruption (Ctrl+C) may land while the run is being opened in a
        # thread, which cannot be stopped: let it finish, then close the run it opened
        # (CANCELLED) rather than leave it RUNNING for good.
        opening = asyncio.ensure_future(steps.prepare(request, key))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            try:
                prepared = await opening
            except Exception:
                raise asyncio.CancelledError() from None
            self._abort_now(prepared, CertificationStatus.CANCELLED, "cancelled", started)
            raise

    async def _run_tests(
        self,
        steps: CertificationSteps,
        prepared: PreparedRun,
        key: str,
        on_result: ResultCallback | None,
    ) -> list[TestResult]:
        plan = prepared.plan
        results: list[TestResult] = []
        limit_s = self.settings.certification_timeout_s
        try:
            async with asyncio.timeout(limit_s) as budget:
                for position in range(len(plan.tests)):
                    planned = plan.planned(position)
                    reason = planned.skip_reason or skip_reason_after(results)
                    if reason:
                        result = skipped(planned, reason)
                    else:
                        self.in_flight.note_test(key, planned.test.id)
                        answered = basic_request_answered(results)
                        began = self.timing.clock()
                        result = await steps.run_test(prepared, position, answered)
                        # CERTIFICATION_TIMEOUT bounds the model's time, not the
                        # database's: time the step spent beyond the test itself (its
                        # writes and checkpoint waiting out an unreachable database) is
                        # given back to the budget.
                        bookkeeping = self.timing.clock() - began - result.duration_ms / 1000
                        deadline = budget.when()
                        if bookkeeping > BOOKKEEPING_SLACK_S and deadline is not None:
                            budget.reschedule(deadline + bookkeeping)
                    results.append(result)
                    if on_result is not None:
                        maybe = on_result(position, len(plan.tests), result)
                        if maybe is not None:
                            await maybe
        except TimeoutError:
            if not budget.expired():
                raise
            reason = f"not run: the certification exceeded CERTIFICATION_TIMEOUT ({limit_s:g} s)"
            results += [
                not_run(plan.planned(i), reason) for i in range(len(results), len(plan.tests))
            ]
            log_event("error", run_key=key, error=reason)
        return results

    async def _abort(
        self, prepared: PreparedRun, status: CertificationStatus, message: str, started: float
    ) -> None:
        await asyncio.to_thread(self._abort_now, prepared, status, message, started)

    def _abort_now(
        self, prepared: PreparedRun, status: CertificationStatus, message: str, started: float
    ) -> None:
        self.store.abort_run(prepared.run_id, status, message, job_id=prepared.job_id)
        metrics.record_certification_finished(
            prepared.plan.target.region,
            prepared.plan.provider_kind,
            status.value,
            time.monotonic() - started,
        )

    # -- the steps, in-process (the DBOS adapter's steps call these) ---------------------

    async def prepare(self, request: CertificationRequest, run_key: str) -> PreparedRun:
        """Resolve and plan, mark the certification RUNNING and open its run (the one
        `run_key` opened already, if this is a repeat).

        Raises `UserError` for an unknown deployment or a region its provider does not
        serve. Database work runs in a thread: on the event loop it would stall every
        other certification of the process while it waits for a connection or a lock."""
        return await asyncio.to_thread(self._prepare, request, run_key)

    def _prepare(self, request: CertificationRequest, run_key: str) -> PreparedRun:
        inputs = self.store.load_inputs(
            request.deployment,
            request.region,
            job_id=request.job_id,
            suites=request.suites,
            smoke=request.smoke,
            budget_usd=request.budget_usd,
            daily_budget_usd=self.settings.daily_budget_usd,
        )
        spec = inputs.spec
        plan = plan_from_inputs(self.settings, inputs, request.region)
        # Checked before any money is spent: what this pair's latest runs used per call
        # (or a typical battery call's tokens) times the calls planned, at today's price.
        # Only where a budget applies: it is a reservation against a limit, not a forecast
        # to show (a pair never certified is estimated high on purpose).
        estimate = (
            estimate_certification_cost(plan.price, plan.planned_calls, inputs.history)
            if inputs.spending.limited
            else None
        )
        try:
            simulated = self._provider(plan).simulated
        except ProviderError:
            # The client cannot be built (a missing API key, a bad endpoint setting): the
            # run still opens, and its first test records the classified failure.
            simulated = plan.provider_kind == "sim"
        run_id, refusal = self.store.open_run(
            spec.deployment_id,
            request.region,
            run_key=run_key,
            simulated=simulated,
            job_id=request.job_id,
            executor_id=self.executor_id,
            suites=plan.suites,
            estimate_usd=estimate,
            budget=inputs.spending,
        )
        return PreparedRun(run_id, request.job_id, plan, simulated, refusal, estimate)

    async def run_test(
        self, prepared: PreparedRun, position: int, basic_answered: bool
    ) -> TestResult:
        """One test against the provider (its time budget and retries inside), stored at
        once and counted in the metrics."""
        plan = prepared.plan
        planned = plan.planned(position)
        try:
            provider = self._provider(plan)
        except ProviderError as error:
            result = failed_before_calling(planned, error)
        else:
            result = await run_test(
                planned,
                provider,
                plan.target,
                streaming=plan.streaming,
                policy=plan.policy,
                timeout_s=plan.test_timeout_s,
                availability_gap_s=self.timing.availability_gap_s,
                sleep=self.timing.sleep,
                clock=self.timing.clock,
                gate=self.gates.get(plan.quota),
                price=plan.price,
                judges=self._judges(plan),
            )
        result.suite, result.weight, result.required = plan.weighing(position)
        result = refine_feature_failure(result, planned.test, basic_answered=basic_answered)
        await asyncio.to_thread(self.store.record_test, prepared.run_id, position, result)
        metrics.record_test_result(
            plan.target.region,
            plan.provider_kind,
            result.test_id,
            result.outcome.value,
            result.error_category.value if result.error_category else "",
            result.retries,
            result.throttled_s,
            (result.latency_ms or 0) / 1000,
        )
        if result.cost_usd:
            metrics.record_cost(plan.target.region, plan.provider_kind, result.cost_usd)
        return result

    async def finish(self, prepared: PreparedRun, results: list[TestResult]) -> Score:
        """Score, then store the verdict and count it toward the job, in one transaction."""
        score = score_results(results)
        await asyncio.to_thread(
            self.store.finish_run, prepared.run_id, results, score, job_id=prepared.job_id
        )
        return score

    def _judges(self, plan: CertificationPlan) -> dict[str, JudgeConnection]:
        """The plan's judges as connections through this engine's pool and quota gates."""
        return {
            ref: JudgeConnection(
                label=judge.label,
                connect=functools.partial(
                    self.providers.get,
                    judge.provider_slug,
                    judge.provider_kind,
                    judge.provider_config,
                ),
                target=judge.target,
                price=judge.price,
                gate=self.gates.get(judge.quota),
            )
            for ref, judge in plan.judges.items()
        }

    def _provider(self, plan: CertificationPlan) -> ProviderClient:
        return self.providers.get(plan.provider_slug, plan.provider_kind, plan.provider_config)
