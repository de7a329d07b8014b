"""Outbound connection policy: which addresses a provider may connect to (SSRF protection).

A KeptnMetricsProvider's `targetServer` is chosen by whoever may create one in a namespace;
without a policy it could point the server at the cloud's instance metadata service and,
through the `http` provider and `rawValue`, read what the pod's identity can fetch there.

The policy is applied where the connection is made: `socket_factory` of aiohttp's connector
sees the address actually being connected to (after DNS, for every redirect, for IP
literals), so DNS rebinding cannot get around it; `PolicyResolver` refuses the well-known
metadata host names before they are resolved. Built-in denials name their rule; an
operator's `--egress-allow` lifts built-in denials for the networks it lists, and
`--egress-deny` adds denials that always win. See docs/security.md, "Outbound connections".
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MARKER = "refused by the egress policy"


@dataclass(frozen=True)
class Rule:
    network: Network
    name: str  # what the rule protects, shown in the error


def _rules(*pairs: tuple[str, str]) -> tuple[Rule, ...]:
    return tuple(Rule(ipaddress.ip_network(net), name) for net, name in pairs)


#: Denied by default in every mode.
METADATA_RULES = _rules(
    ("169.254.169.254/32", "cloud instance metadata (AWS, Azure, GCP, OpenStack, Oracle)"),
    ("100.100.100.200/32", "Alibaba Cloud instance metadata"),
    ("fd00:ec2::254/128", "AWS instance metadata over IPv6"),
    ("fd00:ec2::23/128", "EKS Pod Identity agent over IPv6"),
    ("169.254.0.0/16", "IPv4 link-local (metadata, ECS/EKS credential agents, node-local services)"),
    ("fe80::/10", "IPv6 link-local"),
)
#: Denied by default in Kubernetes mode only: in a pod, loopback is the pod itself (sidecar
#: admin ports, our own ports); local mode reads its own /metrics in the embedded example.
LOOPBACK_RULES = _rules(
    ("127.0.0.0/8", "loopback (the server's own pod)"),
    ("::1/128", "loopback (the server's own pod)"),
    ("0.0.0.0/8", "the unspecified address (reaches loopback)"),
    ("::/128", "the unspecified address (reaches loopback)"),
)
METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
    }
)


class EgressDenied(OSError):
    """A connection the policy refuses; its message names the address and the rule."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)  # strerror: what aiohttp shows in its own errors

    def __str__(self) -> str:
        return str(self.strerror)


def parse_networks(values: Iterable[str], flag: str) -> tuple[Network, ...]:
    """CIDRs (or single addresses) from repeated/comma-separated flag values."""
    out: list[Network] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"{flag}: {part!r} is not an IP network such as 10.0.0.0/8") from None
    return tuple(out)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _normalize(address: Address) -> Address:
    """IPv4 addresses embedded in IPv6 (mapped, 6to4, NAT64) are judged as the IPv4 they reach."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


@dataclass(frozen=True)
class EgressPolicy:
    """Built-in denials, minus the operator's allowed networks, plus the operator's denied ones."""

    builtin: tuple[Rule, ...] = METADATA_RULES
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    deny_hosts: frozenset[str] = field(default=METADATA_HOSTS)

    @classmethod
    def for_mode(
        cls, *, kubernetes_mode: bool, allow: Sequence[Network] = (), deny: Sequence[Network] = ()
    ) -> EgressPolicy:
        """`kubernetes_mode`: running in a pod, where loopback is the pod itself (denied too)."""
        builtin = METADATA_RULES + (LOOPBACK_RULES if kubernetes_mode else ())
        return cls(builtin=builtin, allow=tuple(allow), deny=tuple(deny))

    def denied_address(self, host: str) -> str | None:
        """Why connecting to IP `host` is refused, or None if it is allowed (non-IPs: None)."""
        try:
            address = _normalize(ipaddress.ip_address(host.split("%", 1)[0]))
        except ValueError:
            return None
        for net in self.deny:
            if address.version == net.version and address in net:
                return f"{net} is in --egress-deny"
        if any(address.version == net.version and address in net for net in self.allow):
            return None
        for rule in self.builtin:
            if address.version == rule.network.version and address in rule.network:
                return f"{rule.network} is denied by default: {rule.name}; allow it with --egress-allow"
        return None

    def denied_host(self, host: str) -> str | None:
        name = host.rstrip(".").lower()
        if name in self.deny_hosts:
            return f"{name} is a cloud metadata host name, denied by default"
        return None

    def check(self, host: str) -> None:
        """Raise EgressDenied for a refused host name or IP address."""
        reason = self.denied_host(host) or self.denied_address(host)
        if reason is not None:
            raise EgressDenied(f"connection to {host} {MARKER}: {reason}")

    def socket_factory(self, addr_info: Any) -> socket.socket:
        """aiohttp/aiohappyeyeballs socket factory: the last check before connect()."""
        family, type_, proto, _, sockaddr = addr_info
        self.check(str(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)


DEFAULT_POLICY = EgressPolicy()


class PolicyResolver(AbstractResolver):
    """aiohttp's resolver, refusing metadata host names before any DNS query."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        reason = self.policy.denied_host(host)
        if reason is not None:
            raise EgressDenied(f"connection to {host} {MARKER}: {reason}")
        return await self.inner.resolve(host, port, family)

    async def close(self) -> None:
        await self.inner.close()


def is_egress_denial(exc: BaseException | None) -> bool:
    return exc is not None and (isinstance(exc, EgressDenied) or MARKER in str(exc))


def egress_reason(exc: BaseException) -> str:
    """The policy's message out of aiohttp's wrapping (several addresses: the first denial)."""
    text = str(exc)
    start = text.find("connection to ")
    if start < 0:
        return text
    end = text.find("), ", start)  # aiohappyeyeballs joins several errors as "Multiple exceptions: ..."
    return text[start:] if end < 0 else text[start:end]
