"""`serve` flags of the outbound connection policy (providers/egress.py)."""

from __future__ import annotations

import argparse
import os

from providers.egress import EgressPolicy, parse_networks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("outbound connections (SSRF protection, see docs/security.md)")
    group.add_argument(
        "--egress-allow",
        action="append",
        default=[],
        metavar="CIDR[,CIDR...]",
        help="networks providers may connect to although denied by default (link-local, metadata, "
        "loopback in a pod); repeatable",
    )
    group.add_argument(
        "--egress-deny",
        action="append",
        default=[],
        metavar="CIDR[,CIDR...]",
        help="networks providers must never connect to; wins over --egress-allow; repeatable",
    )
    group.add_argument(
        "--egress-loopback",
        choices=("auto", "allow", "deny"),
        default="auto",
        help="connections to loopback (127.0.0.0/8, ::1): auto = denied when running in a pod in "
        "Kubernetes mode (loopback is the pod itself), allowed otherwise (default auto)",
    )


def policy_from_args(args: argparse.Namespace, *, kubernetes_mode: bool) -> EgressPolicy:
    loopback = args.egress_loopback
    if loopback == "auto":
        deny_loopback = kubernetes_mode and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    else:
        deny_loopback = loopback == "deny"
    return EgressPolicy.for_mode(
        kubernetes_mode=deny_loopback,
        allow=parse_networks(args.egress_allow or [], "--egress-allow"),
        deny=parse_networks(args.egress_deny or [], "--egress-deny"),
    )
