"""Catalog discovery: add the deployments a provider reports for a region, with the
capabilities discovery can know (`providers.bedrock_families`), so a synced deployment
runs the full battery its model supports."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from modelcert.certify.errors import categorise_error
from modelcert.domain import InferenceType
from modelcert.errors import NotFoundError, UserError
from modelcert.providers.base import DiscoveredModel, ProviderError
from modelcert.providers.bedrock import BedrockProvider
from modelcert.providers.bedrock_families import capabilities_for
from modelcert.secrets import redact
from modelcert.store import repo
from modelcert.store.db import transaction


def preferred_inference_type(model: DiscoveredModel) -> InferenceType:
    """On-demand where offered; else an inference profile; provisioned as a last resort."""
    for kind in (InferenceType.ON_DEMAND, InferenceType.INFERENCE_PROFILE):
        if kind in model.inference_types:
            return kind
    return model.inference_types[0] if model.inference_types else InferenceType.ON_DEMAND


def discovery_failure(provider_slug: str, region: str, error: ProviderError) -> str:
    """One line for a failed discovery: the category, the provider's code and status,
    and its (secret-free) message, as `modelcert certify` shows a decisive error."""
    category = categorise_error(code=error.code, status=error.status, message=error.message)
    origin = ", ".join(
        part for part in (error.code, f"HTTP {error.status}" if error.status else None) if part
    )
    first_line = (error.message.strip().splitlines() or [""])[0][:500]
    return (
        f"{provider_slug}: discovery in {region} failed: {category.category.value}"
        f"{f' ({origin})' if origin else ''}: {first_line}"
    )


async def sync_bedrock_region(
    factory: sessionmaker[Session], provider_slug: str, region: str, include_unentitled: bool
) -> tuple[list[str], list[str]]:
    """Discover text models in `region`; returns (added, skipped) descriptions."""
    with transaction(factory) as session:
        try:
            provider = repo.get_provider(session, provider_slug)
        except NotFoundError:
            provider = repo.add_provider(session, slug=provider_slug, kind="bedrock")
        if provider.kind != "bedrock":
            raise UserError(
                f"provider {provider_slug!r} is of kind {provider.kind}, not bedrock",
                field="provider",
            )
        repo.check_region(provider, region)
        config = dict(provider.config)
    bedrock = BedrockProvider.from_config(config)
    try:
        discovered = await bedrock.list_models(region)
    except ProviderError as error:
        # Bad credentials, an unreachable endpoint…: classified as `certify` reports it.
        raise UserError(discovery_failure(provider_slug, region, error), field="region") from None
    except ValueError as exc:  # botocore refuses the configuration (e.g. endpoint_url)
        raise UserError(
            f"{provider_slug}: invalid configuration: {redact(str(exc))}", field="provider"
        ) from None
    finally:
        await bedrock.aclose()

    added: list[str] = []
    skipped: list[str] = []
    with transaction(factory) as session:
        for model in discovered:
            if model.output_modalities and "TEXT" not in model.output_modalities:
                skipped.append(f"{model.model_id} (no text output)")
                continue
            if model.entitled is False and not include_unentitled:
                skipped.append(f"{model.model_id} (not entitled in {region})")
                continue
            try:
                repo.find_deployment(session, f"{provider_slug}/{model.model_id}")
                skipped.append(f"{model.model_id} (already in the catalog)")
                continue
            except NotFoundError:
                pass
            repo.add_deployment(
                session,
                provider_slug=provider_slug,
                provider_model_id=model.model_id,
                model_name=model.name,
                vendor=model.vendor,
                capabilities=capabilities_for(model),
                inference_type=preferred_inference_type(model),
            )
            added.append(f"{model.model_id} ({model.vendor}, {preferred_inference_type(model)})")
    return added, skipped
