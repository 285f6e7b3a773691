"""The simulated quota: per process by default; with `quota_scope: "host"`, one quota that
every process on the machine shares (as a real provider's quota is shared by all the
workers calling it)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest

from modelcert.providers.base import ChatRequest, Message, ProviderError, Target
from modelcert.providers.sim import SimProvider, take_token

RPS = 20.0
BURST = 5  # calls the bucket lets go at once
WINDOW_S = 1.5
REQUEST = ChatRequest(messages=(Message("user", "Hi"),), stream=False)


def _target(quota_dir: Path, scope: str, model_id: str = "healthy-fast:q") -> Target:
    options: dict[str, Any] = {
        "latency_ms": 0,
        "quota_rps": RPS,
        "quota_burst": BURST,
        "quota_scope": scope,
        "quota_dir": str(quota_dir),
    }
    return Target(model_id, "us-east-1", options=options)


async def _hammer(target: Target, window_s: float) -> tuple[list[float], int]:
    """Call as fast as the quota lets for `window_s`: (when each answered call began, 429s)."""
    provider = SimProvider()
    answered: list[float] = []
    refused = 0
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        began = time.time()
        try:
            async for _ in provider.chat(target, REQUEST):
                pass
        except ProviderError as error:
            assert error.status == 429 and error.retry_after is not None
            refused += 1
            await asyncio.sleep(min(error.retry_after, max(0.0, deadline - time.monotonic())))
        else:
            answered.append(began)
    return answered, refused


def _child(quota_dir: str, scope: str, ready: Any, go: Event, results: Any) -> None:
    ready.put(True)
    go.wait(30)
    results.put(asyncio.run(_hammer(_target(Path(quota_dir), scope), WINDOW_S)))


def _two_processes(quota_dir: Path, scope: str) -> list[tuple[list[float], int]]:
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    children = [
        context.Process(target=_child, args=(str(quota_dir), scope, ready, go, results))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=30)  # both imported and at the start line
    go.set()
    outcomes = [results.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=10)
        assert child.exitcode == 0
    return outcomes


def _max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))


@pytest.mark.timeout(90)
def test_host_scope_is_one_quota_for_every_process(tmp_path: Path) -> None:
    outcomes = _two_processes(tmp_path, "host")
    answered = [t for times, _ in outcomes for t in times]
    counts = [(len(times), refused) for times, refused in outcomes]
    # A token bucket: in any one second, at most RPS calls plus the burst (+1, boundary).
    assert _max_in_any_second(answered) <= RPS + BURST + 1, counts
    span = max(answered) - min(answered)
    assert len(answered) <= RPS * span + BURST + 1, (counts, span)
    assert len(answered) >= RPS * WINDOW_S * 0.6, counts  # the quota is used, not starved
    assert all(refused > 0 for _, refused in counts), counts  # each felt the other's calls


@pytest.mark.timeout(90)
def test_process_scope_stays_the_default_each_process_its_own_quota(tmp_path: Path) -> None:
    outcomes = _two_processes(tmp_path, "process")
    answered = [t for times, _ in outcomes for t in times]
    assert _max_in_any_second(answered) > RPS * 1.5  # two processes, two quotas
    assert not list(tmp_path.iterdir())  # no shared file involved


async def _drain(provider: SimProvider, target: Target) -> None:
    for _ in range(BURST):
        async for _ in provider.chat(target, REQUEST):
            pass


async def test_host_scope_in_one_process_keeps_the_token_bucket(tmp_path: Path) -> None:
    provider = SimProvider()
    target = _target(tmp_path, "host")
    await _drain(provider, target)  # the burst goes at once...
    with pytest.raises(ProviderError) as refused:
        async for _ in provider.chat(target, REQUEST):
            pass
    assert refused.value.status == 429  # ...then calls wait for the refill
    assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 1 / RPS
    other_region = Target(target.model_id, "eu-west-1", options=target.options)
    async for _ in provider.chat(other_region, REQUEST):  # another (model, region): own quota
        pass


async def test_a_shared_quota_key_spans_deployments(tmp_path: Path) -> None:
    provider = SimProvider()
    options = {**_target(tmp_path, "host").options, "quota_key": "account-1"}
    first = Target("healthy-fast:a", "us-east-1", options=options)
    second = Target("healthy-fast:b", "us-east-1", options=options)
    await _drain(provider, first)
    with pytest.raises(ProviderError):
        async for _ in provider.chat(second, REQUEST):
            pass


async def test_an_unknown_scope_is_a_configuration_error(tmp_path: Path) -> None:
    target = Target("healthy-fast", "us-east-1", options={"quota_rps": 1, "quota_scope": "x"})
    with pytest.raises(ProviderError) as error:
        async for _ in SimProvider().chat(target, REQUEST):
            pass
    assert error.value.code == "ValidationException"


def test_token_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    wait, state = take_token(None, 100.0, rps=2.0, burst=2.0)  # a new bucket is full
    assert wait == 0 and state == (1.0, 100.0)
    wait, state = take_token(state, 100.0, rps=2.0, burst=2.0)
    assert wait == 0 and state == (0.0, 100.0)
    wait, state = take_token(state, 100.1, rps=2.0, burst=2.0)
    assert wait == pytest.approx(0.4) and state[0] == pytest.approx(0.2)  # 0.8 token short
    wait, state = take_token(state, 200.0, rps=2.0, burst=2.0)  # long idle: never above burst
    assert wait == 0 and state == (1.0, 200.0)
