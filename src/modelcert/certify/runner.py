"""Runs one battery test against a provider: a time budget per test that really cancels
the call in flight, retries with exponential backoff and jitter for temporary categories
only (honouring Retry-After), every retry counted, every failure classified with its
original text.

**The test's timeout is its whole budget**: attempts, backoff and waits together. A hung
call uses it up and is not tried again, so a dead endpoint costs one timeout per test
(two tests, then the fail-fast rule in `certify.evidence` skips the rest), not
1 + `max_retries` timeouts. One wait does not count against it: taking turns behind a
quota that is serving calls (429s while the same quota answers others), which is the
quota working, not the endpoint failing; that wait is bounded by `max_throttle_s`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from modelcert.certify.battery import PlannedTest
from modelcert.certify.errors import Classification, categorise_error, rule_for
from modelcert.certify.throttle import ThrottleGate
from modelcert.certify.verdicts import ChatResponse
from modelcert.cost.prices import Price
from modelcert.domain import ErrorCategory, TestOutcome, TestResult
from modelcert.providers.base import (
    ChatEvent,
    ChatRequest,
    ProviderClient,
    ProviderError,
    Stop,
    Target,
    TextDelta,
    ToolCall,
    Usage,
)
from modelcert.secrets import redact, redact_value

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True)
class JudgeConnection:
    """How a test reaches the deployment that grades its `llm-judge` assertions."""

    label: str
    connect: Callable[[], ProviderClient]  # may raise ProviderError (e.g. no API key)
    target: Target
    price: Price | None = None
    gate: ThrottleGate | None = None


class JudgeFailed(Exception):
    """The judge could not grade (its own calls failed): no evidence about the model, so
    the test is NOT_RUN rather than failed (`engine`: no verdict from missing evidence)."""

    def __init__(self, label: str, error: ProviderError) -> None:
        super().__init__(f"not run: the judge {label} failed: {error.message}")
        self.error = error


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    base_s: float = 2.0
    max_s: float = 16.0
    jitter: float = 0.2  # ± fraction of the backoff
    # How long one test may wait its turn behind a quota that is serving other calls.
    max_throttle_s: float = 120.0

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds before retry number `retry` (1-based). Retry-After wins when given."""
        if retry_after is not None:
            # Never earlier than the provider asked; a little spread avoids a thundering herd.
            return retry_after * (1 + rng.uniform(0, self.jitter / 2))
        backoff = min(self.max_s, self.base_s * 2.0 ** (retry - 1))
        return max(0.0, backoff * (1 + rng.uniform(-self.jitter, self.jitter)))


