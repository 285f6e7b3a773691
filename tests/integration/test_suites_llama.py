"""A suite with every assertion type against a real model server: llama.cpp serving
SmolLM2-135M (OpenAI-compatible), with llama.cpp itself as the `llm-judge`.

A 135M model is not expected to be clever. What is asserted is what holds whatever it
answers: what the transport guarantees (a token cap is kept, a JSON schema is enforced
by llama.cpp's grammar, latency and TTFT are measured), what the assertion logic decides
(a random marker is never in the answer; any-of passes when one child does, all-of fails
when one does), that a judge's grading is stored with its tokens, and that every cost is
the price times the token counts the server itself reports."""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.certify.engine import CertificationEngine, CertificationRequest
from modelcert.domain import Capabilities, TestOutcome
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import CertificationRun, TestResultRow
from modelcert.store.runs import RunStore
from modelcert.store.suites import store_suite
from modelcert.suites import parse_suite
from tests.support.llama_server import LlamaServer

pytestmark = [pytest.mark.llama, pytest.mark.timeout(900)]

PRICE_IN, PRICE_OUT, FEE = 2.0, 8.0, 0.00005  # USD per 1M tokens, per answered call
MARKER = f"zq{uuid.uuid4().hex[:10]}"  # in no answer a model can give unprompted
CAPPED_PROMPT = "Write a long story about a lighthouse keeper and the sea."

SUITE = f"""
name: real-server
defaults: {{temperature: 0, timeout_s: 120}}
tests:
  - id: capped
    prompt: {CAPPED_PROMPT}
    max_tokens: 8
    stream: false
    assert:
      - {{type: max-output-tokens, value: 8}}
      - {{type: min-output-tokens, value: 1}}
      - {{type: max-latency-ms, value: 600000}}
      - {{type: not-contains, value: {MARKER}}}
      - {{type: regex, value: "\\\\S"}}
  - id: marker-absent
    prompt: Say hello.
    max_tokens: 16
    assert:
      - {{type: contains, value: {MARKER}}}
  - id: never-exact
    prompt: Say hello.
    max_tokens: 16
    assert:
      - type: any-of
        assert:
          - {{type: equals, value: {MARKER}}}
          - {{type: starts-with, value: {MARKER}}}
          - {{type: icontains, value: {MARKER.upper()}}}
          - {{type: max-ttft-ms, value: 600000}}
      - type: all-of
        description: one failing child fails all-of
        assert:
          - {{type: max-ttft-ms, value: 600000}}
          - {{type: contains, value: {MARKER}}}
  - id: grammar-json
    prompt: Describe a person named Ada, 36 years old, as JSON.
    max_tokens: 60
    response_format:
      type: json_schema
      schema:
        type: object
        properties: {{name: {{type: string}}, age: {{type: integer}}}}
        required: [name, age]
    assert:
      - {{type: is-json}}
      - type: json-schema
        value: {{type: object, required: [name, age], properties: {{age: {{type: integer}}}}}}
  - id: tool-or-text
    prompt: What is the weather in Paris? Use the get_weather tool.
    max_tokens: 60
    tools:
      - name: get_weather
        description: Current weather for a city.
        parameters: {{type: object, properties: {{city: {{type: string}}}}, required: [city]}}
    assert:
      - type: any-of
        assert:
          - {{type: tool-call, name: get_weather, arguments: {{type: object, required: [city]}}}}
          - {{type: max-latency-ms, value: 600000}}
  - id: judged
    prompt: Say hello.
    max_tokens: 16
    assert:
      - type: any-of
        assert:
          - {{type: llm-judge, judge: llama/judge, rubric: The answer is a greeting.}}
          - {{type: max-latency-ms, value: 600000}}
"""


def _catalog(factory: sessionmaker[Session], llama: LlamaServer) -> None:
    with transaction(factory) as session:
        repo.add_provider(
            session,
            slug="llama",
            kind="openai",
            base_url=llama.base_url,
            config={"api_key_env": "LLAMA_SUITE_KEY", "timeout": 120},
        )
        for model_id in ("smollm2", "judge"):
            repo.add_deployment(
                session,
                provider_slug="llama",
                provider_model_id=model_id,
                capabilities=Capabilities(tools=True, json_output=True),
                options={"max_retries": 1},
                cost_input_per_mtok=PRICE_IN,
                cost_output_per_mtok=PRICE_OUT,
                cost_per_request=FEE,
            )
        store_suite(session, parse_suite(SUITE, "real-server.yaml"), loaded_by="test")


