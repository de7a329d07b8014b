"""`ServeConfig`: every `keptn-metrics serve` flag, parsed once into one typed, frozen value.

The CLI builds it at its boundary (`ServeConfig.from_args`); everything below takes the
config or one of its parts, never an `argparse.Namespace`. Each component keeps owning its
flags and the options object built from them (apiservice.flags, kube.flags, controller.flags,
egress_flags); this module composes them and resolves the defaults that depend on the mode.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace

from apiservice.connections import ConnectionLimits
from apiservice.flags import ApiOptions
from metrics_server.controller.flags import ControllerOptions, options_from_args
from metrics_server.egress_flags import policy_from_args
from metrics_server.evaluator import EvaluatorOptions
from metrics_server.kube.flags import KubeOptions
from metrics_server.store.local import DEFAULT_MAX_MANIFEST_BYTES


@dataclass(frozen=True)
class LocalOptions:
    """Local mode (`--manifests DIR`): where the manifests are and how they are read."""

    manifests: str
    default_namespace: str = "default"
    reload_interval: float = 1.0
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES


@dataclass(frozen=True)
class ServeConfig:
    """What `serve` runs with. `local` is set in local mode, else the server is in Kubernetes mode."""

    api: ApiOptions = field(default_factory=ApiOptions)
    kube: KubeOptions = field(default_factory=KubeOptions)
    evaluator: EvaluatorOptions = field(default_factory=EvaluatorOptions)
    controller: ControllerOptions = field(default_factory=ControllerOptions)
    local: LocalOptions | None = None
    server_namespace: str = "keptn-system"
    bind_address: str = "0.0.0.0"
    metrics_port: int = 9999
    #: seconds between /readyz turning false and the listeners closing on SIGTERM
    shutdown_delay: float = 2.0
    openmetrics_parser: str = "process"
    openmetrics_scrape_ttl: float = 1.0
    log_format: str = "text"
    log_level: str = "info"

    @property
    def kubernetes_mode(self) -> bool:
        return self.local is None

    @property
    def limits(self) -> ConnectionLimits:
        """Connection limits of both HTTP ports."""
        return self.api.limits

    @property
    def max_staleness(self) -> float | None:
        return self.api.max_staleness

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeConfig:
        """The CLI boundary: `serve`'s parsed flags, validated, with mode-dependent defaults resolved."""
        kubernetes_mode = not args.manifests
        bind = args.bind_address or ("0.0.0.0" if kubernetes_mode else "127.0.0.1")
        delay = args.shutdown_delay
        if delay is None:
            delay = 2.0 if kubernetes_mode else 0.0
        egress = policy_from_args(args, kubernetes_mode=kubernetes_mode)
        kube = KubeOptions.from_args(args)
        local = (
            None
            if kubernetes_mode
            else LocalOptions(
                manifests=args.manifests,
                default_namespace=args.default_namespace,
                reload_interval=args.reload_interval,
                max_manifest_bytes=args.max_manifest_bytes,
            )
        )
        return cls(
            api=ApiOptions.from_args(
                args, kubernetes_mode, server_namespace=args.server_namespace, kubeconfig=kube.kubeconfig
            ),
            kube=kube,
            evaluator=EvaluatorOptions(
                fetch_timeout=args.fetch_timeout,
                provider_concurrency=args.provider_concurrency,
                max_backoff=args.max_backoff,
                egress=egress,
            ),
            controller=replace(
                options_from_args(
                    args, server_namespace=args.server_namespace, fetch_timeout=args.fetch_timeout
                ),
                egress=egress,
            ),
            local=local,
            server_namespace=args.server_namespace,
            bind_address=bind,
            metrics_port=args.metrics_port,
            shutdown_delay=delay,
            openmetrics_parser=args.openmetrics_parser,
            openmetrics_scrape_ttl=args.openmetrics_scrape_ttl,
            log_format=args.log_format,
            log_level=args.log_level,
        )

    @classmethod
    def from_argv(cls, argv: list[str]) -> ServeConfig:
        """`keptn-metrics serve ARGV...` as a config (tests, benchmarks, embedding)."""
        from metrics_server.cli import build_parser

        args = build_parser().parse_args(["serve", *argv])
        return cls.from_args(args)
