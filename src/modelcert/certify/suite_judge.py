"""The `llm-judge` assertion: another catalog deployment grades the answer against the
suite's rubric. The grading request is fixed here (temperature 0, a JSON answer), so
that a judge's verdict depends on the rubric and the answer only; its answer is read
strictly (a JSON object with `pass` and/or `score`) but tolerates what models wrap it
in: a ```json fence, a sentence before it.

A judge call that fails raises out of `grade` (the runner classifies it: the judge
failing says nothing about the model under test); an answer that cannot be read is a
failed assertion, and says why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from modelcert.certify.verdicts import JSON_FENCE, ChatResponse
from modelcert.providers.base import ChatRequest, Message

JudgeFn = Callable[[str, ChatRequest], Awaitable[ChatResponse]]

JUDGE_MAX_TOKENS = 300
REASONING_MAX = 1000
GRADE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pass": {"type": "boolean"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
    "required": ["pass", "score", "reason"],
}
JUDGE_SYSTEM = (
    "You grade an AI model's answer. Decide whether the ANSWER meets the RUBRIC; judge "
    "it against the rubric only. The QUESTION is what the model was asked. Reply with "
    "only a JSON object and no other text: "
    '{"pass": true or false, "score": a number from 0 to 1, "reason": "one or two sentences"}'
)
_INNER_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Grade:
    passed: bool | None  # the judge's `pass`, when it gave one
    score: float | None  # 0..1, when it gave one
    reason: str


def grading_request(rubric: str, answer: ChatResponse, asked: ChatRequest | None) -> ChatRequest:
    """What the judge is sent: the last user turn, the answer (and its tool calls), the rubric."""
    question = (
        next((m.content for m in reversed(asked.messages) if m.role == "user"), "(not recorded)")
        if asked is not None
        else "(not recorded)"
    )
    calls = "".join(f"\n[tool call] {name}({arguments})" for name, arguments in answer.tool_calls)
    text = (
        f"QUESTION:\n<question>\n{question}\n</question>\n\n"
        f"ANSWER:\n<answer>\n{answer.text}{calls}\n</answer>\n\n"
        f"RUBRIC:\n<rubric>\n{rubric}\n</rubric>"
    )
    return ChatRequest(
        messages=(Message("user", text),),
        system=JUDGE_SYSTEM,
        temperature=0.0,
        max_tokens=JUDGE_MAX_TOKENS,
        json_schema=GRADE_SCHEMA,
        stream=False,
    )


def read_grade(text: str) -> Grade:
    """The judge's answer as a Grade; ValueError says why it cannot be read."""
    text = text.strip()
    if not text:
        raise ValueError("empty answer")
    verdict = _grade_object(text)
    if verdict is None:
        raise ValueError('no JSON object with "pass" or "score" in it')
    passed = verdict.get("pass")
    score = verdict.get("score")
    if passed is not None and not isinstance(passed, bool):
        raise ValueError(f'"pass" is {passed!r}, not true or false')
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ValueError(f'"score" is {score!r}, not a number')
        if not 0 <= score <= 1:
            raise ValueError(f'"score" {score} is outside 0..1')
    reason = verdict.get("reason")
    return Grade(
        passed,
        float(score) if score is not None else None,
        reason if isinstance(reason, str) else "",
    )


def _grade_object(text: str) -> dict[str, Any] | None:
    """The first JSON object with `pass` or `score`: the whole text, a fenced block, or
    one embedded after some words."""
    fenced = JSON_FENCE.match(text) or _INNER_FENCE.search(text)
    candidates = [fenced.group(1)] if fenced else []
    candidates.append(text)
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start in [i for i, char in enumerate(candidate) if char == "{"]:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and ("pass" in value or "score" in value):
                return value
    return None


async def grade(
    assertion: dict[str, Any],
    answer: ChatResponse,
    judge: JudgeFn | None,
    asked: ChatRequest | None,
) -> dict[str, Any]:
    """An llm-judge outcome: passed, detail, and what the judge said and used."""
    ref = assertion["judge"]
    threshold = float(assertion.get("threshold", 0.5))
    outcome: dict[str, Any] = {
        "judge": ref,
        "score": None,
        "reasoning": "",
        "input_tokens": None,
        "output_tokens": None,
    }
    if judge is None:
        return {**outcome, "passed": False, "detail": f"no judge to grade with ({ref} not given)"}
    if not answer.text.strip() and not answer.tool_calls:
        return {**outcome, "passed": False, "detail": "empty answer: nothing to grade"}
    response = await judge(ref, grading_request(assertion["rubric"], answer, asked))
    outcome["input_tokens"] = response.input_tokens
    outcome["output_tokens"] = response.output_tokens
    try:
        verdict = read_grade(response.text)
    except ValueError as exc:
        shown = response.text.strip()[:80]
        outcome["reasoning"] = response.text[:REASONING_MAX]
        detail = f"judge's answer could not be read: {exc} (answer {shown!r})"
        return {**outcome, "passed": False, "detail": detail}
    outcome["score"] = verdict.score
    outcome["reasoning"] = verdict.reason[:REASONING_MAX]
    reason = verdict.reason if len(verdict.reason) <= 80 else verdict.reason[:79] + "…"
    if verdict.score is not None:
        passed = verdict.score >= threshold
        sign = "≥" if passed else "<"
        detail = f"{ref} scored {verdict.score:.2f} {sign} {threshold:g}: {reason}"
    else:
        passed = bool(verdict.passed)
        detail = f"{ref} judged it {'a pass' if passed else 'a fail'}: {reason}"
    return {**outcome, "passed": passed, "detail": detail}
