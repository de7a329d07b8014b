"""Metrics backends, one module per type, imported only when a provider of that type exists.

Adding a backend is one module exposing `create(config) -> Backend` plus one line in
`providers/registry.py`, the table everything else (model, CLI, CRDs) reads.
"""

from __future__ import annotations

import importlib

from providers.base import Backend, BackendConfig, BackendError, QueryResult, Sample, Window
from providers.registry import BY_NAME


def create_backend(config: BackendConfig) -> Backend:
    """Build the backend for `config.type`, importing its module (and SDK) on first use."""
    backend = BY_NAME.get(config.type)
    if backend is None:
        raise BackendError(f"unknown provider type {config.type!r}")
    try:
        module = importlib.import_module(backend.module)
    except ImportError as exc:
        hint = f" (pip install 'keptn-metrics[{backend.extra}]')" if backend.extra else ""
        raise BackendError(
            f"provider type {config.type!r} is not installed: {exc.name or exc}{hint}"
        ) from None
    built: Backend = module.create(config)
    return built


__all__ = [
    "Backend",
    "BackendConfig",
    "BackendError",
    "QueryResult",
    "Sample",
    "Window",
    "create_backend",
]
