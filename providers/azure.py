"""Azure Monitor (`type: azure`, extra `[azure]`): platform metrics and Log Analytics KQL.

Query forms (see docs/providers-cloud.md):

- ``metrics:<resourceId>/<metricName>[:<Aggregation>]``, e.g.
  ``metrics:/subscriptions/S/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1/CPU:Maximum``
  (aggregation Average|Minimum|Maximum|Total|Count, default Average; the metric namespace is
  the resource type, e.g. ``Microsoft.Compute/virtualMachines``);
- ``logs:<workspaceId>:<KQL>``; ``$range`` and ``$step`` in the KQL become KQL timespans
  (``600s``) so a query can ``summarize ... by bin(TimeGenerated, $step)``;
- JSON: ``{"resourceId", "metric", "aggregation", "namespace", "filter"}`` for metrics or
  ``{"workspaceId", "query", "column"}`` for logs.

Logs value rule (deterministic): the column named by ``column``, else a column named
``value``, else the last numeric column; rows are timed by the first datetime column (one
sample per row); without a datetime column the result must have exactly one row.

targetServer: a region (``eastus``: metrics at ``https://eastus.metrics.monitor.azure.com``,
logs at ``https://api.loganalytics.io/v1``), a metrics endpoint URL, a Log Analytics URL
(``https://api.loganalytics.io``), or any other HTTPS URL serving both (metrics at the URL,
logs at ``<URL>/v1``).

Window: metrics instant = the newest non-null point of the last INSTANT_LOOKBACK_SECONDS at
PT1M; a range without step = one grain covering the range (smallest Azure grain >= range);
range+step = the smallest grain >= step. Logs: the timespan is the range (instant: the
query's own filters, no timespan).

Async: azure-core's aiohttp transport under `MetricsClient`/`LogsQueryClient` (aio) and the
aio credentials; both clients and the credential are built once and closed in `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from azure.core import exceptions as az_exc
from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential
from azure.monitor.query import LogsQueryPartialResult
from azure.monitor.query.aio import LogsQueryClient
from azure.monitor.querymetrics.aio import MetricsClient

from providers.base import Backend, BackendConfig, BackendError, QueryResult, Sample, Window, finite
from providers.sdkutil import CAFile, check_endpoint, scrub, whole_seconds

INSTANT_LOOKBACK_SECONDS = 600
GRAINS = (60, 300, 900, 1800, 3600, 21600, 43200, 86400)
AGGREGATIONS = {
    "average": "Average",
    "minimum": "Minimum",
    "maximum": "Maximum",
    "total": "Total",
    "count": "Count",
}
NUMERIC_TYPES = {"int", "long", "real", "decimal"}
DEFAULT_LOGS_ENDPOINT = "https://api.loganalytics.io/v1"

_REGION = re.compile(r"^[a-z][a-z0-9]+$")
_AGG_SUFFIX = re.compile(r":(average|minimum|maximum|total|count)$", re.IGNORECASE)


# azure-core logs every request and response (with headers) at INFO and azure-identity logs
# each token exchange at INFO (WARNING when it fails): per-query noise that floods the server
# log and breaks `keptn-metrics query`'s one-line error. Our BackendError already says what
# failed; the SDK's detail stays available with --log-level debug or a level set explicitly.
SDK_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity")


def quiet_sdk_logs() -> None:
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)


def grain(seconds: float) -> timedelta:
    """The smallest metrics time grain Azure accepts that covers `seconds` (capped at a day)."""
    for g in GRAINS:
        if seconds <= g:
            return timedelta(seconds=g)
    return timedelta(seconds=GRAINS[-1])


def namespace_of(resource_id: str) -> str:
    """`.../providers/Microsoft.Storage/storageAccounts/a/blobServices/default` -> the resource type."""
    head, sep, tail = resource_id.rpartition("/providers/")
    parts = [p for p in tail.split("/") if p]
    if not sep or not head or len(parts) < 3:
        raise BackendError(
            "azure resource id must look like /subscriptions/S/resourceGroups/RG/providers/NS/TYPE/NAME"
        )
    return "/".join([parts[0], *parts[1::2]])


def endpoints(target: str) -> tuple[str | None, str]:
    """targetServer -> (metrics endpoint or None, logs endpoint)."""
    text = target.strip().rstrip("/")
    if not text or text.lower() in ("default", "logs"):
        return None, DEFAULT_LOGS_ENDPOINT
    if _REGION.match(text):
        return f"https://{text}.metrics.monitor.azure.com", DEFAULT_LOGS_ENDPOINT
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BackendError("azure targetServer must be a region (eastus) or an https URL")
    base = f"{parts.scheme}://{parts.netloc}"
    if ".metrics.monitor." in parts.hostname:
        return base, DEFAULT_LOGS_ENDPOINT
    if "loganalytics" in parts.hostname:
        return None, base + (parts.path or "/v1")
    return base, base + "/v1"


def parse_query(query: str) -> dict[str, Any]:
    """Any accepted form -> {"kind": "metrics"|"logs", ...}."""
    text = query.strip()
    if text.startswith("{"):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise BackendError("azure query looks like JSON but does not parse") from None
        if not isinstance(doc, dict):
            raise BackendError("azure JSON query must be an object")
        if isinstance(doc.get("workspaceId"), str) and isinstance(doc.get("query"), str):
            return {
                "kind": "logs",
                "workspace": doc["workspaceId"],
                "kql": doc["query"],
                "column": doc.get("column"),
            }
        if isinstance(doc.get("resourceId"), str) and isinstance(doc.get("metric"), str):
            spec = {
                "kind": "metrics",
                "resource": doc["resourceId"],
                "metric": doc["metric"],
                "aggregation": str(doc.get("aggregation") or "Average"),
                "namespace": doc.get("namespace") or namespace_of(doc["resourceId"]),
                "filter": doc.get("filter"),
            }
        else:
            raise BackendError(
                'azure JSON query needs "resourceId" and "metric", or "workspaceId" and "query"'
            )
    elif text.lower().startswith("logs:"):
        workspace, sep, kql = text[5:].partition(":")
        if not sep or not workspace.strip() or not kql.strip():
            raise BackendError("azure logs query must be logs:<workspaceId>:<KQL>")
        return {"kind": "logs", "workspace": workspace.strip(), "kql": kql.strip(), "column": None}
    elif text.lower().startswith("metrics:"):
        body = text[8:].strip()
        aggregation = "Average"
        m = _AGG_SUFFIX.search(body)
        if m:
            aggregation, body = m.group(1), body[: m.start()]
        resource, _, metric = body.rpartition("/")
        if not resource.startswith("/subscriptions/") or not metric.strip():
            raise BackendError(
                "azure metrics query must be metrics:<resourceId>/<metricName>[:<Aggregation>]"
            )
        spec = {
            "kind": "metrics",
            "resource": resource,
            "metric": metric.strip(),
            "aggregation": aggregation,
            "namespace": namespace_of(resource),
            "filter": None,
        }
    else:
        raise BackendError("azure query must start with metrics: or logs:, or be a JSON object")
    agg = AGGREGATIONS.get(spec["aggregation"].lower())
    if agg is None:
        raise BackendError(
            f"azure aggregation {spec['aggregation'][:32]!r} is not one of {', '.join(AGGREGATIONS.values())}"
        )
    spec["aggregation"] = agg
    return spec


class AzureBackend(Backend):
    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        quiet_sdk_logs()
        self.metrics_endpoint, self.logs_endpoint = endpoints(config.target_server)
        client_id = config.secret_text("AZURE_CLIENT_ID")
        client_secret = config.secret_text("AZURE_CLIENT_SECRET")
        tenant = config.secret_text("AZURE_TENANT_ID")
        if client_secret and not (client_id and tenant):
            raise BackendError(
                "azure Secret with AZURE_CLIENT_SECRET also needs AZURE_CLIENT_ID and AZURE_TENANT_ID"
            )
        self._client_id, self._client_secret, self._tenant = client_id, client_secret, tenant
        self._authority = config.secret_text("AZURE_AUTHORITY_HOST")
        self._lock = asyncio.Lock()
        self._credential: Any = None
        self._metrics: MetricsClient | None = None
        self._logs: LogsQueryClient | None = None
        self._ca_file = CAFile("keptn-az-ca-")

    def _transport_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "connection_timeout": self.config.timeout,
            "read_timeout": self.config.timeout,
            "retry_total": 0,  # the evaluator retries with backoff; a hidden retry would hide the timeout
        }
        ca = self.config.secret.get("ca.crt")
        if self.config.insecure_skip_tls_verify:
            kwargs["connection_verify"] = False
        elif ca:
            kwargs["connection_verify"] = self._ca_file.get(ca)
        return kwargs

    def _get_credential(self) -> Any:
        if self._credential is None:
            kwargs = self._transport_kwargs()
            if self._authority:
                kwargs["authority"] = self._authority
            if self._client_secret:
                self._credential = ClientSecretCredential(
                    self._tenant or "", self._client_id or "", self._client_secret, **kwargs
                )
            else:  # workload identity (AZURE_FEDERATED_TOKEN_FILE), managed identity, environment
                if self._client_id:
                    kwargs["workload_identity_client_id"] = self._client_id
                    kwargs["managed_identity_client_id"] = self._client_id
                self._credential = DefaultAzureCredential(
                    exclude_interactive_browser_credential=True, **kwargs
                )
        return self._credential

    async def _metrics_client(self) -> MetricsClient:
        async with self._lock:
            if self._metrics is None:
                if self.metrics_endpoint is None:
                    raise BackendError(
                        "azure metrics queries need targetServer set to the resources' region"
                    )
                self._metrics = MetricsClient(
                    self.metrics_endpoint, self._get_credential(), **self._transport_kwargs()
                )
            return self._metrics

    async def _logs_client(self) -> LogsQueryClient:
        async with self._lock:
            if self._logs is None:
                self._logs = LogsQueryClient(
                    self._get_credential(), endpoint=self.logs_endpoint, **self._transport_kwargs()
                )
            return self._logs

    def _scrub(self, text: str) -> str:
        return scrub(text, self.redactor)

    def _error(self, exc: BaseException) -> BackendError:
        if isinstance(
            exc, TimeoutError | az_exc.ServiceRequestTimeoutError | az_exc.ServiceResponseTimeoutError
        ):
            return BackendError("azure monitor did not answer in time", retryable=True)
        if isinstance(exc, az_exc.ClientAuthenticationError) and self._from_identity(exc):
            # raised by the credential: no identity available, or Entra ID refused the client
            return BackendError(f"azure credentials failed: {self._identity_detail(exc)}", auth=True)
        if isinstance(exc, az_exc.HttpResponseError):
            status = exc.status_code or 0
            detail = ""
            if exc.error is not None:
                detail = f"{exc.error.code}: {exc.error.message}"
            elif exc.response is not None:
                with contextlib.suppress(Exception):
                    detail = exc.response.text()  # _scrub redacts, then cuts
            return BackendError(
                f"azure monitor answered HTTP {status}" + (f": {self._scrub(detail)}" if detail else ""),
                auth=status in (401, 403) or isinstance(exc, az_exc.ClientAuthenticationError),
                retryable=status == 429 or status >= 500,
            )
        if isinstance(exc, az_exc.ServiceRequestError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return BackendError("azure monitor: TLS verification failed (set ca.crt in the Secret?)")
        if isinstance(exc, az_exc.ServiceRequestError | az_exc.ServiceResponseError):
            return BackendError(f"azure monitor is unreachable ({type(exc).__name__})", retryable=True)
        if isinstance(exc, ValueError):
            return BackendError(f"azure query rejected: {self._scrub(str(exc))}")
        return BackendError(f"azure monitor: {type(exc).__name__}", retryable=True)

    @staticmethod
    def _from_identity(exc: az_exc.ClientAuthenticationError) -> bool:
        if exc.response is None:
            return True
        with contextlib.suppress(Exception):
            return "/oauth2/" in str(getattr(exc.response.request, "url", ""))
        return False

    def _identity_detail(self, exc: az_exc.ClientAuthenticationError) -> str:
        """Entra ID's error code and the first sentence of its description, or the class name."""
        if exc.response is not None:
            with contextlib.suppress(Exception):
                body = orjson.loads(exc.response.text())
                description = str(body.get("error_description", "")).split("\r\n")[0].split("\n")[0]
                return self._scrub(f"HTTP {exc.status_code} {body.get('error', '')}: {description}")
        lines = str(exc.message or "").strip().splitlines()
        return self._scrub(lines[0]) if lines else type(exc).__name__

    async def query(self, query: str, window: Window) -> QueryResult:
        spec = parse_query(query)
        endpoint = self.metrics_endpoint if spec["kind"] == "metrics" else self.logs_endpoint
        await check_endpoint(self.config, endpoint, "azure")
        try:
            coro = (
                self._query_metrics(spec, window)
                if spec["kind"] == "metrics"
                else self._query_logs(spec, window)
            )
            return await asyncio.wait_for(coro, self.config.timeout)
        except BackendError:
            raise
        except Exception as exc:
            raise self._error(exc) from None

    async def _query_metrics(self, spec: dict[str, Any], window: Window) -> QueryResult:
        client = await self._metrics_client()
        end = datetime.fromtimestamp(window.end if window.end is not None else time.time(), UTC)
        if window.is_instant:
            span, granularity = timedelta(seconds=INSTANT_LOOKBACK_SECONDS), timedelta(minutes=1)
        else:
            span = timedelta(seconds=float(window.range_seconds or 0))
            granularity = grain(window.step_seconds or span.total_seconds())
        results = await client.query_resources(
            resource_ids=[spec["resource"]],
            metric_namespace=spec["namespace"],
            metric_names=[spec["metric"]],
            timespan=(end - span, end),
            granularity=granularity,
            aggregations=[spec["aggregation"]],
            filter=spec["filter"],
        )
        field = spec["aggregation"].lower()
        series = [ts for r in results for m in r.metrics for ts in m.timeseries]
        with_data = [ts for ts in series if any(getattr(p, field) is not None for p in ts.data)]
        if not with_data:
            raise BackendError(
                f"azure metric {spec['metric']!r} returned no {spec['aggregation']} values in the window"
            )
        if len(with_data) > 1:
            raise BackendError(
                f"azure metric {spec['metric']!r} returned {len(with_data)} time series; "
                "narrow the filter or drop the dimension split"
            )
        points = [p for p in with_data[0].data if getattr(p, field) is not None]
        samples = sorted(
            Sample(p.timestamp.timestamp(), finite(float(getattr(p, field)), "azure metric value"))
            for p in points
        )
        raw = orjson.dumps(
            {
                "metric": spec["metric"],
                "aggregation": spec["aggregation"],
                "data": [[s.timestamp, s.value] for s in samples],
            }
        )
        return QueryResult(tuple(samples), raw)

    async def _query_logs(self, spec: dict[str, Any], window: Window) -> QueryResult:
        client = await self._logs_client()
        kql = spec["kql"]
        if window.range_seconds:
            kql = kql.replace("$range", whole_seconds(window.range_seconds))
        if window.step_seconds:
            kql = kql.replace("$step", whole_seconds(window.step_seconds))
        if "$range" in kql or "$step" in kql:
            raise BackendError("azure logs query uses $range/$step but the KeptnMetric has no range/step")
        end_ts = window.end if window.end is not None else time.time()
        end = datetime.fromtimestamp(end_ts, UTC)
        timespan = (
            None if window.is_instant else (end - timedelta(seconds=float(window.range_seconds or 0)), end)
        )
        response = await client.query_workspace(
            spec["workspace"], kql, timespan=timespan, server_timeout=max(1, int(self.config.timeout))
        )
        if isinstance(response, LogsQueryPartialResult):
            detail = response.partial_error.message if response.partial_error else "partial result"
            raise BackendError(f"azure logs query returned a partial result: {self._scrub(detail)}")
        if not response.tables:
            raise BackendError("azure logs query returned no table")
        table = response.tables[0]
        names = [str(c) for c in table.columns]
        types = [str(t).lower() for t in (table.columns_types or [])] or [""] * len(names)
        col = self._value_column(names, types, spec.get("column"))
        time_col = next((i for i, t in enumerate(types) if t == "datetime"), None)
        rows = [list(r) for r in table.rows]
        if not rows:
            raise BackendError("azure logs query returned no rows")
        samples: list[Sample] = []
        if time_col is None:
            if len(rows) > 1:
                raise BackendError(
                    f"azure logs query returned {len(rows)} rows without a datetime column; "
                    "summarize to one row or add a time column"
                )
            if rows[0][col] is not None:
                samples.append(Sample(end_ts, self._number(rows[0][col])))
        else:
            for row in rows:
                when, value = row[time_col], row[col]
                if value is None or when is None:
                    continue
                ts = (
                    when.timestamp()
                    if isinstance(when, datetime)
                    else datetime.fromisoformat(str(when)).timestamp()
                )
                samples.append(Sample(ts, self._number(value)))
            stamps = [s.timestamp for s in samples]
            if len(set(stamps)) != len(stamps):
                raise BackendError(
                    "azure logs query returned several rows per timestamp (several series); "
                    "aggregate them in KQL"
                )
        if not samples:
            raise BackendError("azure logs query returned only null values")
        samples.sort()
        raw = orjson.dumps({"columns": names, "rows": rows[:1000]}, default=str)
        return QueryResult(tuple(samples), raw)

    @staticmethod
    def _value_column(names: list[str], types: list[str], wanted: Any) -> int:
        if wanted:
            if wanted not in names:
                raise BackendError(f"azure logs result has no column {str(wanted)[:64]!r}")
            return names.index(wanted)
        lowered = [n.lower() for n in names]
        if "value" in lowered:
            return lowered.index("value")
        numeric = [i for i, t in enumerate(types) if t in NUMERIC_TYPES]
        if not numeric:
            raise BackendError('azure logs result has no numeric column; name one with "column"')
        return numeric[-1]

    @staticmethod
    def _number(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise BackendError(f"azure logs value {str(value)[:32]!r} is not a number")
        try:
            return finite(float(value), "azure logs value")
        except ValueError:
            raise BackendError(f"azure logs value {str(value)[:32]!r} is not a number") from None

    async def close(self) -> None:
        async with self._lock:
            clients = [c for c in (self._metrics, self._logs, self._credential) if c is not None]
            self._metrics = self._logs = self._credential = None
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        self._ca_file.remove()


def create(config: BackendConfig) -> Backend:
    return AzureBackend(config)