def _usage_reported(llama: LlamaServer, body: dict[str, Any]) -> dict[str, int]:
    """The token counts llama.cpp reports for a request, asked directly."""
    request = urllib.request.Request(
        f"{llama.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {llama.api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as answer:
        return dict(json.load(answer)["usage"])


def _all(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for outcome in outcomes:
        found += [outcome, *_all(outcome.get("children") or [])]
    return found


async def test_every_assertion_type_against_the_real_server(
    factory: sessionmaker[Session],
    settings: Settings,
    llama: LlamaServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLAMA_SUITE_KEY", llama.api_key)
    _catalog(factory, llama)
    engine = CertificationEngine(RunStore(factory), settings)
    try:
        outcome = await engine.certify(
            CertificationRequest("llama/smollm2", "global", suites=("real-server",))
        )
    finally:
        await engine.aclose()
    assert not outcome.simulated
    with factory() as session:
        rows = {
            row.test_id: row
            for row in session.scalars(
                select(TestResultRow).where(TestResultRow.run_id == outcome.run_id)
            )
        }
        run = session.get(CertificationRun, outcome.run_id)
        assert run is not None

    def test(name: str) -> TestResultRow:
        return rows[f"real-server/{name}"]

    assert {r.test_id: r.outcome for r in outcome.results} == {
        "real-server/capped": TestOutcome.PASSED,  # the server keeps the cap
        "real-server/marker-absent": TestOutcome.FAILED,  # the logic: no marker in it
        "real-server/never-exact": TestOutcome.FAILED,  # any-of passed, all-of did not
        "real-server/grammar-json": TestOutcome.PASSED,  # llama.cpp's grammar holds
        "real-server/tool-or-text": TestOutcome.PASSED,
        "real-server/judged": TestOutcome.PASSED,
    }
    assert test("marker-absent").error_category == "QUALITY_ISSUE"
    any_of, all_of = test("never-exact").assertions or []
    assert any_of["passed"] and [c["passed"] for c in any_of["children"]] == [
        False,
        False,
        False,
        True,
    ]
    assert not all_of["passed"] and all_of["description"] == "one failing child fails all-of"
    [tool_or_text] = test("tool-or-text").assertions or []
    tool_call = tool_or_text["children"][0]
    assert tool_call["type"] == "tool-call" and tool_call["detail"]
    [judged] = test("judged").assertions or []
    grade = judged["children"][0]
    assert grade["type"] == "llm-judge" and grade["judge"] == "llama/judge"
    assert grade["input_tokens"] and grade["output_tokens"] and grade["reasoning"]
    types = {o["type"] for row in rows.values() for o in _all(row.assertions or [])}
    assert len(types) == 16, sorted(types)

    # Cost: the price times what the server reports. Asked again directly, the capped
    # request (temperature 0, 8 tokens) reports the very counts the run stored.
    capped = test("capped")
    reported = _usage_reported(
        llama,
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": CAPPED_PROMPT}],
            "temperature": 0,
            "max_tokens": 8,
        },
    )
    assert (capped.input_tokens, capped.output_tokens) == (
        reported["prompt_tokens"],
        reported["completion_tokens"],
    )
    assert capped.output_tokens == 8
    for row in rows.values():
        assert row.input_tokens and row.output_tokens, row.test_id
        own = (row.input_tokens * PRICE_IN + row.output_tokens * PRICE_OUT) / 1e6 + FEE
        judge = sum(
            (o["input_tokens"] * PRICE_IN + o["output_tokens"] * PRICE_OUT) / 1e6 + FEE
            for o in _all(row.assertions or [])
            if o["type"] == "llm-judge" and o.get("input_tokens")
        )
        assert row.cost_usd == pytest.approx(own + judge, rel=1e-6), row.test_id
    assert run.cost_usd == pytest.approx(sum(r.cost_usd or 0 for r in rows.values()))
