"""Flags of Kubernetes mode (`keptn-metrics serve` without --manifests)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _namespaces(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Kubernetes mode")
    g.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig to reach the API server (default: in-cluster service account, else $KUBECONFIG, "
        "else ~/.kube/config)",
    )
    g.add_argument(
        "--namespaces",
        type=_namespaces,
        default=[],
        metavar="A,B",
        help="watch KeptnMetrics and KeptnMetricsProviders only in these namespaces (default: all); the "
        "server namespace should be included when cluster-wide providers live there",
    )
    g.add_argument(
        "--status-refresh-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="an unchanged value refreshes KeptnMetric.status.lastUpdated at most this often (default 60); "
        "changed values and errors are written at once",
    )
    g.add_argument(
        "--status-write-qps",
        type=float,
        default=20.0,
        help="global limit of status writes and Events per second (default 20, burst --status-write-burst)",
    )
    g.add_argument(
        "--status-write-burst", type=int, default=40, help="token-bucket burst of status writes (40)"
    )
    g.add_argument(
        "--secret-cache-ttl",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="re-read a provider's Secret after this long (default 300; also re-read after an auth error)",
    )
    g.add_argument(
        "--leader-elect",
        type=_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="elect one replica (Lease) to fetch and write status; every replica serves (default true)",
    )
    g.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("POD_NAMESPACE") or "keptn-system",
        help="namespace of the Lease (default $POD_NAMESPACE or keptn-system)",
    )
    g.add_argument("--leader-election-lease-name", default="keptn-metrics-leader", help="Lease name")
    g.add_argument(
        "--leader-election-lease-duration",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how long standbys wait after the last renewal before taking over (default 15)",
    )
    g.add_argument(
        "--leader-election-renew-deadline",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="the leader gives up (stops fetching) if it could not renew for this long (default 10)",
    )
    g.add_argument(
        "--leader-election-retry-period",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="time between renewals and acquisition attempts (default 2)",
    )
    g.add_argument(
        "--shards",
        type=int,
        default=0,
        metavar="N",
        help="split the fetch work into N shards owned through one Lease each and spread over the live "
        "replicas, which stream their values to each other (docs/scaling.md); every replica must use the "
        "same N. 0 (default): one elected leader fetches everything",
    )
    g.add_argument(
        "--shard-lease-prefix",
        default="keptn-metrics",
        help="name prefix of the shard and member Leases (<prefix>-shard-<i>, <prefix>-member-<id>)",
    )
    g.add_argument(
        "--peer-port",
        type=int,
        default=8444,
        help="port of the peer endpoint that streams values between replicas over mutually authenticated "
        "TLS (with --shards; 0 picks a free port)",
    )
    g.add_argument(
        "--peer-advertise-address",
        default=os.environ.get("POD_IP") or "",
        help="address the other replicas reach this one's peer endpoint at (default $POD_IP, else the "
        "bind address)",
    )


@dataclass(frozen=True)
class KubeOptions:
    """Kubernetes mode's part of `ServeConfig`: the API server, status writes, leader election, shards."""

    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    status_refresh_interval: float = 60.0
    status_write_qps: float = 20.0
    status_write_burst: int = 40
    secret_cache_ttl: float = 300.0
    leader_elect: bool = True
    leader_election_namespace: str = "keptn-system"
    leader_election_lease_name: str = "keptn-metrics-leader"
    leader_election_lease_duration: float = 15.0
    leader_election_renew_deadline: float = 10.0
    leader_election_retry_period: float = 2.0
    shards: int = 0
    shard_lease_prefix: str = "keptn-metrics"
    peer_port: int = 8444
    peer_advertise_address: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> KubeOptions:
        """The options from the flags `add_arguments` defined (the CLI boundary)."""
        return cls(
            kubeconfig=args.kubeconfig,
            namespaces=tuple(args.namespaces or ()),
            status_refresh_interval=args.status_refresh_interval,
            status_write_qps=args.status_write_qps,
            status_write_burst=args.status_write_burst,
            secret_cache_ttl=args.secret_cache_ttl,
            leader_elect=args.leader_elect,
            leader_election_namespace=args.leader_election_namespace,
            leader_election_lease_name=args.leader_election_lease_name,
            leader_election_lease_duration=args.leader_election_lease_duration,
            leader_election_renew_deadline=args.leader_election_renew_deadline,
            leader_election_retry_period=args.leader_election_retry_period,
            shards=args.shards,
            shard_lease_prefix=args.shard_lease_prefix,
            peer_port=args.peer_port,
            peer_advertise_address=args.peer_advertise_address or "",
        )
