"""What a collected answer is and when it passes: the battery's verdicts. Pure."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from modelcert.domain import ErrorCategory
from modelcert.providers.base import ToolSpec

TTFT_LIMIT_MS = 10_000.0


@dataclass(frozen=True)
class ChatResponse:
    """One provider answer, collected from its event stream."""

    text: str
    chunks: int  # text deltas received
    tool_calls: tuple[tuple[str, str], ...]  # (name, raw JSON arguments)
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None
    latency_ms: float
    ttft_ms: float | None  # first text or tool-call event; None for an empty answer


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str
    category: ErrorCategory | None = None  # for failures; QUALITY_ISSUE by default
    # A suite test's assertions, each as decided (`suites.assertions`; JSON-able dicts).
    assertions: tuple[dict[str, Any], ...] = ()

    @staticmethod
    def ok(detail: str = "ok") -> Verdict:
        return Verdict(True, detail)

    @staticmethod
    def fail(detail: str, category: ErrorCategory = ErrorCategory.QUALITY_ISSUE) -> Verdict:
        return Verdict(False, detail, category)


def has_text(response: ChatResponse) -> Verdict:
    if response.text.strip():
        return Verdict.ok(f"{len(response.text)} characters")
    return Verdict.fail("empty response")


# --- verdicts (pure) -------------------------------------------------------------------


def verdict_streaming(response: ChatResponse) -> Verdict:
    if response.chunks >= 1 and response.text.strip():
        return Verdict.ok(f"{response.chunks} chunks")
    return Verdict.fail("no chunks with text")


def verdict_ttft(response: ChatResponse, limit_ms: float = TTFT_LIMIT_MS) -> Verdict:
    if response.ttft_ms is None:
        return Verdict.fail("no first token: empty response")
    if response.ttft_ms > limit_ms:
        return Verdict.fail(f"time to first token {response.ttft_ms:.0f} ms > {limit_ms:.0f} ms")
    return Verdict.ok(f"time to first token {response.ttft_ms:.0f} ms")


def verdict_usage(response: ChatResponse) -> Verdict:
    if response.input_tokens and response.output_tokens:
        return Verdict.ok(f"{response.input_tokens} in / {response.output_tokens} out")
    return Verdict.fail(
        f"token usage not reported (input={response.input_tokens}, output={response.output_tokens})"
    )


def verdict_contains(response: ChatResponse, word: str, what: str) -> Verdict:
    if word.lower() in response.text.lower():
        return Verdict.ok(f"{what}: found {word!r}")
    if not response.text.strip():
        return Verdict.fail("empty response")
    return Verdict.fail(f"{what}: {word!r} not remembered in answer {response.text[:80]!r}")


WEATHER_TOOL = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
)

PERSON_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def verdict_tool_call(response: ChatResponse, tool: ToolSpec = WEATHER_TOOL) -> Verdict:
    calls = [args for name, args in response.tool_calls if name == tool.name]
    if not calls:
        names = [name for name, _ in response.tool_calls]
        return Verdict.fail(f"no call to {tool.name} (calls: {names or 'none'})")
    try:
        arguments = json.loads(calls[0])
        jsonschema.validate(arguments, dict(tool.parameters))
    except json.JSONDecodeError as exc:
        return Verdict.fail(f"tool arguments are invalid JSON: {exc}")
    except jsonschema.ValidationError as exc:
        return Verdict.fail(f"tool arguments do not match the schema: {exc.message}")
    return Verdict.ok(f"{tool.name}({calls[0]})")


# A ```json fence around an answer, which models add to JSON they were asked for.
JSON_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def verdict_json(response: ChatResponse, schema: Mapping[str, Any] = PERSON_SCHEMA) -> Verdict:
    text = response.text.strip()
    if not text:
        return Verdict.fail("empty response")
    fenced = JSON_FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        document = json.loads(text)
        jsonschema.validate(document, dict(schema))
    except json.JSONDecodeError as exc:
        return Verdict.fail(f"invalid JSON: {exc}")
    except jsonschema.ValidationError as exc:
        return Verdict.fail(f"JSON does not match the schema: {exc.message}")
    return Verdict.ok("valid JSON matching the schema")


def verdict_stop_sequence(response: ChatResponse) -> Verdict:
    # Asked to count 1..10 with stop sequence "5": nothing after 4 may appear.
    if not response.text.strip():
        return Verdict.fail("empty response")
    if re.search(r"\b([6-9]|10)\b", response.text):
        return Verdict.fail(f"stop sequence ignored: {response.text[:80]!r}")
    return Verdict.ok(f"stopped before '5' ({response.stop_reason})")


def verdict_stays_short(response: ChatResponse, max_tokens: int) -> Verdict:
    if not response.text.strip():
        return Verdict.fail("empty response")
    if response.output_tokens is not None and response.output_tokens > max_tokens:
        return Verdict.fail(f"{response.output_tokens} output tokens > max tokens {max_tokens}")
    if re.search(r"\b100\b", response.text):
        return Verdict.fail("counted to 100 despite the max tokens limit")
    return Verdict.ok(f"stopped early ({response.stop_reason}, {response.output_tokens} tokens)")


def verdict_ends_at_max_tokens(response: ChatResponse, max_tokens: int) -> Verdict:
    """Stays within `max_tokens` and says so: the stop reason is max_tokens, not a natural
    end (an API that reports it lets a caller tell a cut answer from a complete one)."""
    short = verdict_stays_short(response, max_tokens)
    if not short.passed:
        return short
    if response.stop_reason != "max_tokens":
        return Verdict.fail(f"cut at max tokens but reported as {response.stop_reason!r}")
    return Verdict.ok(f"ended at max tokens ({response.output_tokens} tokens)")


def verdict_min_length(response: ChatResponse, min_chars: int) -> Verdict:
    length = len(response.text.strip())
    if length > min_chars:
        return Verdict.ok(f"{length} characters")
    return Verdict.fail(f"answer too short ({length} ≤ {min_chars} characters)")
