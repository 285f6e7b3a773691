"""A suite's test as a BatteryTest: the request it sends, the verdict its assertions give,
what it requires. Run against a small CallContext that answers with canned responses
(the engine, sim provider and llama.cpp paths are integration tests)."""

from __future__ import annotations

from typing import Any

import pytest

from modelcert.certify.battery import DEFAULT_TIMEOUT_S, plan_battery
from modelcert.certify.suite_tests import ANY_JSON_OBJECT, suite_request, suite_test
from modelcert.certify.verdicts import ChatResponse
from modelcert.domain import Capabilities, ErrorCategory
from modelcert.providers.base import ChatRequest, Message, ProviderError, ToolSpec
from modelcert.suites import parse_suite


def answer(text: str = "", **kwargs: Any) -> ChatResponse:
    values: dict[str, Any] = {
        "text": text,
        "chunks": 1,
        "tool_calls": (),
        "input_tokens": 5,
        "output_tokens": 9,
        "stop_reason": "end_turn",
        "latency_ms": 300.0,
        "ttft_ms": 50.0,
    }
    values.update(kwargs)
    return ChatResponse(**values)


class CannedContext:
    """A CallContext whose model and judges answer with what the test gave them."""

    def __init__(
        self,
        response: ChatResponse,
        judge_text: str = "",
        *,
        streaming: bool = True,
    ) -> None:
        self.response = response
        self.judge_text = judge_text
        self.streaming = streaming
        self.availability_gap_s = 0.0
        self.calls: list[ChatRequest] = []
        self.judged: list[tuple[str, ChatRequest]] = []

    async def call(self, request: ChatRequest) -> ChatResponse:
        self.calls.append(request)
        return self.response

    async def sleep(self, seconds: float) -> None:
        return None

    async def judge(self, ref: str, request: ChatRequest) -> ChatResponse:
        self.judged.append((ref, request))
        if not self.judge_text:
            raise ProviderError("judge unavailable", status=503)
        return answer(self.judge_text, input_tokens=40, output_tokens=10)


SUITE = """\
name: support-bot
defaults: {temperature: 0, max_tokens: 200}
tests:
  - id: refund-policy
    title: States the refund window
    weight: 2
    requires: [tools, system_prompt]
    messages:
      - system: You are Acme's assistant. Refunds within 30 days.
      - user: Hi
      - assistant: Hello! How can I help?
      - user: How many days do I have for a refund?
    top_p: 0.9
    stop: ["\\n\\n"]
    timeout_s: 12
    tools:
      - name: lookup_order
        description: Look up an order
        parameters: {type: object, properties: {order_id: {type: string}}}
    assert:
      - {type: contains, value: "30 days"}
      - {type: max-output-tokens, value: 50}
  - id: json-answer
    prompt: Give me JSON.
    stream: false
    response_format: {type: json}
    assert: [{type: is-json}]
  - id: judged
    prompt: How long is the refund window?
    response_format: {type: json_schema, schema: {type: object, required: [days]}}
    assert:
      - type: llm-judge
        judge: judge-prov/grader
        rubric: Says 30 days.
        threshold: 0.7
"""


def suite_tests() -> tuple[str, list[dict[str, Any]]]:
    loaded = parse_suite(SUITE)
    return loaded.ref, loaded.definition["tests"]


def test_the_battery_test_of_a_suite_test() -> None:
    ref, (refund, as_json, judged) = suite_tests()
    test = suite_test(ref, refund)
    assert test.id == "support-bot/refund-policy"
    assert test.title == "States the refund window"
    assert test.timeout_s == 12.0
    assert test.feature == "tools"
    assert test.requirement == "system_prompt, tools"
    assert test.vendors == frozenset()
    untitled = suite_test(ref, as_json)
    assert untitled.title == "json-answer"
    assert untitled.timeout_s == DEFAULT_TIMEOUT_S
    assert untitled.feature == "json_output"
    assert suite_test(ref, judged).feature == "json_output"
    assert suite_test(ref, {**as_json, "params": {}}).feature is None


