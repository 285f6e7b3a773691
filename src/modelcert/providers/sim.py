"""SIMULATION: a seeded, deterministic stand-in for a model provider, for demos, tests
and benchmarks. Every result it produces is labelled as simulation (`simulated = True`).

A deployment picks a behaviour profile with `options["profile"]` (or the part of its
model id before ":"); `options` may also override `latency_ms`, `quota_rps`,
`quota_burst`, `available_regions`, `error_rate_429`, `error_rate_5xx`, `retry_after_s`,
and list the optional request features the simulated model rejects with a validation
error, as a real endpoint without them does: `unsupported` (any of `tools`,
`json_output`, `stop_sequences`, `sampling`).

The quota is a token bucket, as providers' quotas are: `quota_rps` calls a second on
average, up to `quota_burst` at once (default: one second's worth); beyond it, 429 with a
Retry-After saying when the next call may go. It is counted per (model id, region) in
this process by default (`quota_scope: "process"`). With `quota_scope: "host"` every
process on the machine draws on the same quota, as they would on a real provider's: the
bucket lives in a small file (in `quota_dir`, default the system temporary directory)
updated under an exclusive `flock`. `quota_key` lets several deployments share one quota
(an account-wide one); it defaults to the model id.

A testing aid, off by default: with `MODELCERT_SIM_CALL_LOG=<directory>` in its
environment, each process appends a line of JSON for every simulated call to
`<directory>/sim-calls-<pid>.jsonl`, so that a test can count the calls a fleet of worker
processes paid for and see when each ran. Two lines per call, one when it starts (so
that a call cut short by kill -9 is still counted) and one when it ends, with the same
`call` id: `{"event": "start", "call", "pid", "model", "region", "request" (the last user
message, cut at 60 characters), "digest" (of the whole request: equal requests, equal
digests), "stream", "planned_s" (the latency drawn), "t" (time.monotonic(), one clock
for every process on the machine), "wall" (time.time())}` and `{"event": "end", "call",
"pid", "model", "region", "outcome" ("ok", "error <status> <code>" or "interrupted":
cancelled or closed before its end), "t", "wall"}`. The file is opened in append mode
and each line is one write (atomic for lines this small). The variable is read when the
provider is built; a deployment option cannot turn it on (catalog rows do not choose
where workers write).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import itertools
import json
import math
import os
import random
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from modelcert.providers.base import (
    ChatEvent,
    ChatRequest,
    ProviderError,
    Stop,
    Target,
    TextDelta,
    ToolCall,
    Usage,
)
from modelcert.providers.sim_answers import answer, split_tokens


@dataclass(frozen=True)
class LatencyDistribution:
    """Total answer latency in ms: `fixed` (low), `uniform` (low..high) or `lognormal`
    (median low, spread sigma), clipped at `high` when given."""

    kind: str = "uniform"
    low: float = 40.0
    high: float = 120.0
    sigma: float = 0.5

    def sample_ms(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.low
        if self.kind == "lognormal":
            value = self.low * math.exp(rng.gauss(0, self.sigma))
            return min(value, self.high) if self.high > 0 else value
        return rng.uniform(self.low, self.high)

    @staticmethod
    def parse(value: Any) -> LatencyDistribution:
        """From options: a number (fixed), [low, high] (uniform) or a mapping of fields."""
        if isinstance(value, int | float):
            return LatencyDistribution("fixed", float(value), float(value))
        if isinstance(value, list | tuple) and len(value) == 2:
            return LatencyDistribution("uniform", float(value[0]), float(value[1]))
        if isinstance(value, Mapping):
            return LatencyDistribution(**value)
        raise ValueError(f"latency_ms: expected a number, [low, high] or a mapping, got {value!r}")


@dataclass(frozen=True)
class SimError:
    status: int
    code: str
    message: str


@dataclass(frozen=True)
class SimProfile:
    name: str
    latency: LatencyDistribution = field(default_factory=LatencyDistribution)
    ttft_fraction: float = 0.3
    error_rate_429: float = 0.0
    error_rate_5xx: float = 0.0
    retry_after_s: float = 1.0
    quota_rps: float | None = None  # per (quota key, region); beyond it, 429
    quota_burst: float | None = None  # calls that may go at once; default one second's worth
    quota_scope: str = "process"  # "process": counted in this process; "host": all of them
    quota_key: str | None = None  # deployments naming the same key share a quota
    quota_dir: str | None = None  # where "host" quotas keep their files
    available_regions: tuple[str, ...] | None = None  # None: every region
    unsupported: frozenset[str] = frozenset()  # request features rejected with a 400
    always_error: SimError | None = None
    empty: bool = False
    break_stream: bool = False
    hang: bool = False


PROFILES: dict[str, SimProfile] = {
    p.name: p
    for p in (
        SimProfile("healthy-fast"),
        SimProfile("healthy-slow", latency=LatencyDistribution("uniform", 2200, 3200)),
        SimProfile("flaky", error_rate_429=0.2, error_rate_5xx=0.1, retry_after_s=0.5),
        SimProfile("quota-limited", latency=LatencyDistribution("uniform", 20, 60), quota_rps=2.0),
        SimProfile("unavailable-in-region", available_regions=("us-east-1", "us-west-2")),
        SimProfile(
            "access-denied",
            always_error=SimError(
                403,
                "AccessDeniedException",
                "You don't have access to the model with the specified model ID. (simulated)",
            ),
        ),
        SimProfile(
            "bad-credentials",
            always_error=SimError(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid. (simulated)",
            ),
        ),
        SimProfile("empty-answers", empty=True),
        SimProfile("broken-stream", break_stream=True),
        SimProfile("hangs", hang=True),
    )
}


def profile_for(target: Target) -> SimProfile:
    """The profile a deployment asked for, with its option overrides applied."""
    options = target.options
    name = str(options.get("profile") or target.model_id.split(":")[0])
    if name not in PROFILES:
        raise ProviderError(
            f"unknown simulation profile {name!r} (known: {', '.join(sorted(PROFILES))})",
            status=400,
            code="ValidationException",
            provider="sim",
        )
    profile = PROFILES[name]
    changes: dict[str, Any] = {}
    if "latency_ms" in options:
        changes["latency"] = LatencyDistribution.parse(options["latency_ms"])
    for key in ("quota_rps", "quota_burst", "error_rate_429", "error_rate_5xx", "retry_after_s"):
        if key in options:
            changes[key] = float(options[key])
    if "available_regions" in options:
        changes["available_regions"] = tuple(options["available_regions"])
    if "unsupported" in options:
        unknown = set(options["unsupported"]) - set(SIM_FEATURES)
        if unknown:
            raise ProviderError(
                f"unsupported: unknown feature {sorted(unknown)[0]!r} "
                f"(known: {', '.join(SIM_FEATURES)})",
                status=400,
                code="ValidationException",
                provider="sim",
            )
        changes["unsupported"] = frozenset(options["unsupported"])
    for key in ("quota_key", "quota_dir"):
        if key in options:
            changes[key] = str(options[key])
    if "quota_scope" in options:
        scope = str(options["quota_scope"])
        if scope not in QUOTA_SCOPES:
            raise ProviderError(
                f"quota_scope: expected one of {', '.join(QUOTA_SCOPES)}, got {scope!r}",
                status=400,
                code="ValidationException",
                provider="sim",
            )
        changes["quota_scope"] = scope
    return replace(profile, **changes) if changes else profile


QUOTA_SCOPES = ("process", "host")
SIM_FEATURES = ("tools", "json_output", "stop_sequences", "sampling")


def features_used(request: ChatRequest) -> list[str]:
    """The optional features a request uses beyond a basic chat call."""
    used = []
    if request.tools:
        used.append("tools")
    if request.json_schema is not None:
        used.append("json_output")
    if request.stop:
        used.append("stop_sequences")
    if request.temperature is not None or request.top_p is not None:
        used.append("sampling")
    return used


def take_token(
    state: tuple[float, float] | None, now: float, rps: float, burst: float
) -> tuple[float, tuple[float, float]]:
    """A token bucket: `burst` calls may go at once, refilled at `rps` a second.

    `state` is (tokens, when counted), None for a full bucket. Returns (0, new state) when
    a call may start now (and takes its token), else (seconds until one may, state)."""
    tokens, counted = state if state is not None else (burst, now)
    tokens = min(burst, tokens + max(0.0, now - counted) * rps)
    if tokens >= 1.0:
        return 0.0, (tokens - 1.0, now)
    return (1.0 - tokens) / rps, (tokens, now)


class _Quota:
    """A token bucket per (quota key, region), counted in this process."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait_needed(self, key: tuple[str, str], rps: float, burst: float, now: float) -> float:
        """0 if a call may start now (and books it), else seconds until it may."""
        with self._lock:
            wait, self._buckets[key] = take_token(self._buckets.get(key), now, rps, burst)
            return wait


