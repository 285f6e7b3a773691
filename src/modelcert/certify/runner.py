"""Runs battery tests against a provider: a timeout per call that really cancels it,
retries with exponential backoff and jitter for temporary categories only (honouring
Retry-After), every retry counted, every failure classified with its original text.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modelcert.certify.battery import PlannedTest
from modelcert.certify.errors import Classification, categorise_error, rule_for
from modelcert.certify.throttle import ThrottleGate
from modelcert.certify.verdicts import ChatResponse
from modelcert.domain import NOT_AVAILABLE_CATEGORIES, ErrorCategory, Severity, TestOutcome
from modelcert.providers.base import (
    ChatEvent,
    ChatRequest,
    Provider,
    ProviderError,
    Stop,
    Target,
    TextDelta,
    ToolCall,
    Usage,
)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

# After this many tests in a row end unresponsive, the endpoint is not worth waiting for.
UNRESPONSIVE_LIMIT = 2
_UNRESPONSIVE = frozenset({ErrorCategory.TIMEOUT})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    base_s: float = 2.0
    max_s: float = 16.0
    jitter: float = 0.2  # ± fraction of the backoff
    max_throttle_s: float = 120.0  # with a shared throttle gate: how long to wait out 429s

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds before retry number `retry` (1-based). Retry-After wins when given."""
        if retry_after is not None:
            # Never earlier than the provider asked; a little spread avoids a thundering herd.
            return retry_after * (1 + rng.uniform(0, self.jitter / 2))
        backoff = min(self.max_s, self.base_s * 2.0 ** (retry - 1))
        return max(0.0, backoff * (1 + rng.uniform(-self.jitter, self.jitter)))


@dataclass
class TestResult:
    __test__ = False

    test_id: str
    title: str
    outcome: TestOutcome
    detail: str = ""
    latency_ms: float | None = None
    ttft_ms: float | None = None
    retries: int = 0
    attempts: int = 0
    error_category: ErrorCategory | None = None
    error_severity: Severity | None = None
    error_code: str | None = None
    http_status: int | None = None
    error_message: str | None = None  # the provider's original text
    input_tokens: int | None = None
    output_tokens: int | None = None
    throttled_s: float = 0.0  # time spent waiting on RATE_LIMIT retries
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_ms: float = 0.0


class CallFailed(Exception):
    """A call failed for good (permanent category, or retries exhausted)."""

    def __init__(self, error: ProviderError, classification: Classification) -> None:
        super().__init__(error.message)
        self.error = error
        self.classification = classification


async def collect(
    events: AsyncGenerator[ChatEvent, None], clock: Clock = time.perf_counter
) -> ChatResponse:
    """Drain one answer's events into a ChatResponse, measuring latency and TTFT."""
    started = clock()
    first: float | None = None
    parts: list[str] = []
    chunks = 0
    tool_calls: list[tuple[str, str]] = []
    usage: Usage | None = None
    stop: str | None = None
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TextDelta):
                if event.text:
                    chunks += 1
                    parts.append(event.text)
                    first = clock() if first is None else first
            elif isinstance(event, ToolCall):
                tool_calls.append((event.name, event.arguments))
                first = clock() if first is None else first
            elif isinstance(event, Usage):
                usage = event
            elif isinstance(event, Stop):
                stop = event.reason
    ended = clock()
    return ChatResponse(
        text="".join(parts),
        chunks=chunks,
        tool_calls=tuple(tool_calls),
        input_tokens=usage.input_tokens if usage else None,
        output_tokens=usage.output_tokens if usage else None,
        stop_reason=stop,
        latency_ms=(ended - started) * 1000,
        ttft_ms=(first - started) * 1000 if first is not None else None,
    )


def classify(error: ProviderError) -> Classification:
    return categorise_error(code=error.code, status=error.status, message=error.message)


@dataclass
class _Context:
    """The CallContext of one test: calls with timeout and retries, and their tally."""

    provider: Provider
    target: Target
    policy: RetryPolicy
    timeout_s: float
    streaming: bool
    sleep_fn: Sleep
    rng: random.Random
    clock: Clock
    retries: int = 0
    attempts: int = 0
    throttled_s: float = 0.0
    responses: list[ChatResponse] = field(default_factory=list)
    gate: ThrottleGate | None = None  # shared by calls to the same (provider, region)

    async def sleep(self, seconds: float) -> None:
        await self.sleep_fn(seconds)

    async def _attempt(self, request: ChatRequest) -> ChatResponse:
        self.attempts += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                return await collect(self.provider.chat(self.target, request), self.clock)
        except TimeoutError:
            raise ProviderError(
                f"no complete answer within {self.timeout_s:g} s (call cancelled)",
                code="TimeoutError",
                provider=self.provider.kind,
            ) from None
        except ProviderError:
            raise
        except Exception as exc:  # a misbehaving adapter or answer: classify, never crash
            raise ProviderError(
                f"{type(exc).__name__}: {exc}",
                code="MalformedResponse",
                provider=self.provider.kind,
            ) from exc

    async def call(self, request: ChatRequest) -> ChatResponse:
        retry = 0
        while True:
            if self.gate is not None:
                self.throttled_s += await self.gate.wait(self.sleep_fn)
            try:
                response = await self._attempt(request)
            except ProviderError as error:
                classification = classify(error)
                if self.gate is not None and classification.category is ErrorCategory.RATE_LIMIT:
                    self.gate.record(throttled=True)
                # With a shared gate, throttling is waited out within a time budget rather
                # than a count of retries: many certifications at once must not fail
                # merely because the quota makes them take turns.
                throttled = (
                    classification.category is ErrorCategory.RATE_LIMIT and self.gate is not None
                )
                exhausted = (
                    self.throttled_s >= self.policy.max_throttle_s
                    if throttled
                    else retry >= self.policy.max_retries
                )
                if not classification.temporary or exhausted:
                    raise CallFailed(error, classification) from error
                retry += 1
                self.retries += 1
                delay = self.policy.delay(retry, error.retry_after, self.rng)
                if throttled:
                    assert self.gate is not None
                    self.gate.hold(delay)  # every caller of this provider and region waits
                    continue
                if classification.category is ErrorCategory.RATE_LIMIT:
                    self.throttled_s += delay
                await self.sleep_fn(delay)
                continue
            if self.gate is not None:
                self.gate.record(throttled=False)
            self.responses.append(response)
            return response


