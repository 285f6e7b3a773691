"""The catalog (providers, models, deployments) and reads of the current certifications.
Functions take a Session and leave the transaction to the caller. A certification's own
writes (runs, tests, verdicts) are in `store.runs`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelcert.domain import (
    DEFAULT_REGIONS,
    GLOBAL_REGION,
    PROVIDER_KINDS,
    Capabilities,
    DeploymentSpec,
    InferenceType,
)
from modelcert.errors import NotFoundError, UserError
from modelcert.secrets import find_config_secret
from modelcert.store.models import (
    Certification,
    CertificationRun,
    Deployment,
    Model,
    Provider,
)
from modelcert.validation import REGION_MAX, REGION_PATTERN, id_in_range, is_digit_id


def reject_secrets(config: Mapping[str, Any], field: str) -> None:
    """Secrets never go into the database: only the NAME of an environment variable.
    Key names are compared normalised (`api_key`, `api-key`, `apiKey`, `Authorization`…),
    nested objects and lists are searched, as are URLs with a password, and every
    `*_env` value must be a variable's name (see `modelcert.secrets`)."""
    problem = find_config_secret(config, field)
    if problem is not None:
        where, message = problem
        raise UserError(message, field=where)


def reject_secrets_in(field: str, value: str) -> None:
    """One option's value (e.g. --base-url): no URL password, no key."""
    problem = find_config_secret(value, field)
    if problem is not None:
        raise UserError(problem[1], field=field)


def default_regions(kind: str) -> list[str]:
    """Regions of a provider added without any: one endpoint (`global`) for the kinds that
    are one URL (a Vertex AI provider is given its locations, or serves `global`)."""
    if kind in ("openai", "azure-openai", "anthropic", "gemini"):
        return [GLOBAL_REGION]
    return list(DEFAULT_REGIONS)


def _auth_type(kind: str, settings: Mapping[str, Any]) -> str:
    if kind == "bedrock":
        return "aws"
    if "api_key_env" in settings:
        return "api_key"
    if kind == "gemini" and settings.get("vertexai"):
        return "google_adc"  # application default credentials (or access_token_env)
    return "none"