class _HostQuota:
    """The same token bucket, shared by every process on this machine.

    The bucket (tokens, when counted) lives in one small file per (key, region), read and
    rewritten under an exclusive `flock`. The clock is the wall clock (the only one every
    process agrees on); a count dated in the future can only come from a clock step, and
    is then treated as a full bucket."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    @staticmethod
    def path(directory: str | None, key: tuple[str, str]) -> str:
        folder = directory or os.path.join(tempfile.gettempdir(), "modelcert-sim-quota")
        os.makedirs(folder, exist_ok=True)
        digest = hashlib.sha256(f"{key[0]}|{key[1]}".encode()).hexdigest()[:32]
        return os.path.join(folder, f"{digest}.quota")

    def wait_needed(
        self, key: tuple[str, str], rps: float, burst: float, directory: str | None
    ) -> float:
        """0 if a call may start now (and books it), else seconds until it may."""
        fd = os.open(self.path(directory, key), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor is closed
            now = self._clock()
            state: tuple[float, float] | None
            try:
                tokens, counted = (float(x) for x in os.pread(fd, 64, 0).split())
                state = (tokens, counted) if counted <= now else None
            except ValueError:  # a new (empty) or unreadable file: a full bucket
                state = None
            wait, (tokens, counted) = take_token(state, now, rps, burst)
            os.pwrite(fd, f"{tokens!r} {counted!r}".encode().ljust(64), 0)
            return wait
        finally:
            os.close(fd)


CALL_LOG_ENV = "MODELCERT_SIM_CALL_LOG"


def request_digest(request: ChatRequest) -> str:
    """A short digest of what a request asks (not of how long the caller will wait)."""
    fields = {
        "messages": [(m.role, m.content) for m in request.messages],
        "system": request.system,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "stop": list(request.stop),
        "tools": [t.name for t in request.tools],
        "json_schema": request.json_schema,
        "stream": request.stream,
    }
    encoded = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


class _LoggedCall:
    """One call in the call log: its start is written at once, its end once."""

    def __init__(self, log: _CallLog, call: str, target: Target) -> None:
        self._log = log
        self.call = call
        self._target = target
        self._ended = False

    def end(self, outcome: str) -> None:
        if self._ended:
            return
        self._ended = True
        self._log.write(
            {
                "event": "end",
                "call": self.call,
                "pid": os.getpid(),
                "model": self._target.model_id,
                "region": self._target.region,
                "outcome": outcome,
                "t": time.monotonic(),
                "wall": time.time(),
            }
        )


class _CallLog:
    """`MODELCERT_SIM_CALL_LOG`: JSON lines, one file per process (module docstring)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._fd: int | None = None
        self._pid = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def write(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None or self._pid != os.getpid():  # first write, or a fork
                os.makedirs(self.directory, exist_ok=True)
                self._pid = os.getpid()
                path = os.path.join(self.directory, f"sim-calls-{self._pid}.jsonl")
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, line)  # one write per line: lines never interleave

    def start(self, target: Target, request: ChatRequest, planned_s: float) -> _LoggedCall:
        call = f"{os.getpid()}-{next(self._ids)}"
        prompt = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        self.write(
            {
                "event": "start",
                "call": call,
                "pid": os.getpid(),
                "model": target.model_id,
                "region": target.region,
                "request": prompt[:60],
                "digest": request_digest(request),
                "stream": request.stream,
                "planned_s": round(planned_s, 4),
                "t": time.monotonic(),
                "wall": time.time(),
            }
        )
        return _LoggedCall(self, call, target)


