from __future__ import annotations

from modelcert.certify.battery import BATTERY, default_capabilities, plan_battery
from modelcert.certify.verdicts import (
    ChatResponse,
    verdict_ends_at_max_tokens,
    verdict_json,
    verdict_stays_short,
    verdict_stop_sequence,
    verdict_tool_call,
    verdict_ttft,
    verdict_usage,
)
from modelcert.domain import Capabilities


def response(text: str = "", **kwargs: object) -> ChatResponse:
    values: dict[str, object] = {
        "text": text,
        "chunks": 1 if text else 0,
        "tool_calls": (),
        "input_tokens": 3,
        "output_tokens": 5,
        "stop_reason": "end_turn",
        "latency_ms": 100.0,
        "ttft_ms": 20.0,
    }
    values.update(kwargs)
    return ChatResponse(**values)  # type: ignore[arg-type]


def ids(vendor: str, caps: Capabilities) -> dict[str, str | None]:
    return {p.test.id: p.skip_reason for p in plan_battery(vendor, caps)}


def test_the_old_battery_is_kept() -> None:
    assert {"basic-prompt", "streaming", "parameters", "error-handling", "availability"} <= {
        t.id for t in BATTERY
    }


def test_vendor_extras_only_for_their_vendor() -> None:
    amazon = ids("Amazon", Capabilities())
    anthropic = ids("anthropic", Capabilities())
    assert "amazon-haiku" in amazon and "amazon-haiku" not in anthropic
    assert "anthropic-sampling" in anthropic and "anthropic-sampling" not in amazon
    google = ids("Google", Capabilities())
    assert "google-max-tokens" in google and "google-max-tokens" not in amazon
    assert "anthropic-sampling" not in google and "amazon-haiku" not in google


def test_native_kinds_declare_what_their_apis_take() -> None:
    for kind in ("anthropic", "gemini"):
        caps = default_capabilities(kind)
        assert (caps.tools, caps.json_output, caps.stop_sequences, caps.system_prompt) == (
            True,
            True,
            True,
            True,
        )
        assert all(skip is None for skip in ids("Google", caps).values())
    # Kinds that front models of every kind assume nothing optional.
    assert default_capabilities("openai") == Capabilities()
    assert default_capabilities("bedrock") == Capabilities()


def test_max_tokens_must_be_reported_as_the_reason_it_ended() -> None:
    assert verdict_ends_at_max_tokens(response("1, 2, 3", stop_reason="max_tokens"), 50).passed
    natural = verdict_ends_at_max_tokens(response("1, 2, 3", stop_reason="end_turn"), 50)
    assert not natural.passed and "end_turn" in natural.detail
    assert not verdict_ends_at_max_tokens(response("1, 2, 3", output_tokens=80), 50).passed


def test_undeclared_capability_is_skipped_not_dropped() -> None:
    plan = ids("Meta", Capabilities(streaming=False, tools=False))
    assert plan["tool-calling"] == "capability not declared: tools"
    assert plan["streaming"] == "capability not declared: streaming"
    assert plan["basic-prompt"] is None
    assert ids("Meta", Capabilities(tools=True))["tool-calling"] is None


def test_tool_call_must_parse_and_match_the_schema() -> None:
    good = response(tool_calls=(("get_weather", '{"city": "Paris"}'),))
    assert verdict_tool_call(good).passed
    broken = response(tool_calls=(("get_weather", '{"city": '),))
    assert "invalid JSON" in verdict_tool_call(broken).detail
    wrong = response(tool_calls=(("get_weather", '{"town": "Paris"}'),))
    assert "schema" in verdict_tool_call(wrong).detail
    assert not verdict_tool_call(response("It is sunny")).passed


def test_json_output_accepts_fenced_json_and_checks_the_schema() -> None:
    assert verdict_json(response('```json\n{"name": "Ada", "age": 36}\n```')).passed
    assert not verdict_json(response('{"name": "Ada"}')).passed
    assert not verdict_json(response("Ada is 36")).passed


def test_stop_sequence_verdict() -> None:
    assert verdict_stop_sequence(response("1, 2, 3, 4, ")).passed
    assert not verdict_stop_sequence(response("1, 2, 3, 4, 6, 7, 8")).passed


def test_usage_and_ttft_verdicts() -> None:
    assert verdict_usage(response("hi")).passed
    assert not verdict_usage(response("hi", output_tokens=None)).passed
    assert not verdict_ttft(response("", ttft_ms=None)).passed
    assert not verdict_ttft(response("hi", ttft_ms=20_000.0)).passed


def test_max_tokens_keeps_the_count_short() -> None:
    assert verdict_stays_short(response("1, 2, 3", output_tokens=3), 50).passed
    assert not verdict_stays_short(response("1, 2", output_tokens=80), 50).passed
