"""Deployments' prices: each one's price as it resolves (`cost.prices.price_for`), and an
operator's changes to it (set, clear), each recorded in the audit log."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelcert.cost.prices import Price, price_for
from modelcert.errors import UserError
from modelcert.store import audit, repo
from modelcert.store.models import Deployment, Provider

# Far above any list price (Claude Opus output is 75): a typo (per 1K, or cents) is
# refused instead of making every budget refuse everything.
MAX_PER_MTOK = 10_000.0
MAX_PER_REQUEST = 100.0


@dataclass(frozen=True)
class DeploymentPrice:
    deployment_id: int
    deployment: str  # provider/model-id
    provider_kind: str
    price: Price | None

    @property
    def source(self) -> str:
        """override, seed:<date>, or none."""
        return self.price.source if self.price is not None else "none"

    def as_json(self) -> dict[str, Any]:
        price = self.price
        return {
            "deploymentId": self.deployment_id,
            "deployment": self.deployment,
            "providerKind": self.provider_kind,
            "inputPerMtok": price.input_per_mtok if price else None,
            "outputPerMtok": price.output_per_mtok if price else None,
            "perRequest": price.per_request if price else None,
            "source": self.source,
        }


def deployment_price(deployment: Deployment) -> DeploymentPrice:
    provider = deployment.provider
    return DeploymentPrice(
        deployment.id,
        f"{provider.slug}/{deployment.provider_model_id}",
        provider.kind,
        price_for(
            provider.kind,
            deployment.provider_model_id,
            input_per_mtok=deployment.cost_input_per_mtok,
            output_per_mtok=deployment.cost_output_per_mtok,
            per_request=deployment.cost_per_request,
        ),
    )


def deployment_prices(session: Session, provider: str | None = None) -> list[DeploymentPrice]:
    """Every deployment (of `provider`, a slug, when given) and its price, by label."""
    query = select(Deployment).join(Provider).order_by(Provider.slug, Deployment.provider_model_id)
    if provider is not None:
        repo.get_provider(session, provider)  # an unknown slug is a 404, not an empty list
        query = query.where(Provider.slug == provider)
    return [deployment_price(d) for d in session.scalars(query)]


def checked_price(value: float | None, field: str, *, per_request: bool = False) -> float | None:
    """A price as given: a finite number ≥ 0 within reason; `UserError` naming `field`."""
    if value is None:
        return None
    limit = MAX_PER_REQUEST if per_request else MAX_PER_MTOK
    unit = "USD per request" if per_request else "USD per 1M tokens"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{field}: expected a number of {unit}", field=field)
    if not math.isfinite(value) or value < 0 or value > limit:
        raise UserError(f"{field}: expected {unit} from 0 to {limit:g}, not {value!r}", field=field)
    return float(value)


def set_price(
    session: Session,
    ref: str | int,
    *,
    input_per_mtok: float,
    output_per_mtok: float,
    per_request: float | None = None,
    actor: str,
    interface: str,
) -> DeploymentPrice:
    """Give a deployment its own price (it overrides the seed table); audited."""
    values = (
        checked_price(input_per_mtok, "input"),
        checked_price(output_per_mtok, "output"),
        checked_price(per_request, "per_request", per_request=True),
    )
    deployment = repo.find_deployment(session, ref)
    before = deployment_price(deployment)
    (
        deployment.cost_input_per_mtok,
        deployment.cost_output_per_mtok,
        deployment.cost_per_request,
    ) = values
    after = deployment_price(deployment)
    audit.record(
        session,
        actor=actor,
        interface=interface,
        action="deployment.price_set",
        target=after.deployment,
        details={
            "deploymentId": deployment.id,
            "inputPerMtok": values[0],
            "outputPerMtok": values[1],
            "perRequest": values[2],
            "was": before.source,
        },
    )
    return after


def clear_price(
    session: Session, ref: str | int, *, actor: str, interface: str
) -> tuple[DeploymentPrice, bool]:
    """Remove a deployment's own price (the seed's applies again, if any); audited when
    there was one. Returns its price now and whether it changed."""
    deployment = repo.find_deployment(session, ref)
    own = (
        deployment.cost_input_per_mtok,
        deployment.cost_output_per_mtok,
        deployment.cost_per_request,
    )
    if all(value is None for value in own):
        return deployment_price(deployment), False
    deployment.cost_input_per_mtok = None
    deployment.cost_output_per_mtok = None
    deployment.cost_per_request = None
    after = deployment_price(deployment)
    audit.record(
        session,
        actor=actor,
        interface=interface,
        action="deployment.price_clear",
        target=after.deployment,
        details={"deploymentId": deployment.id, "now": after.source},
    )
    return after, True