class SimProvider:
    """SIMULATION of a model provider (see module docstring)."""

    kind = "sim"
    simulated = True

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self._calls: dict[tuple[str, str], int] = {}
        self._quota = _Quota()
        self._host_quota = _HostQuota()
        call_log = os.environ.get(CALL_LOG_ENV)
        self._call_log = _CallLog(call_log) if call_log else None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SimProvider:
        return cls(seed=int(config.get("seed", 0)))

    def _rng(self, target: Target) -> random.Random:
        key = (target.model_id, target.region)
        index = self._calls.get(key, 0)
        self._calls[key] = index + 1
        digest = hashlib.sha256(f"{self.seed}|{key[0]}|{key[1]}|{index}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    async def chat(self, target: Target, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        profile = profile_for(target)
        rng = self._rng(target)
        latency_s = profile.latency.sample_ms(rng) / 1000
        logged = self._call_log.start(target, request, latency_s) if self._call_log else None
        outcome = "interrupted"  # cancelled or closed before its end
        try:
            self._raise_configured_errors(profile, target, request, rng)
            if profile.hang:
                await asyncio.Event().wait()  # never answers; the caller's timeout cancels it
            reply = answer(request, rng.randrange(1_000))
            text = "" if profile.empty else reply.text
            tool_calls = () if profile.empty else reply.tool_calls
            output_tokens = 0 if profile.empty else reply.output_tokens

            await asyncio.sleep(latency_s * profile.ttft_fraction)
            if request.stream:
                tokens = split_tokens(text)
                chunks = ["".join(tokens[i : i + 3]) for i in range(0, len(tokens), 3)]
                pause = latency_s * (1 - profile.ttft_fraction) / max(len(chunks), 1)
                for index, chunk in enumerate(chunks):
                    if profile.break_stream and index >= max(1, len(chunks) // 2):
                        raise ProviderError(
                            "stream interrupted mid-answer: connection reset by peer (simulated)",
                            code="StreamInterrupted",
                            provider="sim",
                        )
                    yield TextDelta(chunk)
                    await asyncio.sleep(pause)
                if profile.break_stream and len(chunks) <= 1:
                    raise ProviderError(
                        "stream interrupted before the end of the answer (simulated)",
                        code="StreamInterrupted",
                        provider="sim",
                    )
            else:
                await asyncio.sleep(latency_s * (1 - profile.ttft_fraction))
                if text:
                    yield TextDelta(text)
            for index, (name, arguments) in enumerate(tool_calls):
                yield ToolCall(f"sim-call-{index}", name, arguments)
            yield Usage(reply.input_tokens, output_tokens)
            if logged is not None:
                logged.end("ok")  # the answer is complete before its last event
            yield Stop(reply.stop_reason)
        except ProviderError as exc:
            outcome = f"error {exc.status} {exc.code}"
            raise
        finally:
            if logged is not None:
                logged.end(outcome)

    def _raise_configured_errors(
        self, profile: SimProfile, target: Target, request: ChatRequest, rng: random.Random
    ) -> None:
        if profile.always_error:
            err = profile.always_error
            raise ProviderError(err.message, status=err.status, code=err.code, provider="sim")
        rejected = [f for f in features_used(request) if f in profile.unsupported]
        if rejected:
            raise ProviderError(
                f"Malformed input request: {rejected[0]} is not supported by model "
                f"{target.model_id}. (simulated)",
                status=400,
                code="ValidationException",
                provider="sim",
            )
        if profile.available_regions is not None and target.region not in profile.available_regions:
            raise ProviderError(
                f"Model {target.model_id} is not available in region {target.region}. (simulated)",
                status=404,
                code="ResourceNotFoundException",
                provider="sim",
            )
        if profile.quota_rps:
            key = (profile.quota_key or target.model_id, target.region)
            rps = profile.quota_rps
            burst = max(1.0, profile.quota_burst or rps)
            if profile.quota_scope == "host":
                wait = self._host_quota.wait_needed(key, rps, burst, profile.quota_dir)
            else:
                wait = self._quota.wait_needed(key, rps, burst, time.monotonic())
            if wait > 0:
                raise ProviderError(
                    "Too many requests, please wait before trying again. (simulated quota "
                    f"{profile.quota_rps:g} req/s in {target.region})",
                    status=429,
                    code="ThrottlingException",
                    retry_after=round(wait, 3),
                    provider="sim",
                )
        roll = rng.random()
        if roll < profile.error_rate_429:
            raise ProviderError(
                "Rate exceeded. (simulated)",
                status=429,
                code="ThrottlingException",
                retry_after=profile.retry_after_s,
                provider="sim",
            )
        if roll < profile.error_rate_429 + profile.error_rate_5xx:
            raise ProviderError(
                "The service is temporarily unable to handle the request. (simulated)",
                status=503,
                code="ServiceUnavailableException",
                provider="sim",
            )

    async def aclose(self) -> None:
        return None
