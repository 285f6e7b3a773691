"""Catalog discovery: add the deployments a provider reports for a region, with the
capabilities discovery can know (`providers.bedrock_families` for Bedrock; the kind's
defaults, `certify.battery.default_capabilities`, for the native Anthropic and Google
APIs), so a synced deployment runs the full battery its model supports."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from modelcert.certify.battery import default_capabilities
from modelcert.certify.errors import categorise_error
from modelcert.domain import Capabilities, InferenceType
from modelcert.errors import NotFoundError, UserError
from modelcert.providers.base import DiscoveredModel, ProviderError
from modelcert.providers.bedrock_families import capabilities_for
from modelcert.providers.registry import build_provider
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


# The kinds whose providers list their models.
DISCOVERABLE_KINDS = ("bedrock", "anthropic", "gemini")


class _Discovering(Protocol):
    async def list_models(self, region: str) -> list[DiscoveredModel]: ...

    async def aclose(self) -> None: ...


def discovered_capabilities(kind: str, model: DiscoveredModel) -> Capabilities:
    """What to declare for a discovered model of a provider of `kind`."""
    if kind == "bedrock":
        return capabilities_for(model)
    vision = any(modality.upper() == "IMAGE" for modality in model.input_modalities)
    return default_capabilities(kind).model_copy(
        update={"streaming": model.streaming, "vision": vision}
    )


async def _discover(
    provider_slug: str, kind: str, config: dict[str, Any], region: str
) -> list[DiscoveredModel]:
    try:
        client: _Discovering = build_provider(kind, config)  # type: ignore[assignment]
    except ProviderError as error:  # e.g. the key's variable is not set
        raise UserError(discovery_failure(provider_slug, region, error), field="provider") from None
    try:
        return await client.list_models(region)
    except ProviderError as error:
        # Bad credentials, an unreachable endpoint…: classified as `certify` reports it.
        raise UserError(discovery_failure(provider_slug, region, error), field="region") from None
    except ValueError as exc:  # the SDK refuses the configuration (e.g. endpoint_url)
        raise UserError(
            f"{provider_slug}: invalid configuration: {redact(str(exc))}", field="provider"
        ) from None
    finally:
        await client.aclose()


async def sync_bedrock_region(
    factory: sessionmaker[Session], provider_slug: str, region: str, include_unentitled: bool
) -> tuple[list[str], list[str]]:
    """Discover Bedrock's text models in `region` (the provider is added if missing)."""
    return await sync_region(factory, provider_slug, region, include_unentitled, kind="bedrock")


async def sync_region(
    factory: sessionmaker[Session],
    provider_slug: str,
    region: str,
    include_unentitled: bool,
    *,
    kind: str,
) -> tuple[list[str], list[str]]:
    """Discover text models of a provider of `kind` in `region`; returns (added, skipped)
    descriptions. A Bedrock provider is added if missing (the AWS chain needs no config);
    the others must exist, with the variable that holds their key."""
    with transaction(factory) as session:
        try:
            provider = repo.get_provider(session, provider_slug)
        except NotFoundError:
            if kind != "bedrock":
                raise
            provider = repo.add_provider(session, slug=provider_slug, kind="bedrock")
        if provider.kind != kind:
            raise UserError(
                f"provider {provider_slug!r} is of kind {provider.kind}, not {kind}",
                field="provider",
            )
        repo.check_region(provider, region)
        config = dict(provider.config)
    discovered = await _discover(provider_slug, kind, config, region)

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
                capabilities=discovered_capabilities(kind, model),
                inference_type=preferred_inference_type(model),
            )
            added.append(f"{model.model_id} ({model.vendor}, {preferred_inference_type(model)})")
    return added, skipped
