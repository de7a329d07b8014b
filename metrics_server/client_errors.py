"""The aiohttp server logger: malformed requests are a rate-limited one-line warning.

aiohttp answers a request its parser rejects (bad request line, header too long, invalid
characters, ...) with 400 and logs it through its server logger, by default at ERROR with
a traceback that echoes the offending bytes: a client could write megabytes of log per
second. `ClientErrorLogger` is passed as that logger (`logger=` of `web.Server` /
`web.AppRunner`): parser rejections become at most one WARNING per `interval` seconds,
with the count of rejections since the last one and a bounded excerpt of the reason;
every other record (our own bugs) is logged as aiohttp meant it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from metrics_server.excerpt import excerpt

DEFAULT_INTERVAL = 10.0


class ClientErrorLogger(logging.LoggerAdapter):
    """aiohttp's server logger with client errors summarised (see the module docstring)."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        server: str = "server",
    ) -> None:
        super().__init__(logger or logging.getLogger("aiohttp.server"), {})
        self.interval = interval
        self.server = server
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        exc = _client_error(kwargs.get("exc_info"))
        if exc is None:
            super().log(level, msg, *args, **kwargs)
            return
        self._client_error(exc, args)

    def _client_error(self, exc: HttpProcessingError, args: tuple[Any, ...]) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            self._suppressed += 1
            return
        earlier, self._suppressed, self._last = self._suppressed, 0, now
        remote = excerpt(args[0], 64) if args else "?"
        reason = excerpt(" ".join(str(exc.message or type(exc).__name__).split()), 160)
        more = f" ({earlier} more since the last report)" if earlier else ""
        self.logger.warning(
            "%s: rejected a malformed request from %s with %s: %s%s",
            self.server,
            remote,
            exc.code or 400,
            reason,
            more,
        )


def _client_error(exc_info: Any) -> HttpProcessingError | None:
    if exc_info is True:
        exc_info = sys.exc_info()[1]
    elif isinstance(exc_info, tuple):
        exc_info = exc_info[1]
    return exc_info if isinstance(exc_info, HttpProcessingError) else None