class CallFailed(ProviderError):
    """A call failed for good (permanent category, retries or time budget exhausted).

    A ProviderError itself, with the provider's status, code and message, so that a test
    may catch the failure of a call it expects (`except ProviderError`)."""

    def __init__(self, error: ProviderError, classification: Classification) -> None:
        super().__init__(
            error.message,
            status=error.status,
            code=error.code,
            retry_after=error.retry_after,
            provider=error.provider,
        )
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
    """The CallContext of one test: calls within the test's budget, and their tally."""

    provider: ProviderClient
    target: Target
    policy: RetryPolicy
    timeout_s: float
    streaming: bool
    availability_gap_s: float
    sleep_fn: Sleep
    rng: random.Random
    clock: Clock
    gate: ThrottleGate | None = None  # shared by the calls that draw on the same quota
    retries: int = 0
    attempts: int = 0
    throttled_s: float = 0.0
    rate_limited: int = 0  # RATE_LIMIT answers, retried or not
    responses: list[ChatResponse] = field(default_factory=list)
    deadline: float = 0.0  # set when the test starts; moved by turns taken behind a quota
    _queued_s: float = 0.0  # of `throttled_s`, the part that moved the deadline
    judges: Mapping[str, JudgeConnection] = field(default_factory=dict)
    judge_cost_usd: float = 0.0  # what the judges' answers cost (priced ones)

    def start(self) -> None:
        self.deadline = self.clock() + self.timeout_s

    def remaining(self) -> float:
        return self.deadline - self.clock()

    async def sleep(self, seconds: float) -> None:
        await self.sleep_fn(seconds)

    async def judge(self, ref: str, request: ChatRequest) -> ChatResponse:
        """One grading call to the judge `ref` names, with this test's retry policy and
        within its time budget; its answer is not the model's (not in `responses`)."""
        connection = self.judges.get(ref)
        if connection is None:
            raise JudgeFailed(ref, ProviderError("no such judge in the plan", code="NoJudge"))
        try:
            provider = connection.connect()
        except ProviderError as error:
            raise JudgeFailed(connection.label, error) from error
        grader = _Context(
            provider=provider,
            target=connection.target,
            policy=self.policy,
            timeout_s=max(0.001, self.remaining()),
            streaming=False,
            availability_gap_s=self.availability_gap_s,
            sleep_fn=self.sleep_fn,
            rng=self.rng,
            clock=self.clock,
            gate=connection.gate,
        )
        grader.start()
        try:
            response = await grader.call(request)
        except ProviderError as error:
            raise JudgeFailed(connection.label, error) from error
        finally:
            self.throttled_s += grader.throttled_s
        if connection.price is not None:
            self.judge_cost_usd += connection.price.cost(
                response.input_tokens, response.output_tokens, 1
            )
        return response

    def _quota_serving(self) -> bool:
        """Whether the quota answered anyone here recently: then a 429 means "take your
        turn" (waited out); else it is the endpoint refusing (retried, then failed)."""
        assert self.gate is not None
        return self.gate.serving(within_s=max(self.timeout_s, self.policy.max_throttle_s))

    def _took_turn(self, seconds: float) -> None:
        """Waited behind a quota that serves others: not the endpoint's time."""
        extra = min(seconds, max(0.0, self.policy.max_throttle_s - self._queued_s))
        self._queued_s += extra
        self.deadline += extra

    async def _take_turn(self, last: ProviderError | None) -> None:
        """Wait for this call's turn at the quota's gate, no longer than the test may."""
        assert self.gate is not None
        serving = self._quota_serving()
        limit = max(0.0, self.remaining())
        if serving:  # taking turns at a working quota has its own budget
            limit += max(0.0, self.policy.max_throttle_s - self._queued_s)
        started = self.clock()
        try:
            async with asyncio.timeout(limit):
                waited = await self.gate.wait(self.sleep_fn)
        except TimeoutError:
            self.throttled_s += self.clock() - started
            raise self._out_of_time(last) from None
        self.throttled_s += waited
        if serving:
            self._took_turn(waited)

    def _out_of_time(self, last: ProviderError | None) -> CallFailed:
        error = last or ProviderError(
            f"no complete answer within {self.timeout_s:g} s (call cancelled)",
            code="TimeoutError",
            provider=self.provider.kind,
        )
        return CallFailed(error, classify(error))

    async def _attempt(self, request: ChatRequest, timeout_s: float) -> ChatResponse:
        self.attempts += 1
        try:
            async with asyncio.timeout(timeout_s):
                events = self.provider.chat(self.target, replace(request, timeout_s=timeout_s))
                return await collect(events, self.clock)
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
        last: ProviderError | None = None
        while True:
            if self.gate is not None:
                await self._take_turn(last)
            remaining = self.remaining()
            if remaining <= 0:
                raise self._out_of_time(last)
            try:
                response = await self._attempt(request, min(remaining, self.timeout_s))
            except ProviderError as error:
                last = error
                classification = classify(error)
                rate_limited = classification.category is ErrorCategory.RATE_LIMIT
                self.rate_limited += rate_limited
                if self.gate is not None and rate_limited:
                    self.gate.record(throttled=True)
                if not classification.temporary:
                    raise CallFailed(error, classification) from error
                retry += 1
                delay = self.policy.delay(retry, error.retry_after, self.rng)
                in_line = rate_limited and self.gate is not None
                if in_line:
                    assert self.gate is not None
                    # Rate limits are waited out rather than counted: many certifications
                    # at once must not fail merely because the quota makes them take turns.
                    queued_out = self._queued_s >= self.policy.max_throttle_s
                    # A quota serving nobody is the endpoint refusing: retried like any
                    # temporary failure, within the count and the budget.
                    refused = not self._quota_serving() and (
                        retry > self.policy.max_retries or delay >= self.remaining()
                    )
                    if queued_out or refused:
                        raise CallFailed(error, classification) from error
                    self.retries += 1
                    self.gate.hold(delay)  # every caller drawing on this quota waits
                    continue
                if retry > self.policy.max_retries or delay >= self.remaining():
                    raise CallFailed(error, classification) from error
                self.retries += 1
                if rate_limited:
                    self.throttled_s += delay
                await self.sleep_fn(delay)
                continue
            if self.gate is not None:
                self.gate.record(throttled=False)
            self.responses.append(response)
            return response