def add_provider(
    session: Session,
    *,
    slug: str,
    kind: str,
    name: str | None = None,
    base_url: str | None = None,
    regions: Sequence[str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Provider:
    if kind not in PROVIDER_KINDS:
        raise UserError(
            f"unknown provider kind {kind!r} (known: {', '.join(PROVIDER_KINDS)})", field="kind"
        )
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", slug):
        raise UserError(
            f"invalid slug {slug!r}: use lower-case letters, digits, . _ -", field="slug"
        )
    if session.scalar(select(Provider).where(Provider.slug == slug)) is not None:
        raise UserError(f"provider {slug!r} already exists", field="slug")
    settings = dict(config or {})
    reject_secrets(settings, "config")
    if base_url:
        reject_secrets_in("base_url", base_url)
        settings.setdefault("base_url", base_url)
    served = list(dict.fromkeys(regions)) if regions else default_regions(kind)
    check_regions(kind, served, settings)
    provider = Provider(
        slug=slug,
        kind=kind,
        name=name or slug,
        base_url=base_url,
        auth_type=_auth_type(kind, settings),
        regions=served,
        config=settings,
    )
    session.add(provider)
    session.flush()
    return provider


def check_regions(kind: str, regions: Sequence[str], config: Mapping[str, Any]) -> None:
    """`UserError` naming `regions` (or `config`) for regions a provider of `kind` cannot
    serve: a name that is not one (the API and the queue names take them as they are), the
    Gemini API's single endpoint, a Vertex AI provider without its project."""
    for region in regions:
        if not (
            isinstance(region, str)
            and 0 < len(region) <= REGION_MAX
            and re.fullmatch(REGION_PATTERN, region)
        ):
            raise UserError(
                f"region {str(region)[:70]!r} is not a region name (letters, digits, . _ : -)",
                field="regions",
            )
    if kind != "gemini":
        return
    if config.get("vertexai"):
        if not isinstance(config.get("project"), str) or not config["project"].strip():
            raise UserError(
                'a Vertex AI provider needs its Google Cloud project: --config \'{"vertexai": '
                'true, "project": "my-project"}\'',
                field="config",
            )
    elif list(regions) != [GLOBAL_REGION]:
        raise UserError(
            f"the Gemini API has one endpoint, region {GLOBAL_REGION!r} (for regions, use "
            'Vertex AI: --config \'{"vertexai": true, "project": …}\' with its locations)',
            field="regions",
        )


def get_provider(session: Session, slug: str) -> Provider:
    provider = session.scalar(select(Provider).where(Provider.slug == slug))
    if provider is None:
        known = session.scalars(select(Provider.slug).order_by(Provider.slug)).all()
        raise NotFoundError(
            f"unknown provider {slug!r} (known: {', '.join(known) or 'none'})", field="provider"
        )
    return provider


def get_or_create_model(
    session: Session,
    *,
    name: str,
    vendor: str,
    family: str | None = None,
    capabilities: Capabilities | None = None,
) -> Model:
    model = session.scalar(select(Model).where(Model.vendor == vendor, Model.name == name))
    if model is None:
        model = Model(
            name=name,
            vendor=vendor,
            family=family,
            capabilities=(capabilities or Capabilities()).model_dump(),
        )
        session.add(model)
        session.flush()
    elif capabilities is not None:
        model.capabilities = capabilities.model_dump()
    return model


def add_deployment(
    session: Session,
    *,
    provider_slug: str,
    provider_model_id: str,
    model_name: str | None = None,
    vendor: str = "unknown",
    family: str | None = None,
    capabilities: Capabilities | None = None,
    inference_type: InferenceType = InferenceType.ON_DEMAND,
    options: Mapping[str, Any] | None = None,
    cost_input_per_mtok: float | None = None,
    cost_output_per_mtok: float | None = None,
    cost_per_request: float | None = None,
) -> Deployment:
    provider = get_provider(session, provider_slug)
    reject_secrets(options or {}, "options")
    existing = session.scalar(
        select(Deployment).where(
            Deployment.provider_id == provider.id,
            Deployment.provider_model_id == provider_model_id,
        )
    )
    if existing is not None:
        raise UserError(
            f"deployment {provider_model_id!r} already exists on {provider_slug!r} "
            f"(id {existing.id})",
            field="provider_model_id",
        )
    model = get_or_create_model(
        session,
        name=model_name or provider_model_id,
        vendor=vendor,
        family=family,
        capabilities=capabilities,
    )
    deployment = Deployment(
        provider=provider,
        model=model,
        provider_model_id=provider_model_id,
        inference_type=inference_type.value,
        options=dict(options or {}),
        cost_input_per_mtok=cost_input_per_mtok,
        cost_output_per_mtok=cost_output_per_mtok,
        cost_per_request=cost_per_request,
    )
    session.add(deployment)
    session.flush()
    return deployment


def find_deployment(session: Session, ref: str | int) -> Deployment:
    """By numeric id, `provider-slug/model-id`, or a model id unique across providers."""
    text = str(ref).strip()
    if is_digit_id(text):  # ASCII digits only: "²" is no id
        found = session.get(Deployment, int(text)) if id_in_range(int(text)) else None
        if found is not None:
            return found
        raise NotFoundError(f"unknown deployment id {text}", field="deployment")
    query = select(Deployment).join(Provider)
    slug, _, model_id = text.partition("/")
    if model_id and session.scalar(select(Provider.id).where(Provider.slug == slug)):
        query = query.where(Provider.slug == slug, Deployment.provider_model_id == model_id)
    else:
        query = query.where(Deployment.provider_model_id == text)
    matches = list(session.scalars(query).unique())
    if not matches:
        raise NotFoundError(
            f"unknown deployment {text!r} (see `modelcert catalog list`)", field="deployment"
        )
    if len(matches) > 1:
        ids = ", ".join(f"{d.provider.slug}/{d.provider_model_id}" for d in matches)
        raise UserError(f"deployment {text!r} is ambiguous: {ids}", field="deployment")
    return matches[0]


def check_region(provider: Provider, region: str) -> None:
    if region not in provider.regions:
        raise UserError(
            f"region {region!r} is not served by provider {provider.slug!r} "
            f"(known: {', '.join(provider.regions)})",
            field="region",
        )


def list_deployments(session: Session, *, active_only: bool = False) -> list[Deployment]:
    query = select(Deployment).join(Provider).order_by(Provider.slug, Deployment.provider_model_id)
    if active_only:
        query = query.where(Deployment.active.is_(True), Provider.active.is_(True))
    return list(session.scalars(query).unique())


def deployment_spec(deployment: Deployment) -> DeploymentSpec:
    """What a certification needs of a deployment row, detached from the session."""
    provider = deployment.provider
    return DeploymentSpec(
        deployment_id=deployment.id,
        provider_slug=provider.slug,
        provider_kind=provider.kind,
        provider_config=dict(provider.config),
        provider_regions=tuple(provider.regions),
        model_id=deployment.provider_model_id,
        inference_type=InferenceType(deployment.inference_type),
        vendor=deployment.model.vendor,
        capabilities=Capabilities.model_validate(deployment.model.capabilities),
        options=dict(deployment.options),
    )


def certification_row(session: Session, deployment_id: int, region: str) -> Certification:
    """The one current certification of (deployment, region), created if there is none."""
    certification = session.scalar(
        select(Certification).where(
            Certification.deployment_id == deployment_id, Certification.region == region
        )
    )
    if certification is None:
        certification = Certification(deployment_id=deployment_id, region=region)
        session.add(certification)
    return certification


def certifications(session: Session) -> list[Certification]:
    """Every current certification, by provider, deployment and region."""
    query = (
        select(Certification)
        .join(Deployment)
        .join(Provider)
        .order_by(Provider.slug, Deployment.provider_model_id, Certification.region)
    )
    return list(session.scalars(query).unique())


def run_history(
    session: Session, deployment_id: int, region: str, *, limit: int = 20
) -> list[CertificationRun]:
    query = (
        select(CertificationRun)
        .where(CertificationRun.deployment_id == deployment_id, CertificationRun.region == region)
        .order_by(CertificationRun.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))
