"""Suite assertions against collected answers: each type passes and fails where a suite's
author expects, and its detail says what was seen."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelcert.certify.suite_assertions import ASSERTION_TYPES, evaluate
from modelcert.certify.suite_judge import GRADE_SCHEMA, JUDGE_SYSTEM, read_grade
from modelcert.certify.verdicts import ChatResponse
from modelcert.providers.base import ChatRequest, Message, ProviderError


def answer(text: str = "", **kwargs: Any) -> ChatResponse:
    values: dict[str, Any] = {
        "text": text,
        "chunks": 1 if text else 0,
        "tool_calls": (),
        "input_tokens": 7,
        "output_tokens": 12,
        "stop_reason": "end_turn",
        "latency_ms": 850.0,
        "ttft_ms": 120.0,
    }
    values.update(kwargs)
    return ChatResponse(**values)


async def check(assertion: dict[str, Any], response: ChatResponse) -> dict[str, Any]:
    return await evaluate(assertion, response, None)


class Judge:
    """A judge deployment that answers with canned text and remembers what it was asked."""

    def __init__(self, text: str, *, input_tokens: int | None = 90, output_tokens: int | None = 20):
        self.text = text
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.asked: list[tuple[str, ChatRequest]] = []

    async def __call__(self, ref: str, request: ChatRequest) -> ChatResponse:
        self.asked.append((ref, request))
        return answer(self.text, input_tokens=self.input_tokens, output_tokens=self.output_tokens)


JUDGE = {"type": "llm-judge", "judge": "openai-prod/gpt-4o-mini", "rubric": "Says 30 days."}
ASKED = ChatRequest(
    messages=(
        Message("user", "Hello"),
        Message("assistant", "Hi! How can I help?"),
        Message("user", "How long do I have for a refund?"),
    ),
    system="You are Acme's assistant.",
)


def test_every_type_of_the_spec() -> None:
    assert set(ASSERTION_TYPES) == {
        "contains",
        "icontains",
        "not-contains",
        "equals",
        "regex",
        "starts-with",
        "is-json",
        "json-schema",
        "tool-call",
        "max-latency-ms",
        "max-ttft-ms",
        "max-output-tokens",
        "min-output-tokens",
        "any-of",
        "all-of",
        "llm-judge",
    }


# --- text ----------------------------------------------------------------------------


async def test_contains_is_case_sensitive() -> None:
    outcome = await check({"type": "contains", "value": "30 days"}, answer("Within 30 days."))
    assert outcome == {"type": "contains", "passed": True, "detail": "found '30 days'"}
    outcome = await check({"type": "contains", "value": "30 Days"}, answer("Within 30 days."))
    assert outcome["passed"] is False
    assert outcome["detail"] == "'30 Days' not found in answer 'Within 30 days.'"


async def test_details_truncate_long_answers_to_80_characters() -> None:
    long = "x" * 500
    outcome = await check({"type": "contains", "value": "y"}, answer(long))
    quoted = outcome["detail"].split("in answer ", 1)[1]
    assert quoted == repr("x" * 79 + "…")
    assert len(outcome["detail"]) < 120


async def test_an_empty_answer_is_said_to_be_empty() -> None:
    outcome = await check({"type": "contains", "value": "30"}, answer("  \n"))
    assert outcome["detail"] == "'30' not found: empty answer"
    outcome = await check({"type": "starts-with", "value": "Yes"}, answer(""))
    assert outcome == {
        "type": "starts-with",
        "passed": False,
        "detail": "does not start with 'Yes': empty answer",
    }


async def test_icontains_ignores_case() -> None:
    assert (await check({"type": "icontains", "value": "REFUND"}, answer("refunds")))["passed"]
    outcome = await check({"type": "icontains", "value": "refund"}, answer("No."))
    assert outcome["passed"] is False
    assert outcome["detail"] == "'refund' not found (ignoring case) in answer 'No.'"


async def test_not_contains() -> None:
    outcome = await check({"type": "not-contains", "value": "I cannot"}, answer("Sure."))
    assert outcome == {"type": "not-contains", "passed": True, "detail": "'I cannot' absent"}
    outcome = await check({"type": "not-contains", "value": "I cannot"}, answer("I cannot help."))
    assert outcome["passed"] is False
    assert outcome["detail"] == "'I cannot' found in answer 'I cannot help.'"
    assert (await check({"type": "not-contains", "value": "x"}, answer("")))["passed"]


async def test_equals_strips_surrounding_whitespace_only() -> None:
    assert (await check({"type": "equals", "value": "OK"}, answer("  OK\n")))["passed"]
    outcome = await check({"type": "equals", "value": "OK"}, answer("OK."))
    assert outcome["passed"] is False
    assert outcome["detail"] == "answer 'OK.' is not 'OK'"
    assert not (await check({"type": "equals", "value": "OK"}, answer("ok")))["passed"]
    assert (await check({"type": "equals", "value": ""}, answer(" ")))["passed"]


async def test_regex_searches_with_flags() -> None:
    outcome = await check({"type": "regex", "value": r"\b30\b", "flags": ""}, answer("in 30 days"))
    assert outcome == {"type": "regex", "passed": True, "detail": r"/\b30\b/ matched '30'"}
    assert not (await check({"type": "regex", "value": "^days", "flags": ""}, answer("30\ndays")))[
        "passed"
    ]
    assert (await check({"type": "regex", "value": "^DAYS", "flags": "im"}, answer("30\ndays")))[
        "passed"
    ]
    assert (await check({"type": "regex", "value": "a.b", "flags": "s"}, answer("a\nb")))["passed"]
    outcome = await check({"type": "regex", "value": r"\d+"}, answer("thirty"))
    assert outcome["detail"] == r"/\d+/ did not match in answer 'thirty'"


async def test_starts_with_after_leading_whitespace() -> None:
    assert (await check({"type": "starts-with", "value": "Yes"}, answer("\n  Yes, you can.")))[
        "passed"
    ]
    outcome = await check({"type": "starts-with", "value": "Yes"}, answer("Well, yes."))
    assert outcome["detail"] == "does not start with 'Yes' in answer 'Well, yes.'"


# --- JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ['{"a": 1}', "  [1, 2]\n", '```json\n{"a": 1}\n```', '```\n"text"\n```', "null"],
)
async def test_is_json_accepts_json_and_a_fence(text: str) -> None:
    assert (await check({"type": "is-json"}, answer(text)))["passed"]


async def test_is_json_says_why_not() -> None:
    outcome = await check({"type": "is-json"}, answer('Here it is: {"a": 1}'))
    assert outcome["passed"] is False
    assert outcome["detail"].startswith("not JSON (Expecting value at line 1 column 1): 'Here")
    outcome = await check({"type": "is-json"}, answer(""))
    assert outcome["detail"] == "empty answer: ''"
    assert not (await check({"type": "is-json"}, answer('{"a": 1')))["passed"]


async def test_json_schema_parses_and_validates() -> None:
    schema = {"type": "object", "required": ["name"], "properties": {"age": {"type": "integer"}}}
    assertion = {"type": "json-schema", "value": schema}
    outcome = await check(assertion, answer('```json\n{"name": "Ada", "age": 36}\n```'))
    assert outcome == {"type": "json-schema", "passed": True, "detail": "JSON matching the schema"}
    outcome = await check(assertion, answer('{"age": 36}'))
    assert outcome["detail"] == "JSON does not match the schema: 'name' is a required property"
    outcome = await check(assertion, answer('{"name": "Ada", "age": "old"}'))
    assert outcome["detail"] == (
        "JSON does not match the schema: 'old' is not of type 'integer' (at ['age'])"
    )
    outcome = await check(assertion, answer("Ada, 36"))
    assert outcome["passed"] is False
    assert outcome["detail"].startswith("not JSON")


async def test_json_schema_with_an_unresolvable_ref_fails_cleanly() -> None:
    assertion = {"type": "json-schema", "value": {"$ref": "https://example.invalid/s.json"}}
    outcome = await check(assertion, answer("{}"))
    assert outcome["passed"] is False
    assert outcome["detail"].startswith("JSON does not match the schema: the schema could not")


# --- tool calls ----------------------------------------------------------------------

ORDER_ARGS = {"type": "object", "required": ["order_id"]}


async def test_tool_call_by_name_with_arguments() -> None:
    calls = (("lookup_order", '{"order_id": "42"}'),)
    assertion = {"type": "tool-call", "name": "lookup_order", "arguments": ORDER_ARGS}
    outcome = await check(assertion, answer(tool_calls=calls))
    assert outcome == {
        "type": "tool-call",
        "passed": True,
        "detail": 'lookup_order({"order_id": "42"})',
    }
    no_schema = {"type": "tool-call", "name": "lookup_order", "arguments": None}
    assert (await check(no_schema, answer(tool_calls=(("lookup_order", "{}"),))))["passed"]


async def test_tool_call_with_the_wrong_name() -> None:
    assertion = {"type": "tool-call", "name": "lookup_order", "arguments": None}
    outcome = await check(assertion, answer(tool_calls=(("get_weather", "{}"),)))
    assert outcome["detail"] == "no call to lookup_order (calls: get_weather)"
    outcome = await check(assertion, answer("I would look it up."))
    assert outcome["detail"] == "no call to lookup_order (no calls; answer 'I would look it up.')"


async def test_tool_call_with_invalid_arguments() -> None:
    assertion = {"type": "tool-call", "name": "lookup_order", "arguments": ORDER_ARGS}
    outcome = await check(assertion, answer(tool_calls=(("lookup_order", '{"order_id": '),)))
    assert outcome["passed"] is False
    assert outcome["detail"].startswith("lookup_order called, but its arguments are not JSON (")
    outcome = await check(assertion, answer(tool_calls=(("lookup_order", '{"id": 42}'),)))
    assert outcome["detail"] == (
        "lookup_order called, but its arguments do not match the schema: "
        "'order_id' is a required property"
    )


async def test_any_call_to_the_tool_with_valid_arguments_passes() -> None:
    calls = (("lookup_order", "{}"), ("lookup_order", '{"order_id": "7"}'))
    assertion = {"type": "tool-call", "name": "lookup_order", "arguments": ORDER_ARGS}
    assert (await check(assertion, answer(tool_calls=calls)))["passed"]


# --- timings and usage ---------------------------------------------------------------


async def test_latency_and_time_to_first_token() -> None:
    fast = answer("hi", latency_ms=850.0, ttft_ms=120.0)
    outcome = await check({"type": "max-latency-ms", "value": 1000.0}, fast)
    assert outcome == {
        "type": "max-latency-ms",
        "passed": True,
        "detail": "latency 850 ms ≤ 1000 ms",
    }
    outcome = await check({"type": "max-latency-ms", "value": 500.0}, fast)
    assert outcome["passed"] is False
    assert outcome["detail"] == "latency 850 ms > 500 ms"
    assert (await check({"type": "max-ttft-ms", "value": 120.0}, fast))["passed"]
    outcome = await check({"type": "max-ttft-ms", "value": 100.0}, fast)
    assert outcome["detail"] == "time to first token 120 ms > 100 ms"
    outcome = await check({"type": "max-ttft-ms", "value": 100.0}, answer("", ttft_ms=None))
    assert outcome == {
        "type": "max-ttft-ms",
        "passed": False,
        "detail": "no first token (empty answer)",
    }


async def test_output_token_bounds() -> None:
    reported = answer("hi", output_tokens=12)
    assert (await check({"type": "max-output-tokens", "value": 12}, reported))["passed"]
    outcome = await check({"type": "max-output-tokens", "value": 10}, reported)
    assert outcome["detail"] == "12 output tokens > 10"
    assert (await check({"type": "min-output-tokens", "value": 5}, reported))["passed"]
    outcome = await check({"type": "min-output-tokens", "value": 20}, reported)
    assert outcome == {
        "type": "min-output-tokens",
        "passed": False,
        "detail": "12 output tokens < 20",
    }


@pytest.mark.parametrize("kind", ["max-output-tokens", "min-output-tokens"])
async def test_token_bounds_fail_without_usage(kind: str) -> None:
    outcome = await check({"type": kind, "value": 100}, answer("hi", output_tokens=None))
    assert outcome == {
        "type": kind,
        "passed": False,
        "detail": "the provider reported no token usage",
    }


# --- combinators ---------------------------------------------------------------------


async def test_any_of_and_all_of_record_every_child() -> None:
    any_of = {
        "type": "any-of",
        "assert": [{"type": "contains", "value": "thirty"}, {"type": "contains", "value": "30"}],
    }
    outcome = await check(any_of, answer("30 days"))
    assert outcome["passed"] is True
    assert outcome["detail"] == "contains passed: found '30'"
    assert [child["passed"] for child in outcome["children"]] == [False, True]
    outcome = await check(any_of, answer("a month"))
    assert outcome["passed"] is False
    assert outcome["detail"] == (
        "none of 2 passed: 'thirty' not found in answer 'a month'; "
        "'30' not found in answer 'a month'"
    )
    all_of = {"type": "all-of", "assert": any_of["assert"]}
    outcome = await check(all_of, answer("30 days"))
    assert outcome["passed"] is False
    assert outcome["detail"] == "1 of 2 failed: 'thirty' not found in answer '30 days'"
    outcome = await check(all_of, answer("thirty (30) days"))
    assert outcome == {
        "type": "all-of",
        "passed": True,
        "detail": "all 2 passed",
        "children": [
            {"type": "contains", "passed": True, "detail": "found 'thirty'"},
            {"type": "contains", "passed": True, "detail": "found '30'"},
        ],
    }


async def test_any_of_nested_in_all_of() -> None:
    nested = {
        "type": "all-of",
        "description": "both",
        "assert": [
            {"type": "starts-with", "value": "Yes"},
            {
                "type": "any-of",
                "assert": [
                    {"type": "icontains", "value": "thirty"},
                    {"type": "regex", "value": r"\b30\b", "flags": ""},
                ],
            },
        ],
    }
    outcome = await check(nested, answer("Yes: 30 days."))
    assert outcome["passed"] is True
    assert outcome["description"] == "both"
    inner = outcome["children"][1]
    assert inner["type"] == "any-of"
    assert [child["passed"] for child in inner["children"]] == [False, True]
    outcome = await check(nested, answer("Yes: a month."))
    assert outcome["passed"] is False
    assert outcome["detail"].startswith("1 of 2 failed: none of 2 passed: 'thirty' not found")


async def test_a_description_is_kept() -> None:
    assertion = {"type": "contains", "value": "30", "description": "names the window"}
    outcome = await check(assertion, answer("30"))
    assert outcome["description"] == "names the window"


# --- llm-judge -----------------------------------------------------------------------


async def test_llm_judge_builds_the_grading_request() -> None:
    judge = Judge('{"pass": true, "score": 0.9, "reason": "States 30 days."}')
    response = answer("You have 30 days.", tool_calls=(("lookup_order", '{"order_id": "1"}'),))
    outcome = await evaluate(JUDGE, response, judge, request=ASKED)
    ((ref, request),) = judge.asked
    assert ref == "openai-prod/gpt-4o-mini"
    assert request.system == JUDGE_SYSTEM
    assert request.temperature == 0.0
    assert request.stream is False
    assert request.max_tokens == 300
    assert request.json_schema == GRADE_SCHEMA
    (message,) = request.messages
    assert message.role == "user"
    assert "How long do I have for a refund?" in message.content
    assert "Hello" not in message.content  # the last user turn only
    assert "You have 30 days." in message.content
    assert '[tool call] lookup_order({"order_id": "1"})' in message.content
    assert "Says 30 days." in message.content
    assert outcome == {
        "type": "llm-judge",
        "passed": True,
        "detail": "openai-prod/gpt-4o-mini scored 0.90 ≥ 0.5: States 30 days.",
        "judge": "openai-prod/gpt-4o-mini",
        "score": 0.9,
        "reasoning": "States 30 days.",
        "input_tokens": 90,
        "output_tokens": 20,
    }
    json.dumps(outcome)


async def test_llm_judge_reads_fenced_and_embedded_json() -> None:
    fenced = Judge('```json\n{"pass": true, "score": 1, "reason": "ok"}\n```')
    assert (await evaluate(JUDGE, answer("30 days"), fenced, request=ASKED))["score"] == 1.0
    chatty = Judge('Here is my grade: {"pass": false, "score": 0.2, "reason": "no {window}"}.')
    outcome = await evaluate(JUDGE, answer("a month"), chatty, request=ASKED)
    assert outcome["passed"] is False
    assert outcome["score"] == 0.2
    assert outcome["reasoning"] == "no {window}"
    inner = Judge('Sure.\n```json\n{"score": 0.75, "reason": "mostly"}\n```\nDone.')
    outcome = await evaluate(JUDGE, answer("30 days"), inner, request=ASKED)
    assert (outcome["passed"], outcome["score"]) == (True, 0.75)


async def test_llm_judge_score_below_the_threshold_fails_whatever_pass_says() -> None:
    judge = Judge('{"pass": true, "score": 0.6, "reason": "close"}')
    strict = {**JUDGE, "threshold": 0.8}
    outcome = await evaluate(strict, answer("about a month"), judge, request=ASKED)
    assert outcome["passed"] is False
    assert outcome["detail"] == "openai-prod/gpt-4o-mini scored 0.60 < 0.8: close"
    assert outcome["score"] == 0.6


async def test_llm_judge_without_a_score_uses_pass() -> None:
    outcome = await evaluate(JUDGE, answer("x"), Judge('{"pass": false, "reason": "wrong"}'))
    assert outcome["passed"] is False
    assert outcome["score"] is None
    assert outcome["detail"] == "openai-prod/gpt-4o-mini judged it a fail: wrong"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("PASS", 'no JSON object with "pass" or "score" in it'),
        ("", "empty answer"),
        ('{"verdict": "good"}', 'no JSON object with "pass" or "score" in it'),
        ('{"pass": "yes"}', "\"pass\" is 'yes', not true or false"),
        ('{"score": 8}', '"score" 8 is outside 0..1'),
        ('{"score": "0.8"}', "\"score\" is '0.8', not a number"),
        ('{"pass": true, "score": 0.9', 'no JSON object with "pass" or "score" in it'),
    ],
)
async def test_an_unreadable_judge_answer_fails_the_assertion(text: str, why: str) -> None:
    outcome = await evaluate(JUDGE, answer("30 days"), Judge(text), request=ASKED)
    assert outcome["passed"] is False
    assert outcome["detail"] == f"judge's answer could not be read: {why} (answer {text!r})"
    assert outcome["score"] is None
    assert (outcome["input_tokens"], outcome["output_tokens"]) == (90, 20)  # still spent


async def test_llm_judge_without_a_judge_fails_clearly() -> None:
    outcome = await evaluate(JUDGE, answer("30 days"), None, request=ASKED)
    assert outcome["passed"] is False
    assert outcome["detail"] == "no judge to grade with (openai-prod/gpt-4o-mini not given)"
    assert outcome["judge"] == "openai-prod/gpt-4o-mini"
    assert outcome["input_tokens"] is None


async def test_llm_judge_does_not_grade_an_empty_answer() -> None:
    judge = Judge('{"pass": true, "score": 1, "reason": "?"}')
    outcome = await evaluate(JUDGE, answer("  "), judge, request=ASKED)
    assert outcome["passed"] is False
    assert outcome["detail"] == "empty answer: nothing to grade"
    assert judge.asked == []


async def test_llm_judge_reasoning_is_kept_to_1000_characters() -> None:
    reason = "r" * 5000
    judge = Judge(json.dumps({"pass": True, "score": 0.7, "reason": reason}), output_tokens=None)
    outcome = await evaluate(JUDGE, answer("30"), judge, request=ASKED)
    assert outcome["reasoning"] == "r" * 1000
    assert outcome["output_tokens"] is None
    assert len(outcome["detail"]) < 150


async def test_a_failing_judge_call_propagates() -> None:
    async def unavailable(ref: str, request: ChatRequest) -> ChatResponse:
        raise ProviderError("throttled", status=429)

    nested = {"type": "any-of", "assert": [{"type": "contains", "value": "x"}, JUDGE]}
    with pytest.raises(ProviderError, match="throttled"):
        await evaluate(nested, answer("30 days"), unavailable, request=ASKED)


async def test_the_question_is_not_recorded_without_the_request() -> None:
    judge = Judge('{"pass": true, "score": 1, "reason": "fine"}')
    await evaluate(JUDGE, answer("30 days"), judge)
    assert "(not recorded)" in judge.asked[0][1].messages[0].content


def test_read_grade_takes_the_first_object_with_a_grade() -> None:
    grade = read_grade('Context: {"note": 1} then {"score": 0.5, "pass": true, "reason": 3}')
    assert (grade.passed, grade.score, grade.reason) == (True, 0.5, "")
