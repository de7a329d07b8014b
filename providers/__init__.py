"""Metrics backends, one module per type, imported only when a provider of that type exists.

Adding a backend is one module exposing `create(config) -> Provider` plus one line here.
"""

from __future__ import annotations

import importlib

from providers.base import Provider, ProviderConfig, ProviderError, QueryResult, Sample, Window

# type name -> module. Modules import their SDKs at import time, so this map is the only
# thing that may be imported eagerly: a server with only Prometheus providers never loads boto3.
PROVIDER_MODULES: dict[str, str] = {
    "prometheus": "providers.prometheus",
    "thanos": "providers.prometheus",
    "cortex": "providers.prometheus",
    "openmetrics": "providers.openmetrics",
    "dynatrace": "providers.dynatrace",
    "dql": "providers.dql",
    "datadog": "providers.datadog",
    "elastic": "providers.elastic",
    "cloudwatch": "providers.cloudwatch",
    "google": "providers.google",
    "azure": "providers.azure",
    "http": "providers.http_json",
}

EXTRAS = {"cloudwatch": "aws", "google": "gcp", "azure": "azure"}


def create_provider(config: ProviderConfig) -> Provider:
    """Build the provider for `config.type`, importing its module (and SDK) on first use."""
    module_name = PROVIDER_MODULES.get(config.type)
    if module_name is None:
        raise ProviderError(f"unknown provider type {config.type!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(config.type)
        hint = f" (pip install 'keptn-metrics[{extra}]')" if extra else ""
        raise ProviderError(
            f"provider type {config.type!r} is not installed: {exc.name or exc}{hint}"
        ) from None
    provider: Provider = module.create(config)
    return provider


__all__ = [
    "PROVIDER_MODULES",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "QueryResult",
    "Sample",
    "Window",
    "create_provider",
]
