"""The simulator's call log (MODELCERT_SIM_CALL_LOG): off by default; when on, a start and
an end line for every call, errors and interrupted calls included."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from modelcert.providers.base import ChatRequest, Message, ProviderError, Target
from modelcert.providers.sim import CALL_LOG_ENV, SimProvider, request_digest

REQUEST = ChatRequest(messages=(Message("user", "Hi"),), stream=True)


async def _call(provider: SimProvider, target: Target) -> None:
    async for _ in provider.chat(target, REQUEST):
        pass


def _lines(directory: Path) -> list[dict[str, Any]]:
    [path] = directory.iterdir()
    assert path.name == f"sim-calls-{os.getpid()}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CALL_LOG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    target = Target("healthy-fast:a", "us-east-1", options={"latency_ms": 0})
    asyncio.run(_call(SimProvider(), target))
    assert list(tmp_path.iterdir()) == []


async def _three_calls(provider: SimProvider) -> None:
    await _call(provider, Target("healthy-fast:a", "eu-west-1", options={"latency_ms": 20}))
    with pytest.raises(ProviderError):
        await _call(provider, Target("access-denied:b", "us-east-1"))
    # Closed before its end (as a caller's timeout closes a stream).
    stream = provider.chat(
        Target("healthy-fast:c", "us-east-1", options={"latency_ms": 20}), REQUEST
    )
    await anext(stream)
    await stream.aclose()


def test_every_call_has_a_start_and_an_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CALL_LOG_ENV, str(tmp_path / "calls"))
    asyncio.run(_three_calls(SimProvider()))
    lines = _lines(tmp_path / "calls")
    assert [(line["event"], line["model"]) for line in lines] == [
        ("start", "healthy-fast:a"),
        ("end", "healthy-fast:a"),
        ("start", "access-denied:b"),
        ("end", "access-denied:b"),
        ("start", "healthy-fast:c"),
        ("end", "healthy-fast:c"),
    ]
    starts, ends = lines[0::2], lines[1::2]
    assert [s["call"] for s in starts] == [e["call"] for e in ends]
    assert len({s["call"] for s in starts}) == 3
    assert [e["outcome"] for e in ends] == ["ok", "error 403 AccessDeniedException", "interrupted"]
    first = starts[0]
    assert (first["pid"], first["region"], first["request"]) == (os.getpid(), "eu-west-1", "Hi")
    assert first["digest"] == request_digest(REQUEST) and first["stream"] is True
    assert 0.0195 <= first["planned_s"] <= 0.0205
    assert ends[0]["t"] - first["t"] >= 0.019  # the simulated latency, on the monotonic clock
    assert abs(first["wall"] - ends[0]["wall"]) < 5


def test_the_digest_ignores_the_callers_timeout() -> None:
    assert request_digest(REQUEST) == request_digest(
        ChatRequest(messages=REQUEST.messages, stream=True, timeout_s=3.0)
    )
    assert request_digest(REQUEST) != request_digest(
        ChatRequest(messages=(Message("user", "Hello"),), stream=True)
    )
