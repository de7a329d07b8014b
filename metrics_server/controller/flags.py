"""`keptn-metrics serve` flags of the lifecycle controller (Kubernetes mode only)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from metrics_server.state import STALENESS_FACTOR
from providers.egress import DEFAULT_POLICY, EgressPolicy


@dataclass(frozen=True)
class ControllerOptions:
    """What run_controller needs from the command line (see `options_from_args`)."""

    enabled: bool = True
    server_namespace: str = "keptn-system"
    staleness_factor: float = STALENESS_FACTOR
    analysis_max_retries: int = 10
    analysis_retry_interval: float = 10.0
    analysis_max_retry_interval: float = 300.0
    definition_retry_interval: float = 10.0
    fetch_timeout: float = 10.0
    workers: int = 4
    egress: EgressPolicy = DEFAULT_POLICY  # addresses providers may connect to (set by `serve`)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("lifecycle controller (KeptnEvaluation, Analysis; Kubernetes mode)")
    group.add_argument(
        "--enable-lifecycle-controller",
        dest="lifecycle_controller",
        action="store_true",
        default=True,
        help="reconcile KeptnEvaluations and Analyses on the leader (default: on)",
    )
    group.add_argument(
        "--disable-lifecycle-controller",
        dest="lifecycle_controller",
        action="store_false",
        help="do not reconcile KeptnEvaluations and Analyses (e.g. when Keptn's own operators run)",
    )
    group.add_argument(
        "--analysis-max-retries",
        type=int,
        default=10,
        help="attempts to fetch an Analysis' values before it completes as failed (upstream retries forever)",
    )
    group.add_argument(
        "--analysis-retry-interval",
        type=float,
        default=10.0,
        help="seconds before the first retry of an Analysis whose values could not all be fetched; doubled "
        "after each failure",
    )
    group.add_argument(
        "--analysis-max-retry-interval",
        type=float,
        default=300.0,
        help="cap of the Analysis retry delay (seconds)",
    )
    group.add_argument(
        "--lifecycle-workers", type=int, default=4, help="KeptnEvaluations/Analyses reconciled concurrently"
    )


def options_from_args(
    args: argparse.Namespace, *, server_namespace: str = "keptn-system", fetch_timeout: float = 10.0
) -> ControllerOptions:
    """The options from the flags `add_arguments` defined; `server_namespace` and `fetch_timeout`
    are `serve`'s core flags, handed over by the CLI (metrics_server/config.py)."""
    return ControllerOptions(
        enabled=args.lifecycle_controller,
        server_namespace=server_namespace,
        staleness_factor=STALENESS_FACTOR,
        analysis_max_retries=args.analysis_max_retries,
        analysis_retry_interval=args.analysis_retry_interval,
        analysis_max_retry_interval=args.analysis_max_retry_interval,
        fetch_timeout=fetch_timeout,
        workers=args.lifecycle_workers,
    )