def test_requires_skips_on_undeclared_capabilities() -> None:
    ref, (refund, as_json, _) = suite_tests()
    test = suite_test(ref, refund)
    assert test.requires(Capabilities(tools=True, system_prompt=True))
    assert not test.requires(Capabilities(tools=True, system_prompt=False))
    assert not test.requires(Capabilities(tools=False))
    (planned,) = plan_battery("acme", Capabilities(tools=False), [test])
    assert planned.skip_reason == "capability not declared: system_prompt, tools"
    anything = suite_test(ref, as_json)
    assert anything.requires(Capabilities(streaming=False, system_prompt=False))
    assert anything.requirement == ""


def test_the_request_follows_the_definition() -> None:
    _, (refund, as_json, judged) = suite_tests()
    request = suite_request(refund, streaming=True)
    assert request == ChatRequest(
        messages=(
            Message("user", "Hi"),
            Message("assistant", "Hello! How can I help?"),
            Message("user", "How many days do I have for a refund?"),
        ),
        system="You are Acme's assistant. Refunds within 30 days.",
        temperature=0.0,
        top_p=0.9,
        max_tokens=200,
        stop=("\n\n",),
        tools=(
            ToolSpec(
                "lookup_order",
                "Look up an order",
                {"type": "object", "properties": {"order_id": {"type": "string"}}},
            ),
        ),
        json_schema=None,
        stream=True,
    )
    assert suite_request(refund, streaming=False).stream is False  # the deployment's
    plain = suite_request(as_json, streaming=True)
    assert plain.stream is False  # the test's own says so
    assert plain.json_schema == ANY_JSON_OBJECT == {"type": "object"}
    assert plain.system is None
    assert plain.messages == (Message("user", "Give me JSON."),)
    assert suite_request(judged, streaming=True).json_schema == {
        "type": "object",
        "required": ["days"],
    }


async def test_a_passing_run() -> None:
    ref, (refund, _, _) = suite_tests()
    ctx = CannedContext(answer("You have 30 days.", output_tokens=9))
    verdict = await suite_test(ref, refund).run(ctx)
    assert verdict.passed is True
    assert verdict.detail == "2 assertions passed"
    assert verdict.category is None
    assert verdict.assertions == (
        {"type": "contains", "passed": True, "detail": "found '30 days'"},
        {"type": "max-output-tokens", "passed": True, "detail": "9 output tokens ≤ 50"},
    )
    (request,) = ctx.calls
    assert request.system == "You are Acme's assistant. Refunds within 30 days."


async def test_a_failing_run_names_the_first_failed_assertion() -> None:
    ref, (refund, as_json, _) = suite_tests()
    ctx = CannedContext(answer("A month.", output_tokens=80))
    verdict = await suite_test(ref, refund).run(ctx)
    assert verdict.passed is False
    assert verdict.category == ErrorCategory.QUALITY_ISSUE
    assert verdict.detail == "'30 days' not found in answer 'A month.'"
    assert [outcome["passed"] for outcome in verdict.assertions] == [False, False]
    verdict = await suite_test(ref, as_json).run(CannedContext(answer('{"ok": true}')))
    assert (verdict.passed, verdict.detail) == (True, "1 assertion passed")


async def test_llm_judge_goes_through_the_context() -> None:
    ref, (_, _, judged) = suite_tests()
    ctx = CannedContext(
        answer('{"days": 30}'), '```json\n{"pass": true, "score": 0.65, "reason": "vague"}\n```'
    )
    verdict = await suite_test(ref, judged).run(ctx)
    ((judge_ref, request),) = ctx.judged
    assert judge_ref == "judge-prov/grader"
    assert "How long is the refund window?" in request.messages[0].content
    assert verdict.passed is False  # 0.65 < the test's threshold 0.7
    (outcome,) = verdict.assertions
    assert outcome["score"] == 0.65
    assert (outcome["input_tokens"], outcome["output_tokens"]) == (40, 10)
    assert verdict.detail == "judge-prov/grader scored 0.65 < 0.7: vague"


async def test_a_judge_failure_reaches_the_runner() -> None:
    ref, (_, _, judged) = suite_tests()
    ctx = CannedContext(answer("30 days"))  # its judge raises
    with pytest.raises(ProviderError, match="judge unavailable"):
        await suite_test(ref, judged).run(ctx)