def skip_reason_after(results: Sequence[TestResult]) -> str | None:
    """Fail fast: why the remaining tests need not run, given the results so far. Pure."""
    for result in results:
        if result.error_category in NOT_AVAILABLE_CATEGORIES:
            return f"not run: {result.error_category} in {result.test_id}"
    tail = [r for r in results if r.outcome is not TestOutcome.SKIPPED][-UNRESPONSIVE_LIMIT:]
    if len(tail) == UNRESPONSIVE_LIMIT and all(r.error_category in _UNRESPONSIVE for r in tail):
        return f"not run: endpoint unresponsive ({tail[-1].error_category} in a row)"
    return None


def skipped(planned: PlannedTest, reason: str) -> TestResult:
    return TestResult(planned.test.id, planned.test.title, TestOutcome.SKIPPED, detail=reason)


async def run_test(
    planned: PlannedTest,
    provider: Provider,
    target: Target,
    *,
    streaming: bool = True,
    policy: RetryPolicy | None = None,
    timeout_s: float | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.perf_counter,
    rng: random.Random | None = None,
    gate: ThrottleGate | None = None,
) -> TestResult:
    """Run one planned test; never raises for provider behaviour."""
    test = planned.test
    if planned.skip_reason:
        return skipped(planned, planned.skip_reason)
    ctx = _Context(
        provider=provider,
        target=target,
        policy=policy or RetryPolicy(),
        timeout_s=timeout_s if timeout_s is not None else test.timeout_s,
        streaming=streaming,
        sleep_fn=sleep,
        rng=rng or random.Random(),
        clock=clock,
        gate=gate,
    )
    result = TestResult(test.id, test.title, TestOutcome.FAILED)
    started = clock()
    try:
        verdict = await test.run(ctx)
    except CallFailed as failure:
        error = failure.error
        result.detail = error.message
        result.error_category = failure.classification.category
        result.error_severity = failure.classification.severity
        result.error_code = error.code
        result.http_status = error.status
        result.error_message = error.message
    else:
        result.outcome = TestOutcome.PASSED if verdict.passed else TestOutcome.FAILED
        result.detail = verdict.detail
        if not verdict.passed:
            category = verdict.category or ErrorCategory.QUALITY_ISSUE
            result.error_category = category
            result.error_severity = rule_for(category).severity
            result.error_message = verdict.detail
    result.duration_ms = (clock() - started) * 1000
    result.retries = ctx.retries
    result.attempts = ctx.attempts
    result.throttled_s = round(ctx.throttled_s, 3)
    if ctx.responses:
        result.latency_ms = round(sum(r.latency_ms for r in ctx.responses) / len(ctx.responses), 1)
        first_ttft = ctx.responses[0].ttft_ms
        result.ttft_ms = round(first_ttft, 1) if first_ttft is not None else None
        result.input_tokens = _sum_tokens(r.input_tokens for r in ctx.responses)
        result.output_tokens = _sum_tokens(r.output_tokens for r in ctx.responses)
    return result


def _sum_tokens(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


ResultCallback = Callable[[int, int, TestResult], Awaitable[None] | None]


async def run_battery(
    plan: Sequence[PlannedTest],
    provider: Provider,
    target: Target,
    *,
    streaming: bool = True,
    policy: RetryPolicy | None = None,
    timeout_s: float | None = None,
    on_result: ResultCallback | None = None,
    sleep: Sleep = asyncio.sleep,
) -> list[TestResult]:
    """Run the planned tests in order, failing fast once the deployment proves unusable."""
    results: list[TestResult] = []
    for index, planned in enumerate(plan):
        reason = skip_reason_after(results)
        if reason:
            result = skipped(planned, reason)
        else:
            result = await run_test(
                planned,
                provider,
                target,
                streaming=streaming,
                policy=policy,
                timeout_s=timeout_s,
                sleep=sleep,
            )
        results.append(result)
        if on_result is not None:
            maybe = on_result(index, len(plan), result)
            if maybe is not None:
                await maybe
    return results