def skipped(planned: PlannedTest, reason: str) -> TestResult:
    return TestResult(planned.test.id, planned.test.title, TestOutcome.SKIPPED, detail=reason)


def not_run(planned: PlannedTest, reason: str) -> TestResult:
    """A test that should have run and did not, for a reason that is not the model's."""
    return TestResult(planned.test.id, planned.test.title, TestOutcome.NOT_RUN, detail=reason)


async def run_test(
    planned: PlannedTest,
    provider: ProviderClient,
    target: Target,
    *,
    streaming: bool = True,
    policy: RetryPolicy | None = None,
    timeout_s: float | None = None,
    availability_gap_s: float = 2.0,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.perf_counter,
    rng: random.Random | None = None,
    gate: ThrottleGate | None = None,
    price: Price | None = None,
    judges: Mapping[str, JudgeConnection] | None = None,
) -> TestResult:
    """Run one planned test; never raises for provider behaviour. With a `price`, the
    result says what its calls cost (its judges' priced calls included)."""
    test = planned.test
    if planned.skip_reason:
        return skipped(planned, planned.skip_reason)
    ctx = _Context(
        provider=provider,
        target=target,
        policy=policy or RetryPolicy(),
        timeout_s=timeout_s if timeout_s is not None else test.timeout_s,
        streaming=streaming,
        availability_gap_s=availability_gap_s,
        sleep_fn=sleep,
        rng=rng or random.Random(),
        clock=clock,
        gate=gate,
        judges=judges or {},
    )
    result = TestResult(test.id, test.title, TestOutcome.FAILED)
    started = clock()
    ctx.start()
    try:
        verdict = await test.run(ctx)
    except ProviderError as error:
        # A call that failed for good, or a test's own verdict on calls that failed
        # (e.g. "inconsistent availability"): classified either way.
        _record_failure(result, error)
    except JudgeFailed as failed:
        result.outcome = TestOutcome.NOT_RUN
        result.detail = str(failed)
    else:
        result.outcome = TestOutcome.PASSED if verdict.passed else TestOutcome.FAILED
        # A verdict may quote the answer, and an answer may repeat a key it saw: masked
        # here, before the CLI, a log or the database shows it.
        result.detail = redact(verdict.detail)
        result.assertions = [redact_value(dict(outcome)) for outcome in verdict.assertions] or None
        if not verdict.passed:
            category = verdict.category or ErrorCategory.QUALITY_ISSUE
            result.error_category = category
            result.error_severity = rule_for(category).severity
            result.error_message = result.detail
    result.duration_ms = (clock() - started) * 1000
    result.retries = ctx.retries
    result.attempts = ctx.attempts
    result.throttled_s = round(ctx.throttled_s, 3)
    result.rate_limited = ctx.rate_limited
    if ctx.responses:
        result.latency_ms = round(sum(r.latency_ms for r in ctx.responses) / len(ctx.responses), 1)
        first_ttft = ctx.responses[0].ttft_ms
        result.ttft_ms = round(first_ttft, 1) if first_ttft is not None else None
        result.input_tokens = _sum_tokens(r.input_tokens for r in ctx.responses)
        result.output_tokens = _sum_tokens(r.output_tokens for r in ctx.responses)
    if price is not None:
        own = price.cost(result.input_tokens, result.output_tokens, len(ctx.responses))
        result.cost_usd = round(own + ctx.judge_cost_usd, 8)
    return result


def failed_before_calling(planned: PlannedTest, error: ProviderError) -> TestResult:
    """A test that could not call the provider at all (e.g. its client could not be built:
    a missing API key), classified like a failed call."""
    result = TestResult(planned.test.id, planned.test.title, TestOutcome.FAILED)
    _record_failure(result, error)
    return result


def _record_failure(result: TestResult, error: ProviderError) -> None:
    classification = error.classification if isinstance(error, CallFailed) else classify(error)
    result.detail = error.message
    result.error_category = classification.category
    result.error_severity = classification.severity
    result.error_code = error.code
    result.http_status = error.status
    result.error_message = error.message


def _sum_tokens(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None
