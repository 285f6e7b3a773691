"""The demo catalog: SIMULATED deployments, one per sim behaviour profile, in three
regions, so a first run shows every verdict and error category the tool can give, each
with a DEMO price so that it shows what certification costs too.

It stays offline: real providers are registered beside it, never in it, e.g.

    modelcert catalog add-provider anthropic --kind anthropic --api-key-env ANTHROPIC_KEY
    modelcert catalog sync anthropic
    modelcert catalog add-provider gemini --kind gemini --api-key-env GEMINI_KEY
    modelcert catalog add-provider vertex --kind gemini --region us-central1 \
        --region europe-west4 --config '{"vertexai": true, "project": "my-project"}'
    modelcert catalog sync gemini --provider vertex --region us-central1

(README, "Certifying real deployments", has every kind.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from modelcert.domain import Capabilities
from modelcert.errors import NotFoundError
from modelcert.store import repo
from modelcert.store.suites import store_suite
from modelcert.suites import load_suite_file

DEMO_PROVIDER = "sim"
DEMO_REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
# Short retry delays keep the demo snappy; real providers keep the 2 s default.
DEMO_PROVIDER_CONFIG = {"seed": 42, "retry_base_ms": 100, "retry_max_ms": 1000}


@dataclass(frozen=True)
class DemoDeployment:
    model_id: str
    name: str
    vendor: str
    profile: str
    expected: str  # what a user should see, for the README table
    capabilities: Capabilities = field(default_factory=Capabilities)
    options: dict[str, Any] = field(default_factory=dict)


_FULL = Capabilities(tools=True, json_output=True)

DEMO_DEPLOYMENTS: tuple[DemoDeployment, ...] = (
    DemoDeployment(
        "aurora-fast", "Aurora Fast", "Anthropic", "healthy-fast", "CERTIFIED, PREMIUM", _FULL
    ),
    DemoDeployment(
        "basalt-slow",
        "Basalt Slow",
        "Amazon",
        "healthy-slow",
        "CERTIFIED, RECOMMENDED (2-3 s answers)",
    ),
    DemoDeployment(
        "cirrus-flaky",
        "Cirrus Flaky",
        "Cohere",
        "flaky",
        "CERTIFIED after retries (429 / 503 retried)",
        _FULL,
    ),
    DemoDeployment(
        "delta-quota",
        "Delta Quota",
        "Meta",
        "quota-limited",
        "CERTIFIED after RATE_LIMIT retries (2 req/s quota)",
    ),
    DemoDeployment(
        "ember-regional",
        "Ember Regional",
        "Mistral",
        "unavailable-in-region",
        "CERTIFIED in us-east-1, FAILED UNAVAILABLE elsewhere",
    ),
    DemoDeployment(
        "fjord-denied",
        "Fjord Denied",
        "Anthropic",
        "access-denied",
        "FAILED, PERMISSION_ERROR",
        _FULL,
    ),
    DemoDeployment(
        "granite-badkey",
        "Granite Bad Key",
        "OpenAI",
        "bad-credentials",
        "FAILED, AUTHENTICATION_ERROR",
    ),
    DemoDeployment("haze-empty", "Haze Empty", "Amazon", "empty-answers", "FAILED, QUALITY_ISSUE"),
    DemoDeployment(
        "iris-cutoff",
        "Iris Cutoff",
        "Meta",
        "broken-stream",
        "FAILED, NETWORK_ERROR (stream cut mid-answer)",
    ),
    DemoDeployment(
        "jade-hang",
        "Jade Hang",
        "Mistral",
        "hangs",
        "FAILED, TIMEOUT (calls cancelled after 1 s)",
        options={"test_timeout_s": 1.0},
    ),
)


# DEMO prices (USD per 1M input, output tokens), so that the demo shows what a
# certification costs. The deployments are SIMULATED: these are not their prices (they
# have none), only figures modelled on a real tier of each vendor (as of the seed table's
# date, `cost.prices`), from a cheap one (Nova Lite) to a dear one (Claude 3.5 Sonnet).
DEMO_PRICES: dict[str, tuple[float, float]] = {
    "aurora-fast": (3.0, 15.0),  # like Claude 3.5 Sonnet
    "basalt-slow": (0.80, 3.20),  # like Amazon Nova Pro
    "cirrus-flaky": (0.50, 1.50),  # like Cohere Command R
    "delta-quota": (0.72, 0.72),  # like Llama 3.1 70B on Bedrock
    "ember-regional": (2.0, 6.0),  # like Mistral Large (24.07)
    "fjord-denied": (3.0, 15.0),  # like Claude 3.5 Sonnet (refused: costs nothing)
    "granite-badkey": (0.15, 0.60),  # like GPT-4o mini (refused: costs nothing)
    "haze-empty": (0.06, 0.24),  # like Amazon Nova Lite
    "iris-cutoff": (0.22, 0.22),  # like Llama 3.1 8B on Bedrock
    "jade-hang": (0.15, 0.20),  # like Mistral 7B
}


def seed_demo_catalog(session: Session) -> list[int]:
    """Create the demo provider and deployments if missing; return the deployment ids."""
    try:
        repo.get_provider(session, DEMO_PROVIDER)
    except NotFoundError:
        repo.add_provider(
            session,
            slug=DEMO_PROVIDER,
            kind="sim",
            name="Simulated provider (demo)",
            regions=DEMO_REGIONS,
            config=DEMO_PROVIDER_CONFIG,
        )
    ids: list[int] = []
    for demo in DEMO_DEPLOYMENTS:
        try:
            deployment = repo.find_deployment(session, f"{DEMO_PROVIDER}/{demo.model_id}")
        except NotFoundError:
            deployment = repo.add_deployment(
                session,
                provider_slug=DEMO_PROVIDER,
                provider_model_id=demo.model_id,
                model_name=demo.name,
                vendor=demo.vendor,
                capabilities=demo.capabilities,
                options={"profile": demo.profile, **demo.options},
            )
        price = DEMO_PRICES.get(demo.model_id)
        unpriced = (
            deployment.cost_input_per_mtok is None and deployment.cost_output_per_mtok is None
        )
        if price is not None and unpriced:  # a demo catalog seeded before it had prices
            deployment.cost_input_per_mtok, deployment.cost_output_per_mtok = price
        ids.append(deployment.id)
    seed_demo_suite(session)
    return ids


# The demo's own suite, attached to one deployment: run beside the battery there.
DEMO_SUITE_FILE = Path(__file__).with_name("demo_suite.yaml")


def seed_demo_suite(session: Session) -> str:
    """Load the demo suite (unchanged: nothing new is stored); its `name@version`."""
    loaded = load_suite_file(DEMO_SUITE_FILE)
    store_suite(session, loaded, loaded_by="demo")
    return loaded.ref
