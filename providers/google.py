"""Google Cloud Monitoring (`type: google`, extra `[gcp]`): ListTimeSeries and MQL over gRPC.

Query forms (see docs/providers-cloud.md):

- a monitoring filter, e.g. ``metric.type="custom.googleapis.com/queue/depth" AND
  resource.labels.zone="europe-west1-b"`` -> ListTimeSeries;
- a JSON object ``{"filter": ..., "aggregation": {...}, "secondaryAggregation": {...},
  "project": "other-project"}`` with the API's own camelCase field names (``"aggregation":
  {"perSeriesAligner": "ALIGN_RATE", "crossSeriesReducer": "REDUCE_SUM"}``);
- ``mql:<Monitoring Query Language>`` -> QueryTimeSeries (first value column).

PromQL is served by Google's Prometheus-compatible HTTP endpoint, not by this module.

targetServer: ``PROJECT`` or ``projects/PROJECT`` (monitoring.googleapis.com over TLS),
``https://HOST[:PORT]/projects/PROJECT`` (another TLS endpoint) or
``grpc://HOST:PORT/projects/PROJECT`` (plaintext, no credentials: emulators and tests).

Window: instant looks back INSTANT_LOOKBACK_SECONDS and yields the newest point; a range
without step is the interval [end-range, end] (with an aligner in the query and no
alignmentPeriod, the period is the whole range, i.e. one point); range+step sets
aggregation.alignmentPeriod to the step (aligner ALIGN_MEAN unless the query names one).

Async: the gapic `MetricServiceAsyncClient` over one `grpc.aio` channel shared with the
`QueryServiceAsyncClient`; no threads except the one-off `google.auth.default()` lookup.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import google.auth
import grpc
import orjson
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcAsyncIOTransport
from google.cloud.monitoring_v3.services.query_service.transports import QueryServiceGrpcAsyncIOTransport
from google.oauth2 import service_account

from providers.base import Backend, BackendConfig, BackendError, QueryResult, Sample, Window, finite
from providers.httpclient import iso_time
from providers.sdkutil import check_endpoint, scrub, whole_seconds

INSTANT_LOOKBACK_SECONDS = 600
DEFAULT_HOST = "monitoring.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/monitoring.read",)
MAX_PAGES = 20

_PROJECT = re.compile(r"^(?:projects/)?([A-Za-z0-9][A-Za-z0-9_.:-]*)$")
AUTH_ERRORS = (gexc.Unauthenticated, gexc.PermissionDenied, gexc.Unauthorized, gexc.Forbidden)
RETRYABLE_ERRORS = (
    gexc.ResourceExhausted,
    gexc.TooManyRequests,
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.Unknown,
)


def parse_target(target: str) -> tuple[str, str, bool]:
    """targetServer -> (host[:port], project, plaintext)."""
    text = target.strip().rstrip("/")
    host, plaintext, path = DEFAULT_HOST, False, text
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("grpc", "https") or not parts.hostname:
            raise BackendError(
                "google targetServer must be PROJECT, projects/PROJECT or https|grpc://HOST:PORT/projects/PROJECT"
            )
        plaintext = parts.scheme == "grpc"
        host = parts.netloc if parts.port else f"{parts.hostname}:{443 if not plaintext else 80}"
        path = parts.path.strip("/")
    m = _PROJECT.match(path)
    if not m or m.group(1) == "projects":
        raise BackendError("google targetServer must name a project: PROJECT or projects/PROJECT")
    return host, m.group(1), plaintext


async def _first_pages(pager: Any, field: str) -> list[Any]:
    """The items under `field` of at most MAX_PAGES pages of a google-api-core async pager."""
    items: list[Any] = []
    pages = 0
    async for page in pager.pages:
        items.extend(getattr(page, field))
        pages += 1
        if pages >= MAX_PAGES:
            break
    return items


def build_list_request(
    query: str, project: str, window: Window, now: float
) -> monitoring_v3.ListTimeSeriesRequest:
    """A filter or JSON query plus the window -> ListTimeSeriesRequest (validated by protobuf)."""
    text = query.strip()
    if not text:
        raise BackendError("google query is empty")
    doc: dict[str, Any]
    if text.startswith("{"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise BackendError("google query looks like JSON but does not parse") from None
        if not isinstance(parsed, Mapping) or not isinstance(parsed.get("filter"), str):
            raise BackendError('google JSON query needs a "filter" string')
        doc = dict(parsed)
    else:
        doc = {"filter": text}
    project = str(doc.pop("project", project)).removeprefix("projects/")
    end = window.end if window.end is not None else now
    lookback = INSTANT_LOOKBACK_SECONDS if window.is_instant else float(window.range_seconds or 0)
    aggregation = dict(doc.get("aggregation") or {})
    if window.step_seconds:
        aggregation["alignmentPeriod"] = whole_seconds(window.step_seconds)
        aggregation.setdefault("perSeriesAligner", "ALIGN_MEAN")
    elif aggregation.get("perSeriesAligner") and "alignmentPeriod" not in aggregation:
        aggregation["alignmentPeriod"] = whole_seconds(lookback)
    if aggregation:
        doc["aggregation"] = aggregation
    doc.update(
        name=f"projects/{project}",
        interval={"startTime": iso_time(end - lookback), "endTime": iso_time(end)},
        view="FULL",
    )
    try:
        return monitoring_v3.ListTimeSeriesRequest.from_json(orjson.dumps(doc).decode())
    except Exception as exc:  # protobuf's ParseError and friends
        detail = " ".join(str(exc).split())[:200]
        raise BackendError(f"google query is not a valid ListTimeSeries request: {detail}") from None


def _typed_value(value: monitoring_v3.TypedValue) -> float:
    kind = monitoring_v3.TypedValue.pb(value).WhichOneof("value")
    if kind == "double_value":
        return finite(value.double_value, "google point")
    if kind == "int64_value":
        return float(value.int64_value)
    if kind == "bool_value":
        return 1.0 if value.bool_value else 0.0
    if kind == "distribution_value":
        if not value.distribution_value.count:
            raise BackendError("google point is an empty distribution")
        return finite(value.distribution_value.mean, "google distribution mean")
    raise BackendError(f"google point of kind {kind or 'unset'} is not a number")


def _timestamp(value: Any) -> float:
    return float(value.timestamp()) if value is not None else 0.0


class GoogleBackend(Backend):
    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.host, self.project, self.plaintext = parse_target(config.target_server)
        self._credentials: Any = None
        key = config.secret_key or "credentials.json"
        sa_json = config.secret.get(key) if config.secret else None
        if sa_json and not self.plaintext:
            try:
                info = orjson.loads(sa_json)
                self._credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
            except Exception:
                raise BackendError(
                    f"google Secret key {key!r} is not a service-account JSON key", auth=True
                ) from None
        self._lock = asyncio.Lock()
        self._channel: grpc.aio.Channel | None = None
        self._metrics: monitoring_v3.MetricServiceAsyncClient | None = None
        self._mql: monitoring_v3.QueryServiceAsyncClient | None = None

    async def _clients(
        self,
    ) -> tuple[monitoring_v3.MetricServiceAsyncClient, monitoring_v3.QueryServiceAsyncClient]:
        async with self._lock:
            if self._metrics is None or self._mql is None:
                options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
                if self.plaintext:
                    channel = grpc.aio.insecure_channel(self.host, options=options)
                else:
                    credentials = self._credentials
                    if credentials is None:  # workload identity / ADC; may probe the metadata server
                        credentials, _ = await asyncio.to_thread(google.auth.default, scopes=SCOPES)
                    ca = self.config.secret.get("ca.crt")
                    channel = MetricServiceGrpcAsyncIOTransport.create_channel(
                        self.host,
                        credentials=credentials,
                        scopes=SCOPES,
                        ssl_credentials=grpc.ssl_channel_credentials(root_certificates=ca) if ca else None,
                        options=options,
                    )
                self._channel = channel
                self._metrics = monitoring_v3.MetricServiceAsyncClient(
                    transport=MetricServiceGrpcAsyncIOTransport(host=self.host, channel=channel)
                )
                self._mql = monitoring_v3.QueryServiceAsyncClient(
                    transport=QueryServiceGrpcAsyncIOTransport(host=self.host, channel=channel)
                )
            return self._metrics, self._mql

    def _error(self, exc: BaseException) -> BackendError:
        where = f"google project {self.project}"
        if isinstance(exc, TimeoutError | gexc.DeadlineExceeded):
            return BackendError(f"{where}: Cloud Monitoring did not answer in time", retryable=True)
        if isinstance(exc, auth_exc.DefaultCredentialsError):
            return BackendError(
                f"{where}: no Google credentials (Secret service-account JSON or workload identity)",
                auth=True,
            )
        if isinstance(exc, auth_exc.GoogleAuthError):
            return BackendError(
                f"{where}: Google credentials were rejected ({type(exc).__name__})", auth=True
            )
        if isinstance(exc, gexc.GoogleAPICallError):
            message = scrub(exc.message or "", self.redactor)
            code = exc.grpc_status_code.name if exc.grpc_status_code is not None else str(exc.code)
            return BackendError(
                f"{where}: Cloud Monitoring answered {code}" + (f": {message}" if message else ""),
                auth=isinstance(exc, AUTH_ERRORS),
                retryable=isinstance(exc, RETRYABLE_ERRORS),
            )
        return BackendError(f"{where}: {type(exc).__name__}", retryable=True)

    async def query(self, query: str, window: Window) -> QueryResult:
        text = query.strip()
        now = datetime.now(UTC).timestamp()
        is_mql = text.lower().startswith("mql:")
        request = None if is_mql else build_list_request(text, self.project, window, now)
        await check_endpoint(self.config, self.host, "google")
        try:
            if is_mql:
                return await asyncio.wait_for(self._query_mql(text[4:].strip(), window), self.config.timeout)
            assert request is not None
            return await asyncio.wait_for(self._list(request), self.config.timeout)
        except BackendError:
            raise
        except Exception as exc:
            raise self._error(exc) from None

    async def _list(self, request: monitoring_v3.ListTimeSeriesRequest) -> QueryResult:
        metrics, _ = await self._clients()
        pager = await metrics.list_time_series(request=request, retry=None, timeout=self.config.timeout)
        with_points = [s for s in await _first_pages(pager, "time_series") if s.points]
        if not with_points:
            raise BackendError("google query returned no time series with points in the window")
        if len(with_points) > 1:
            raise BackendError(
                f"google query returned {len(with_points)} time series; narrow the filter or add a "
                'crossSeriesReducer ("aggregation": {"crossSeriesReducer": "REDUCE_SUM"})'
            )
        ts = with_points[0]
        samples = sorted(Sample(_timestamp(p.interval.end_time), _typed_value(p.value)) for p in ts.points)
        return QueryResult(tuple(samples), monitoring_v3.TimeSeries.to_json(ts).encode())

    async def _query_mql(self, mql: str, window: Window) -> QueryResult:
        if not mql:
            raise BackendError("google mql: query is empty")
        lowered = mql.lower()
        if not window.is_instant and "within" not in lowered:
            mql += f" | within {whole_seconds(float(window.range_seconds or 0))}"
        if window.step_seconds and "every" not in lowered:
            mql += f" | every {whole_seconds(window.step_seconds)}"
        _, client = await self._clients()
        request = monitoring_v3.QueryTimeSeriesRequest(name=f"projects/{self.project}", query=mql)
        pager = await client.query_time_series(request=request, retry=None, timeout=self.config.timeout)
        with_points = [d for d in await _first_pages(pager, "time_series_data") if d.point_data]
        if not with_points:
            raise BackendError("google mql query returned no points")
        if len(with_points) > 1:
            raise BackendError(
                f"google mql query returned {len(with_points)} time series; aggregate them in MQL"
            )
        points = with_points[0].point_data
        if any(not p.values for p in points):
            raise BackendError("google mql query returned a point without values")
        samples = sorted(
            Sample(_timestamp(p.time_interval.end_time), _typed_value(p.values[0])) for p in points
        )
        return QueryResult(tuple(samples), monitoring_v3.TimeSeriesData.to_json(with_points[0]).encode())

    async def close(self) -> None:
        async with self._lock:
            channel, self._channel, self._metrics, self._mql = self._channel, None, None, None
        if channel is not None:
            await channel.close()


def create(config: BackendConfig) -> Backend:
    return GoogleBackend(config)
