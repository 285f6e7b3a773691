"""A suite's test as a `BatteryTest`: the runner runs it like a built-in one (timeout,
retries, classification), and only its `run` differs: the request comes from the
suite's definition and the verdict from its assertions.

`response_format: {type: json}` asks for a JSON object: the request carries the most
permissive schema every provider's JSON mode takes, `{"type": "object"}` (a request has
no schema-less JSON mode; OpenAI's and Gemini's want an object at the top).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelcert.certify.battery import DEFAULT_TIMEOUT_S, BatteryTest, CallContext
from modelcert.certify.suite_assertions import evaluate
from modelcert.certify.verdicts import Verdict
from modelcert.domain import Capabilities, ErrorCategory
from modelcert.providers.base import ChatRequest, Message, ToolSpec

ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


def suite_test(suite_ref: str, test: dict[str, Any]) -> BatteryTest:
    """The BatteryTest `"<suite>/<test id>"` of one normalised test of suite `name@version`."""
    suite_name = suite_ref.split("@", 1)[0]
    params = test.get("params", {})
    requires = tuple(test.get("requires", ()))

    async def run(ctx: CallContext) -> Verdict:
        request = suite_request(test, ctx.streaming)
        response = await ctx.call(request)
        outcomes = tuple(
            [await evaluate(a, response, ctx.judge, request=request) for a in test["assert"]]
        )
        failed = [outcome for outcome in outcomes if not outcome["passed"]]
        if failed:
            return Verdict(False, failed[0]["detail"], ErrorCategory.QUALITY_ISSUE, outcomes)
        count = len(outcomes)
        return Verdict(True, f"{count} assertion{'s' if count != 1 else ''} passed", None, outcomes)

    feature = None
    if params.get("tools"):
        feature = "tools"
    elif params.get("json") or params.get("json_schema") is not None:
        feature = "json_output"
    timeout = test.get("timeout_s")
    extra: dict[str, Any] = {}
    if requires:
        extra = {"requires": _declares(requires), "requirement": ", ".join(requires)}
    return BatteryTest(
        id=f"{suite_name}/{test['id']}",
        title=test.get("title") or test["id"],
        run=run,
        timeout_s=float(timeout) if timeout is not None else DEFAULT_TIMEOUT_S,
        feature=feature,
        **extra,
    )


def suite_request(test: dict[str, Any], streaming: bool) -> ChatRequest:
    """The request a normalised test sends; `streaming` (the deployment's) unless it says."""
    params = test.get("params", {})
    json_schema = params.get("json_schema")
    if json_schema is None and params.get("json"):
        json_schema = ANY_JSON_OBJECT
    return ChatRequest(
        messages=tuple(Message(m["role"], m["content"]) for m in test["messages"]),
        system=test.get("system"),
        temperature=params.get("temperature"),
        top_p=params.get("top_p"),
        max_tokens=params.get("max_tokens"),
        stop=tuple(params.get("stop", ())),
        tools=tuple(
            ToolSpec(tool["name"], tool.get("description", ""), tool["parameters"])
            for tool in params.get("tools", ())
        ),
        json_schema=json_schema,
        stream=params.get("stream", streaming),
    )


def _declares(requires: tuple[str, ...]) -> Callable[[Capabilities], bool]:
    def declared(caps: Capabilities) -> bool:
        return all(getattr(caps, name, False) is True for name in requires)

    return declared
