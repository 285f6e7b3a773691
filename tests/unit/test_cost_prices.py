"""Prices resolve as docs/cost.md says: the deployment's own (override) over the seed
table's list price (seed:<date>), matched through Bedrock inference-profile prefixes and
version suffixes to the most specific model; the simulator and unknown models have none
(unknown, not free). Estimates before a run, and the cost counter."""

from __future__ import annotations

import math

import pytest

from modelcert.cost.estimate import (
    TYPICAL_INPUT_TOKENS,
    TYPICAL_OUTPUT_TOKENS,
    RunUsage,
    estimate_calls,
    estimate_certification_cost,
)
from modelcert.cost.prices import SEED_SOURCE, Price, format_usd, model_key, price_for
from modelcert.obs import metrics
from modelcert.obs.metrics import METRIC_NAMES, REGISTRY


@pytest.mark.parametrize(
    ("kind", "model_id", "expected"),
    [
        ("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", (3.0, 15.0)),
        ("bedrock", "us.anthropic.claude-3-5-haiku-20241022-v1:0", (0.80, 4.0)),
        ("bedrock", "eu.anthropic.claude-3-7-sonnet-20250219-v1:0", (3.0, 15.0)),
        ("bedrock", "apac.anthropic.claude-3-haiku-20240307-v1:0", (0.25, 1.25)),
        ("bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", (3.0, 15.0)),
        ("bedrock", "us.anthropic.claude-opus-4-1-20250805-v1:0", (15.0, 75.0)),
        ("bedrock", "anthropic.claude-3-opus-20240229-v1:0:200k", (15.0, 75.0)),
        ("bedrock", "amazon.nova-micro-v1:0", (0.035, 0.14)),
        ("bedrock", "us.amazon.nova-pro-v1:0", (0.80, 3.20)),
        ("bedrock", "amazon.titan-text-express-v1", (0.20, 0.60)),
        ("bedrock", "meta.llama3-1-70b-instruct-v1:0", (0.72, 0.72)),
        ("bedrock", "meta.llama3-8b-instruct-v1:0", (0.30, 0.60)),
        ("bedrock", "mistral.mistral-7b-instruct-v0:2", (0.15, 0.20)),
        ("bedrock", "cohere.command-r-plus-v1:0", (3.0, 15.0)),
        ("bedrock", "cohere.command-r-v1:0", (0.50, 1.50)),
        ("openai", "gpt-4o", (2.50, 10.0)),
        ("openai", "gpt-4o-2024-08-06", (2.50, 10.0)),
        ("openai", "gpt-4o-mini-2024-07-18", (0.15, 0.60)),
        ("openai", "gpt-4.1-nano", (0.10, 0.40)),
        ("openai", "o3-mini", (1.10, 4.40)),
        ("azure-openai", "gpt-4.1-mini", (0.40, 1.60)),
        ("anthropic", "claude-3-5-haiku-latest", (0.80, 4.0)),
        ("anthropic", "claude-sonnet-4-20250514", (3.0, 15.0)),
        ("gemini", "models/gemini-2.5-flash", (0.30, 2.50)),
        ("gemini", "gemini-2.5-flash-lite", (0.10, 0.40)),
        ("gemini", "gemini-2.0-flash-001", (0.10, 0.40)),
        ("gemini", "publishers/google/models/gemini-1.5-pro-002", (1.25, 5.0)),
    ],
)
def test_the_seed_prices_common_models(
    kind: str, model_id: str, expected: tuple[float, float]
) -> None:
    price = price_for(kind, model_id)
    assert price is not None, model_id
    assert (price.input_per_mtok, price.output_per_mtok) == expected
    assert price.source == SEED_SOURCE and price.per_request == 0.0


@pytest.mark.parametrize(
    ("kind", "model_id"),
    [
        ("openai", "smollm2"),  # a self-hosted model behind an OpenAI-compatible server
        ("openai", "gpt-4"),  # gpt-4o's prefix does not stretch to a shorter id
        ("openai", "gpt-4oops"),  # nor to a longer name that is not a version
        ("bedrock", "gpt-4o"),  # each kind its own table
        ("bedrock", "anthropic.claude-v2:1"),
        ("gemini", "gemini-3-ultra"),
        ("unknown-kind", "gpt-4o"),
        ("sim", "aurora-fast"),
    ],
)
def test_an_unlisted_model_has_no_price(kind: str, model_id: str) -> None:
    assert price_for(kind, model_id) is None


