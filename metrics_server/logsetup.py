"""Logging: `--log-format json|text`, `--log-level`. JSON lines for log pipelines in clusters."""

from __future__ import annotations

import logging
import sys
import time

import orjson

from metrics_server.redact import REGISTRY


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info or record.exc_text:
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return orjson.dumps(entry).decode()


#: Libraries whose DEBUG (or INFO) records carry request/response headers or bodies, which
#: hold credentials: Secrets read from the API server, callers' bearer tokens in TokenReview
#: bodies, providers' Authorization headers and SigV4 signatures. They are dropped below
#: the given level whatever --log-level says (the level of the logger itself may be changed
#: by the library, so the handler's filter enforces it).
QUIET_LOGGERS: dict[str, int] = {
    "kubernetes_asyncio": logging.INFO,  # client.rest logs every response body at DEBUG
    "client": logging.INFO,  # kubernetes_asyncio Configuration's "package_logger"
    "kubernetes": logging.INFO,
    "aiohttp.client": logging.INFO,
    "aiohttp.internal": logging.INFO,
    "urllib3": logging.INFO,
    "botocore": logging.INFO,
    "aiobotocore": logging.INFO,
    "boto3": logging.INFO,
    "s3transfer": logging.INFO,
    "azure": logging.WARNING,  # azure-core's HttpLoggingPolicy logs headers at INFO
    "msal": logging.WARNING,
    "google": logging.INFO,
    "google.auth": logging.WARNING,
    "grpc": logging.INFO,
    "hpack": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
}


def _is_client_error(record: logging.LogRecord) -> bool:
    if record.name != "aiohttp.server" or not record.exc_info:
        return False
    from aiohttp.http_exceptions import HttpProcessingError

    exc = record.exc_info[1]
    return isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500


def _quiet_level(name: str) -> int:
    level = 0
    for prefix, floor in QUIET_LOGGERS.items():
        if name == prefix or name.startswith(prefix + "."):
            level = max(level, floor)
    return level


class RedactingFilter(logging.Filter):
    """Drops the libraries' verbose records and masks every live provider credential.

    Runs on the handler, so it sees every record of every logger (ours and third-party),
    at every level, after formatting of the message and before it is written.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < _quiet_level(record.name):
            return False
        if _is_client_error(record):
            # a malformed request is the client's problem, answered 400: one debug line, no
            # traceback (anyone could fill the log with them otherwise)
            if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
                return False
            exc = record.exc_info[1] if record.exc_info else None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg, record.args = f"bad request: {' '.join(str(exc).split())[:200]}", None
            record.exc_info = record.exc_text = None
        message = record.getMessage()
        clean = REGISTRY(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = REGISTRY(record.exc_text)
        return True


def configure(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name, floor in QUIET_LOGGERS.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(floor, logger.getEffectiveLevel()))
