"""Prices of model calls (`domain.Price`: per 1M input and output tokens, and an optional
fee per answered request): the seed table of list prices and how a deployment's price
resolves. Pure.

A deployment's price resolves in this order (`price_for`):

1. its own prices (`modelcert price set`, `PUT /api/catalog/deployments/{id}/price`, or
   `catalog add-deployment --price-input/--price-output`): source `override`;
2. the seed table below, by provider kind and model id: source `seed:<as-of date>`;
3. otherwise None: the cost is unknown (shown as "—"), never taken for 0.

The seed table holds public list prices (on-demand, standard tier, USD per 1M tokens) as
published on the date below: AWS Bedrock's pricing page for us-east-1 (cross-region
inference profiles `us.`, `eu.`, `apac.`, `global.` … are priced as their model),
OpenAI's, Anthropic's and Google's Gemini API pricing pages (the prompt tier ≤ 128k/200k
tokens). They are a starting point: contracts, batch or provisioned throughput, regional
surcharges and price changes differ. Set a deployment's own price to be exact.
"""

from __future__ import annotations

import re

# The value type lives in the base (certify and store use it without this table).
from modelcert.domain import Price

__all__ = ["SEED", "SEED_AS_OF", "SEED_SOURCE", "Price", "format_usd", "price_for", "seed_price"]

SEED_AS_OF = "2025-10-01"
SEED_SOURCE = f"seed:{SEED_AS_OF}"
# Where the seed's figures were read (list prices; see the module docstring).
SEED_SOURCES = (
    "https://aws.amazon.com/bedrock/pricing/",
    "https://openai.com/api/pricing/",
    "https://www.anthropic.com/pricing#api",
    "https://ai.google.dev/gemini-api/docs/pricing",
)

# Model id prefixes -> (input, output) USD per 1M tokens. A prefix matches an id that is
# it, or it followed by a version, date or variant (`-20240620-v1:0`, `@20241022`,
# `-001`, `-latest`); the longest matching prefix wins, so `gpt-4o-mini` is not priced
# as `gpt-4o`, nor `claude-sonnet-4-5` as `claude-sonnet-4`.
_ANTHROPIC: dict[str, tuple[float, float]] = {
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-sonnet": (3.0, 15.0),
    "claude-3-opus": (15.0, 75.0),
    "claude-3-5-haiku": (0.80, 4.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-haiku-4-5": (1.0, 5.0),
}

_BEDROCK: dict[str, tuple[float, float]] = {
    **{f"anthropic.{prefix}": price for prefix, price in _ANTHROPIC.items()},
    "amazon.nova-micro": (0.035, 0.14),
    "amazon.nova-lite": (0.06, 0.24),
    "amazon.nova-pro": (0.80, 3.20),
    "amazon.nova-premier": (2.50, 12.50),
    "amazon.titan-text-lite": (0.15, 0.20),
    "amazon.titan-text-express": (0.20, 0.60),
    "amazon.titan-text-premier": (0.50, 1.50),
    "meta.llama3-8b-instruct": (0.30, 0.60),
    "meta.llama3-70b-instruct": (2.65, 3.50),
    "meta.llama3-1-8b-instruct": (0.22, 0.22),
    "meta.llama3-1-70b-instruct": (0.72, 0.72),
    "meta.llama3-1-405b-instruct": (2.40, 2.40),
    "meta.llama3-2-1b-instruct": (0.10, 0.10),
    "meta.llama3-2-3b-instruct": (0.15, 0.15),
    "meta.llama3-2-11b-instruct": (0.16, 0.16),
    "meta.llama3-2-90b-instruct": (0.72, 0.72),
    "meta.llama3-3-70b-instruct": (0.72, 0.72),
    "mistral.mistral-7b-instruct": (0.15, 0.20),
    "mistral.mixtral-8x7b-instruct": (0.45, 0.70),
    "mistral.mistral-small-2402": (1.0, 3.0),
    "mistral.mistral-large-2402": (4.0, 12.0),
    "mistral.mistral-large-2407": (2.0, 6.0),
    "cohere.command-r": (0.50, 1.50),
    "cohere.command-r-plus": (3.0, 15.0),
}

_OPENAI: dict[str, tuple[float, float]] = {
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4o": (2.50, 10.0),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.40),
    "o1": (15.0, 60.0),
    "o1-mini": (1.10, 4.40),
    "o3": (2.0, 8.0),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}

_GEMINI: dict[str, tuple[float, float]] = {
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-1.5-flash-8b": (0.0375, 0.15),
    "gemini-1.5-pro": (1.25, 5.0),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.5-pro": (1.25, 10.0),
}

# The seed table of each provider kind (`sim` has none: simulated calls cost nothing a
# list could say; give a demo deployment its own price instead). Azure OpenAI's list
# prices are OpenAI's for the same models; its model id is the Azure deployment's name,
# which matches when it is named after the model.
SEED: dict[str, dict[str, tuple[float, float]]] = {
    "bedrock": _BEDROCK,
    "openai": _OPENAI,
    "azure-openai": _OPENAI,
    "anthropic": _ANTHROPIC,
    "gemini": _GEMINI,
}

# Bedrock's cross-region inference profiles: `us.anthropic.claude-…`, `global.…`.
_PROFILE = re.compile(r"^(?:us|eu|apac|global|us-gov|ca|jp|au)\.(?=[a-z0-9-]+\.)")
# What may follow a prefix: nothing, or a separator starting a version, date or variant.
_SUFFIX = re.compile(r"^(?:$|[-:@._])")


def model_key(model_id: str) -> str:
    """The id as the seed table is keyed: lower case, without a path (`models/…`,
    `publishers/google/models/…`) or a Bedrock inference-profile prefix."""
    key = model_id.strip().lower().rsplit("/", 1)[-1]
    return _PROFILE.sub("", key, count=1)


def seed_price(provider_kind: str, model_id: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens from the seed table, or None when not listed."""
    table = SEED.get(provider_kind)
    if not table:
        return None
    key = model_key(model_id)
    matching = [p for p in table if key.startswith(p) and _SUFFIX.match(key[len(p) :])]
    return table[max(matching, key=len)] if matching else None


def price_for(
    provider_kind: str,
    model_id: str,
    *,
    input_per_mtok: float | None = None,
    output_per_mtok: float | None = None,
    per_request: float | None = None,
) -> Price | None:
    """The price of a deployment's calls: its own when both token prices are set
    (`override`), else the seed table's list price (`seed:<date>`, with the deployment's
    own per-request fee if it has one), else None (unknown: not free)."""
    fee = per_request or 0.0
    if input_per_mtok is not None and output_per_mtok is not None:
        return Price(input_per_mtok, output_per_mtok, fee, "override")
    if provider_kind == "sim":
        return None
    seeded = seed_price(provider_kind, model_id)
    if seeded is None:
        return None
    return Price(seeded[0], seeded[1], fee, SEED_SOURCE)


def format_usd(value: float | None) -> str:
    """A cost as the CLI and the dashboard show it: `—` when unknown (never `$0`)."""
    if value is None:
        return "—"
    if value == 0:
        return "$0"
    return f"${value:,.4f}" if abs(value) >= 0.01 else f"${value:.6f}"
