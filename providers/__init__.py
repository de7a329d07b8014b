"""Metrics backends, one module per type, imported only when a provider of that type exists.

Adding a backend is one module exposing `create(config) -> Provider` plus one line in
`providers/registry.py`, the table everything else (model, CLI, CRDs) reads.
"""

from __future__ import annotations

import importlib

from providers.base import Provider, ProviderConfig, ProviderError, QueryResult, Sample, Window
from providers.registry import BY_NAME


def create_provider(config: ProviderConfig) -> Provider:
    """Build the provider for `config.type`, importing its module (and SDK) on first use."""
    backend = BY_NAME.get(config.type)
    if backend is None:
        raise ProviderError(f"unknown provider type {config.type!r}")
    try:
        module = importlib.import_module(backend.module)
    except ImportError as exc:
        hint = f" (pip install 'keptn-metrics[{backend.extra}]')" if backend.extra else ""
        raise ProviderError(
            f"provider type {config.type!r} is not installed: {exc.name or exc}{hint}"
        ) from None
    provider: Provider = module.create(config)
    return provider


__all__ = [
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "QueryResult",
    "Sample",
    "Window",
    "create_provider",
]