def test_the_deployments_own_price_overrides_the_seed() -> None:
    own = price_for(
        "bedrock",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        input_per_mtok=2.0,
        output_per_mtok=9.0,
        per_request=0.001,
    )
    assert own == Price(2.0, 9.0, 0.001, "override")
    # Zero is a price (a free tier), not a missing one.
    assert price_for("openai", "gpt-4o", input_per_mtok=0.0, output_per_mtok=0.0) == Price(
        0.0, 0.0, 0.0, "override"
    )


def test_half_an_override_is_not_one_and_a_fee_joins_the_seed() -> None:
    seeded = price_for("openai", "gpt-4o-mini", input_per_mtok=9.0, per_request=0.002)
    assert seeded == Price(0.15, 0.60, 0.002, SEED_SOURCE)


def test_the_simulator_has_only_the_prices_it_is_given() -> None:
    assert price_for("sim", "gpt-4o") is None
    assert price_for("sim", "aurora-fast", input_per_mtok=3.0, output_per_mtok=15.0) == Price(
        3.0, 15.0, 0.0, "override"
    )


def test_model_keys() -> None:
    assert model_key(" US.Anthropic.Claude-3-Haiku-20240307-v1:0 ") == (
        "anthropic.claude-3-haiku-20240307-v1:0"
    )
    assert model_key("us-gov.anthropic.claude-3-haiku-20240307-v1:0").startswith("anthropic.")
    assert model_key("global.amazon.nova-lite-v1:0") == "amazon.nova-lite-v1:0"
    assert model_key("models/gemini-2.0-flash") == "gemini-2.0-flash"
    assert model_key("us.gpt") == "us.gpt"  # no vendor.model after it: not a profile


def test_cost_of_calls() -> None:
    price = Price(3.0, 15.0, 0.001)
    # 1,000 tokens in, 2,000 out, over 4 answered calls.
    assert price.cost(1_000, 2_000, 4) == pytest.approx(0.003 + 0.030 + 0.004)
    assert price.cost(None, None, 0) == 0.0


def test_costs_are_shown_unknown_never_as_zero() -> None:
    assert format_usd(None) == "—"
    assert format_usd(0.0) == "$0"
    assert format_usd(0.001234) == "$0.001234"
    assert format_usd(12.5) == "$12.5000"


def test_estimate_without_history_uses_a_typical_call() -> None:
    price = Price(3.0, 15.0)
    expected = price.cost(10 * TYPICAL_INPUT_TOKENS, 10 * TYPICAL_OUTPUT_TOKENS, 10)
    assert estimate_certification_cost(price, 10) == pytest.approx(expected)
    assert estimate_certification_cost(None, 10) is None
    assert estimate_certification_cost(price, 0) == 0.0


def test_estimate_from_history_takes_the_median_tokens_per_call_at_todays_price() -> None:
    history = [
        RunUsage(200, 400, 10),  # 20 in, 40 out per call
        RunUsage(300, 500, 10),  # 30, 50: the median
        RunUsage(9_000, 9_000, 10),  # a run of long answers does not move it
        RunUsage(0, 0, 0),  # no call: nothing to learn
    ]
    price = Price(1.0, 2.0, 0.01)
    assert estimate_certification_cost(price, 4, history) == pytest.approx(
        price.cost(4 * 30, 4 * 50, 4)
    )
    dearer = Price(2.0, 4.0, 0.01)  # a price changed since: the tokens, at today's price
    assert estimate_certification_cost(dearer, 4, history) == pytest.approx(
        dearer.cost(120, 200, 4)
    )


def test_estimated_calls() -> None:
    assert estimate_calls(["basic-prompt", "availability", "streaming"]) == 4
    assert estimate_calls([]) == 0


def _cost_metric(region: str, provider: str) -> float:
    value = REGISTRY.get_sample_value(
        "modelcert_certification_cost_usd_total", {"region": region, "provider": provider}
    )
    return value or 0.0


def test_record_cost_adds_dollars_by_region_and_provider_kind() -> None:
    assert "modelcert_certification_cost_usd_total" in METRIC_NAMES
    before = _cost_metric("xx-cost-1", "bedrock")
    metrics.record_cost("xx-cost-1", "bedrock", 0.25)
    metrics.record_cost("xx-cost-1", "bedrock", 0.5)
    metrics.record_cost("xx-cost-1", "bedrock", 0.0)  # nothing to add
    metrics.record_cost("xx-cost-1", "bedrock", -1.0)  # a counter never goes down
    metrics.record_cost("xx-cost-1", "bedrock", math.nan)
    assert _cost_metric("xx-cost-1", "bedrock") == pytest.approx(before + 0.75)
    assert _cost_metric("xx-cost-1", "openai") == 0.0
