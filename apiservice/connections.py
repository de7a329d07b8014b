"""Connection hygiene for both HTTP ports: what a slow or hostile client may hold.

aiohttp alone waits forever for a TLS handshake and for the headers of a first request
(slowloris), and accepts connections without bound. `GuardedTCPSite` adds, per port:

- a TLS handshake timeout (asyncio's `ssl_handshake_timeout`, like Go's TLSHandshakeTimeout);
- a request-header timeout: a new connection must deliver a complete request head
  (`\\r\\n\\r\\n`) in time or is closed (Go's ReadHeaderTimeout). Later requests on a
  kept-alive connection are bounded by aiohttp's keep-alive timeout, which closes a
  connection that is waiting for its next request for longer, partial data or not;
- a bound on concurrent connections: past it a new connection gets `503` and is closed,
  so the process never runs out of file descriptors and /healthz of a healthy replica
  answers as soon as the slow clients are timed out.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any

from aiohttp import web

from metrics_server.startup import StartupError

REJECTED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    tls_handshake_timeout: float = 10.0
    request_header_timeout: float = 10.0
    keep_alive_timeout: float = 30.0
    max_connections: int = 4096


@dataclass
class ConnectionStats:
    """Counters per site (tests and /metrics readers)."""

    active: int = 0
    rejected: int = 0
    header_timeouts: int = 0
    peak: int = 0


def add_arguments(group: Any) -> None:
    """Flags of both HTTP ports (the gRPC scaler has its own bounds in keda_grpc)."""
    d = ConnectionLimits()
    group.add_argument(
        "--tls-handshake-timeout",
        type=float,
        default=d.tls_handshake_timeout,
        help=f"seconds a client has to complete the TLS handshake (default {d.tls_handshake_timeout:g})",
    )
    group.add_argument(
        "--request-header-timeout",
        type=float,
        default=d.request_header_timeout,
        help="seconds a new connection has to send a complete request head"
        f" (default {d.request_header_timeout:g})",
    )
    group.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=d.keep_alive_timeout,
        help=f"seconds an idle kept-alive connection stays open (default {d.keep_alive_timeout:g})",
    )
    group.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help=f"concurrent connections per port; more get 503 (default {d.max_connections})",
    )


def limits_from_args(args: argparse.Namespace) -> ConnectionLimits:
    """The limits from the flags `add_arguments` defined (the CLI boundary)."""
    return ConnectionLimits(
        tls_handshake_timeout=max(0.1, float(args.tls_handshake_timeout)),
        request_header_timeout=max(0.1, float(args.request_header_timeout)),
        keep_alive_timeout=max(0.1, float(args.keep_alive_timeout)),
        max_connections=max(1, int(args.max_connections)),
    )


async def listen(site: web.BaseSite, flag: str) -> None:
    """Start `site`; a port that cannot be bound (taken, no permission) is a `StartupError`
    naming the address and the flag that chose it."""
    try:
        await site.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StartupError(f"cannot listen on {site.name} ({flag}): {reason}") from exc


class _Guard(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol: counts, bounds and times the request head."""

    def __init__(self, factory: Any, limits: ConnectionLimits, stats: ConnectionStats) -> None:
        self._factory = factory
        self._limits = limits
        self._stats = stats
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stats = self._stats
        if stats.active >= self._limits.max_connections:
            stats.rejected += 1
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(REJECTED)
            transport.close()
            return
        stats.active += 1
        stats.peak = max(stats.peak, stats.active)
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._limits.request_header_timeout, self._expire)
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def _expire(self) -> None:
        self._timer = None
        self._stats.header_timeouts += 1
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._timer is not None:
            window = self._tail + data
            if b"\r\n\r\n" in window:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = window[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stats.active -= 1
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class GuardedTCPSite(web.TCPSite):
    """A TCPSite with the handshake timeout, header timeout and connection bound above."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        *,
        limits: ConnectionLimits,
        ssl_context: SSLContext | None = None,
        backlog: int = 1024,
        shutdown_timeout: float = 60.0,
    ) -> None:
        super().__init__(
            runner, host, port, ssl_context=ssl_context, backlog=backlog, shutdown_timeout=shutdown_timeout
        )
        self.limits = limits
        self.stats = ConnectionStats()

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            lambda: _Guard(server, self.limits, self.stats),
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self.limits.tls_handshake_timeout if self._ssl_context else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:  # pragma: no cover - a listening TCP server always has a socket
            self._bound_port = self._port
