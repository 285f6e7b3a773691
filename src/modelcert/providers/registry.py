"""Builds provider clients from catalog rows, one per provider per process."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from modelcert.domain import PROVIDER_KINDS
from modelcert.errors import UserError
from modelcert.providers.base import ProviderClient


def build_provider(kind: str, config: Mapping[str, Any]) -> ProviderClient:
    """A provider client of this kind; vendor SDKs are imported only when used."""
    if kind == "sim":
        from modelcert.providers.sim import SimProvider

        return SimProvider.from_config(config)
    if kind == "bedrock":
        from modelcert.providers.bedrock import BedrockProvider

        return BedrockProvider.from_config(config)
    if kind in ("openai", "azure-openai"):
        from modelcert.providers.openai import OpenAIProvider

        return OpenAIProvider.from_config(config)
    if kind == "anthropic":
        from modelcert.providers.anthropic import AnthropicProvider

        return AnthropicProvider.from_config(config)
    if kind == "gemini":
        from modelcert.providers.gemini import GeminiProvider

        return GeminiProvider.from_config(config)
    raise UserError(
        f"unknown provider kind {kind!r} (known: {', '.join(PROVIDER_KINDS)})", field="kind"
    )


class ProviderPool:
    """Keeps one client per provider slug, so clients (and their caches) are reused.

    Safe to call from several threads: two certifications starting at once (each planning
    in a thread) get the same client."""

    def __init__(self) -> None:
        self._providers: dict[str, ProviderClient] = {}
        self._lock = threading.Lock()

    def get(self, slug: str, kind: str, config: Mapping[str, Any]) -> ProviderClient:
        with self._lock:
            if slug not in self._providers:
                self._providers[slug] = build_provider(kind, config)
            return self._providers[slug]

    async def aclose(self) -> None:
        with self._lock:
            providers = list(self._providers.values())
            self._providers.clear()
        for provider in providers:
            await provider.aclose()
