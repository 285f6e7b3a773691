"""A suite assertion decided against one answer: an outcome dict that says whether it
passed and what was seen (`{"type", "passed", "detail", "description"?, "children"?}`).
Pure, except `llm-judge`, which asks its judge (`suites.judge`).

Every assertion of a test is evaluated, even after one failed, and so are all children
of `any-of` / `all-of`: the report shows each, and a test's result does not depend on
the order its assertions were written in. (An `llm-judge` therefore always costs its
judge call.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable

from modelcert.certify.suite_judge import JudgeFn, grade
from modelcert.certify.verdicts import JSON_FENCE, ChatResponse
from modelcert.providers.base import ChatRequest
from modelcert.suites.definition import regex_flags

__all__ = ["ASSERTION_TYPES", "JudgeFn", "evaluate"]

SHOWN = 80

Check = Callable[[dict[str, Any], ChatResponse], tuple[bool, str]]


def _shown(text: str) -> str:
    """An answer as a detail quotes it: at most 80 characters."""
    return repr(text if len(text) <= SHOWN else text[: SHOWN - 1] + "…")


def _absent(what: str, response: ChatResponse) -> str:
    if not response.text.strip():
        return f"{what}: empty answer"
    return f"{what} in answer {_shown(response.text)}"


def _contains(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    value = assertion["value"]
    if value in response.text:
        return True, f"found {value!r}"
    return False, _absent(f"{value!r} not found", response)


def _icontains(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    value = assertion["value"]
    if value.lower() in response.text.lower():
        return True, f"found {value!r} (ignoring case)"
    return False, _absent(f"{value!r} not found (ignoring case)", response)


def _not_contains(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    value = assertion["value"]
    if value in response.text:
        return False, f"{value!r} found in answer {_shown(response.text)}"
    return True, f"{value!r} absent"


def _equals(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    value = assertion["value"].strip()
    if response.text.strip() == value:
        return True, f"answer is {value!r}"
    return False, f"answer {_shown(response.text.strip())} is not {value!r}"


def _regex(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    pattern = assertion["value"]
    match = re.search(pattern, response.text, regex_flags(assertion.get("flags", "")))
    if match:
        return True, f"/{pattern}/ matched {_shown(match.group(0))}"
    return False, _absent(f"/{pattern}/ did not match", response)


def _starts_with(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    value = assertion["value"]
    if response.text.lstrip().startswith(value):
        return True, f"starts with {value!r}"
    return False, _absent(f"does not start with {value!r}", response)


def _parsed(text: str) -> Any:
    """The answer as JSON (a ```json fence around it tolerated); ValueError if it is not."""
    text = text.strip()
    if not text:
        raise ValueError("empty answer")
    fenced = JSON_FENCE.match(text)
    try:
        return json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc


def _mismatch(document: Any, schema: dict[str, Any]) -> str | None:
    """Why `document` does not match `schema`, or None when it does."""
    try:
        error = jsonschema.exceptions.best_match(Draft202012Validator(schema).iter_errors(document))
    except Unresolvable as exc:
        return f"the schema could not be applied: {exc}"
    if error is None:
        return None
    where = "".join(f"[{part!r}]" for part in error.absolute_path)
    return f"{error.message}" + (f" (at {where})" if where else "")


def _is_json(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    try:
        document = _parsed(response.text)
    except ValueError as exc:
        return False, f"{exc}: {_shown(response.text.strip())}"
    return True, f"valid JSON ({type(document).__name__})"


def _json_schema(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    try:
        document = _parsed(response.text)
    except ValueError as exc:
        return False, f"{exc}: {_shown(response.text.strip())}"
    why = _mismatch(document, assertion["value"])
    if why is not None:
        return False, f"JSON does not match the schema: {why}"
    return True, "JSON matching the schema"


def _tool_call(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    name = assertion["name"]
    calls = [arguments for called, arguments in response.tool_calls if called == name]
    if not calls:
        names = [called for called, _ in response.tool_calls]
        seen = (
            f"calls: {', '.join(names)}" if names else f"no calls; answer {_shown(response.text)}"
        )
        return False, f"no call to {name} ({seen})"
    problems = []
    for arguments in calls:  # any call to the tool with valid arguments will do
        try:
            document = json.loads(arguments)
        except json.JSONDecodeError as exc:
            problems.append(f"arguments are not JSON ({exc.msg}): {_shown(arguments)}")
            continue
        why = _mismatch(document, assertion["arguments"]) if assertion.get("arguments") else None
        if why is None:
            return True, f"{name}({_shown(arguments)[1:-1]})"
        problems.append(f"arguments do not match the schema: {why}")
    return False, f"{name} called, but its {problems[0]}"


def _latency(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    limit = assertion["value"]
    sign = "≤" if response.latency_ms <= limit else ">"
    return response.latency_ms <= limit, f"latency {response.latency_ms:.0f} ms {sign} {limit:g} ms"


def _ttft(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    limit = assertion["value"]
    if response.ttft_ms is None:
        return False, "no first token (empty answer)"
    sign = "≤" if response.ttft_ms <= limit else ">"
    detail = f"time to first token {response.ttft_ms:.0f} ms {sign} {limit:g} ms"
    return response.ttft_ms <= limit, detail


def _max_tokens(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    limit = assertion["value"]
    if response.output_tokens is None:
        return False, "the provider reported no token usage"
    sign = "≤" if response.output_tokens <= limit else ">"
    return response.output_tokens <= limit, f"{response.output_tokens} output tokens {sign} {limit}"


def _min_tokens(assertion: dict[str, Any], response: ChatResponse) -> tuple[bool, str]:
    limit = assertion["value"]
    if response.output_tokens is None:
        return False, "the provider reported no token usage"
    sign = "≥" if response.output_tokens >= limit else "<"
    return response.output_tokens >= limit, f"{response.output_tokens} output tokens {sign} {limit}"


CHECKS: dict[str, Check] = {
    "contains": _contains,
    "icontains": _icontains,
    "not-contains": _not_contains,
    "equals": _equals,
    "regex": _regex,
    "starts-with": _starts_with,
    "is-json": _is_json,
    "json-schema": _json_schema,
    "tool-call": _tool_call,
    "max-latency-ms": _latency,
    "max-ttft-ms": _ttft,
    "max-output-tokens": _max_tokens,
    "min-output-tokens": _min_tokens,
}
ASSERTION_TYPES: tuple[str, ...] = (*CHECKS, "any-of", "all-of", "llm-judge")


async def evaluate(
    assertion: dict[str, Any],
    response: ChatResponse,
    judge: JudgeFn | None,
    *,
    request: ChatRequest | None = None,
) -> dict[str, Any]:
    """The outcome of one normalised assertion against `response`.

    `request` (what was asked) is shown to an llm-judge; `judge` grades it and whatever
    it raises (a ProviderError, the runner's judge failure) propagates to the runner."""
    kind = assertion["type"]
    extra: dict[str, Any] = {}
    if kind in ("any-of", "all-of"):
        children = [
            await evaluate(child, response, judge, request=request) for child in assertion["assert"]
        ]
        passed, detail = _combined(kind, children)
        extra["children"] = children
    elif kind == "llm-judge":
        extra = await grade(assertion, response, judge, request)
        passed, detail = extra.pop("passed"), extra.pop("detail")
    elif kind in CHECKS:
        passed, detail = CHECKS[kind](assertion, response)
    else:
        passed, detail = False, f"unknown assertion type {kind!r}"
    outcome: dict[str, Any] = {"type": kind, "passed": passed, "detail": detail}
    if assertion.get("description"):
        outcome["description"] = assertion["description"]
    return {**outcome, **extra}


def _combined(kind: str, children: list[dict[str, Any]]) -> tuple[bool, str]:
    passed = [child for child in children if child["passed"]]
    failed = [child for child in children if not child["passed"]]
    total = len(children)
    if kind == "all-of":
        if not failed:
            return True, f"all {total} passed"
        return False, f"{len(failed)} of {total} failed: {failed[0]['detail']}"
    if passed:
        return True, f"{passed[0]['type']} passed: {passed[0]['detail']}"
    return False, f"none of {total} passed: " + "; ".join(child["detail"] for child in failed)
