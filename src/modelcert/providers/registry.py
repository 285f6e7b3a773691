"""Builds provider connections from catalog rows, one per provider per process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelcert.errors import UserError
from modelcert.providers.base import Provider

PROVIDER_KINDS = ("sim", "bedrock", "openai", "azure-openai")


def build_provider(kind: str, config: Mapping[str, Any]) -> Provider:
    """A provider connection of this kind; vendor SDKs are imported only when used."""
    if kind == "sim":
        from modelcert.providers.sim import SimProvider

        return SimProvider.from_config(config)
    if kind == "bedrock":
        from modelcert.providers.bedrock import BedrockProvider

        return BedrockProvider.from_config(config)
    if kind in ("openai", "azure-openai"):
        from modelcert.providers.openai import OpenAIProvider

        return OpenAIProvider.from_config(config)
    raise UserError(
        f"unknown provider kind {kind!r} (known: {', '.join(PROVIDER_KINDS)})", field="kind"
    )


class ProviderPool:
    """Keeps one connection per provider slug, so clients (and their caches) are reused."""

    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}

    def get(self, slug: str, kind: str, config: Mapping[str, Any]) -> Provider:
        if slug not in self._providers:
            self._providers[slug] = build_provider(kind, config)
        return self._providers[slug]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()
