"""Amazon CloudWatch (`type: cloudwatch`, extra `[aws]`): GetMetricData through aiobotocore.

Query forms (see docs/providers-cloud.md):

- compact: ``Namespace/MetricName{Dim=Value,...}:Statistic``, e.g.
  ``AWS/EC2/CPUUtilization{InstanceId=i-0abc}:Average``. The namespace is everything before
  the last ``/``; dimensions and statistic are optional (statistic defaults to ``Average``).
- JSON: one MetricDataQuery object, a list of them, or ``{"MetricDataQueries": [...]}``
  exactly as the GetMetricData API takes them (metric math included). ``Id`` is filled in
  when missing. Exactly one query may return data (``ReturnData`` true, the default).

Window: an instant query looks back INSTANT_LOOKBACK_SECONDS with a 60 s period and yields
the newest datapoint; a range without step asks for one period spanning the whole range
(the statistic over the range) unless the JSON sets its own Period; range+step sets the
Period to the step (rounded to a period CloudWatch accepts).

Why aiobotocore: the evaluator is one asyncio loop; aiobotocore is botocore (same
signing, credential chain including IRSA web identity, retries, endpoints) on aiohttp, so
a slow CloudWatch never holds a thread and the pool is bounded by `max_connections`.
A thread pool around boto3 would cost a thread per in-flight query and could not be
cancelled on timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore import exceptions as boto_exc

from providers.base import (
    Backend,
    BackendConfig,
    BackendError,
    QueryResult,
    Sample,
    Window,
    finite,
)
from providers.egress import PolicyResolver
from providers.sdkutil import CAFile, check_endpoint, scrub

INSTANT_LOOKBACK_SECONDS = 600
DEFAULT_PERIOD = 60
MAX_PAGES = 20
HIGH_RESOLUTION_PERIODS = (1, 5, 10, 20, 30)

AUTH_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "MissingAuthenticationToken",
    "NotAuthorized",
    "SignatureDoesNotMatch",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
}
THROTTLE_CODES = {
    "LimitExceededException",
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "ServiceUnavailable",
}

_COMPACT = re.compile(
    r"^(?P<ns>.+)/(?P<metric>[^/{}:]+?)"
    r"(?:\{(?P<dims>[^{}]*)\})?"
    r"(?::(?P<stat>[A-Za-z][A-Za-z0-9.()%:]*))?$"
)
_XML_ERROR = re.compile(r"<Code>([^<]+)</Code>(?:\s*<Message>([^<]*)</Message>)?")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_ENDPOINT_REGION = re.compile(r"^monitoring(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


def round_period(seconds: float) -> int:
    """The smallest period CloudWatch accepts that covers `seconds`: 1/5/10/20/30 or n*60."""
    if seconds <= 0:
        return DEFAULT_PERIOD
    for allowed in HIGH_RESOLUTION_PERIODS:
        if seconds <= allowed:
            return allowed
    return int(-(-seconds // 60) * 60)


def parse_compact(query: str) -> dict[str, Any]:
    """`Namespace/Metric{Dim=Val,...}:Stat` -> one MetricDataQuery (without Period)."""
    m = _COMPACT.match(query.strip())
    if not m:
        raise BackendError(
            "cloudwatch query must be JSON MetricDataQueries or Namespace/MetricName{Dim=Value}:Statistic"
        )
    dims = []
    for part in (m["dims"] or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise BackendError(f"cloudwatch dimension {part.strip()[:64]!r} is not Name=Value")
        dims.append({"Name": name.strip(), "Value": value.strip()})
    metric: dict[str, Any] = {"Namespace": m["ns"].strip(), "MetricName": m["metric"].strip()}
    if dims:
        metric["Dimensions"] = dims
    return {"Id": "q0", "MetricStat": {"Metric": metric, "Stat": m["stat"] or "Average"}}


def parse_query(query: str) -> list[dict[str, Any]]:
    """Either form -> MetricDataQueries with Ids."""
    text = query.strip()
    if not text:
        raise BackendError("cloudwatch query is empty")
    if text[0] in "[{":
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise BackendError("cloudwatch query looks like JSON but does not parse") from None
        if isinstance(doc, Mapping) and "MetricDataQueries" in doc:
            doc = doc["MetricDataQueries"]
        items = [doc] if isinstance(doc, Mapping) else doc
        if not isinstance(items, list) or not items or not all(isinstance(i, Mapping) for i in items):
            raise BackendError("cloudwatch JSON query must be a MetricDataQuery object or a non-empty list")
        queries = [dict(item) for item in items]
        for i, q in enumerate(queries):
            q.setdefault("Id", f"q{i}")
            if "MetricStat" not in q and "Expression" not in q:
                raise BackendError(f"cloudwatch query {q['Id']!r} needs MetricStat or Expression")
        return queries
    return [parse_compact(text)]


def apply_window(queries: list[dict[str, Any]], window: Window) -> tuple[datetime, datetime]:
    """Set Periods from the window and return (StartTime, EndTime)."""
    end = window.end if window.end is not None else time.time()
    if window.is_instant:
        start, period, override = end - INSTANT_LOOKBACK_SECONDS, DEFAULT_PERIOD, False
    elif window.step_seconds:
        start, override = end - float(window.range_seconds or 0), True
        period = round_period(window.step_seconds)
    else:
        rng = float(window.range_seconds or 0)
        start, period, override = end - rng, round_period(rng), False
    for q in queries:
        if "MetricStat" in q:
            stat = dict(q["MetricStat"])
            if override or "Period" not in stat:
                stat["Period"] = period
            q["MetricStat"] = stat
        elif override or "Period" not in q:
            q["Period"] = period
    return datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)


def region_and_endpoint(config: BackendConfig) -> tuple[str | None, str | None]:
    """targetServer is a region, an endpoint URL, or empty/`default` (Secret or pod default)."""
    target = config.target_server.strip().rstrip("/")
    secret_region = config.secret_text("AWS_REGION") or config.secret_text("AWS_DEFAULT_REGION")
    if not target or target.lower() in ("default", "aws"):
        return secret_region, None
    if _REGION.match(target):
        return target, None
    parts = urlsplit(target if "://" in target else f"https://{target}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError("cloudwatch targetServer must be a region (us-east-1) or an endpoint URL")
    m = _ENDPOINT_REGION.match(parts.hostname)
    region = m.group(1) if m else secret_region
    return region or "us-east-1", f"{parts.scheme}://{parts.netloc}"


class CloudWatchBackend(Backend):
    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.region, self.endpoint = region_and_endpoint(config)
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._ca_file = CAFile("keptn-cw-ca-")
        key_id = config.secret_text("AWS_ACCESS_KEY_ID")
        secret = config.secret_text("AWS_SECRET_ACCESS_KEY")
        if bool(key_id) != bool(secret):
            raise BackendError("cloudwatch Secret needs both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        self._credentials = (
            {
                "aws_access_key_id": key_id,
                "aws_secret_access_key": secret,
                "aws_session_token": config.secret_text("AWS_SESSION_TOKEN") or None,
            }
            if key_id
            else {}
        )

    def _where(self) -> str:
        return self.endpoint or f"region {self.region or 'default'}"

    def _verify(self) -> bool | str | None:
        if self.config.insecure_skip_tls_verify:
            return False
        ca = self.config.secret.get("ca.crt")
        if not ca:
            return None
        return self._ca_file.get(ca)

    async def _get_client(self) -> Any:
        async with self._lock:
            if self._client is None:
                session = AioSession()
                cfg = AioConfig(
                    connect_timeout=self.config.timeout,
                    read_timeout=self.config.timeout,
                    retries={"mode": "standard", "total_max_attempts": 2},
                    max_pool_connections=self.config.max_connections,
                    user_agent_extra="keptn-metrics",
                    connector_args={  # the egress policy at connect time (IMDS credentials use their own)
                        "keepalive_timeout": 12,
                        "resolver": PolicyResolver(self.config.egress),
                        "socket_factory": self.config.egress.socket_factory,
                    },
                )
                self._client = await self._stack.enter_async_context(
                    session.create_client(
                        "cloudwatch",
                        region_name=self.region,
                        endpoint_url=self.endpoint,
                        verify=self._verify(),
                        config=cfg,
                        **self._credentials,
                    )
                )
            return self._client

    def _scrub(self, text: str) -> str:
        return scrub(text, self.redactor)

    def _error(self, exc: BaseException) -> BackendError:
        where = self._where()
        if isinstance(exc, TimeoutError | boto_exc.ReadTimeoutError | boto_exc.ConnectTimeoutError):
            return BackendError(f"cloudwatch at {where} did not answer in time", retryable=True)
        if isinstance(exc, boto_exc.NoCredentialsError | boto_exc.PartialCredentialsError):
            return BackendError(
                "cloudwatch: no AWS credentials (Secret AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or IRSA)",
                auth=True,
            )
        if isinstance(exc, boto_exc.CredentialRetrievalError):
            return BackendError("cloudwatch: the pod's AWS credentials could not be retrieved", auth=True)
        if isinstance(exc, boto_exc.NoRegionError):
            return BackendError("cloudwatch: no region (targetServer, Secret AWS_REGION or AWS_REGION env)")
        if isinstance(exc, boto_exc.ParamValidationError):
            return BackendError(f"cloudwatch: invalid query: {self._scrub(str(exc))}")
        if isinstance(exc, boto_exc.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "Unknown"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = str(err.get("Message", ""))
            xml = _XML_ERROR.search(message)
            if xml:  # an endpoint answered the Query protocol's XML to our CBOR/JSON request
                code, message = xml.group(1), xml.group(2) or ""
            message = self._scrub(message)
            return BackendError(
                f"cloudwatch at {where} answered {code}" + (f": {message}" if message else ""),
                auth=code in AUTH_CODES or status in (401, 403),
                retryable=code in THROTTLE_CODES or status == 429 or status >= 500,
            )
        if isinstance(exc, boto_exc.EndpointConnectionError | boto_exc.ConnectionError):
            return BackendError(f"cloudwatch at {where} is unreachable", retryable=True)
        if isinstance(exc, boto_exc.BotoCoreError):
            return BackendError(f"cloudwatch at {where}: {self._scrub(str(exc))}", retryable=True)
        return BackendError(f"cloudwatch at {where}: {type(exc).__name__}", retryable=True)

    async def query(self, query: str, window: Window) -> QueryResult:
        queries = parse_query(query)
        start, end = apply_window(queries, window)
        await check_endpoint(self.config, self.endpoint, "cloudwatch")
        try:
            results = await asyncio.wait_for(self._fetch(queries, start, end), self.config.timeout)
        except BackendError:
            raise
        except Exception as exc:
            raise self._error(exc) from None
        return self._to_result(queries, results)

    async def _fetch(
        self, queries: list[dict[str, Any]], start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        client = await self._get_client()
        merged: dict[str, dict[str, Any]] = {}
        token: str | None = None
        for _ in range(MAX_PAGES):
            kwargs: dict[str, Any] = {
                "MetricDataQueries": queries,
                "StartTime": start,
                "EndTime": end,
                "ScanBy": "TimestampAscending",
            }
            if token:
                kwargs["NextToken"] = token
            answer = await client.get_metric_data(**kwargs)
            for res in answer.get("MetricDataResults", []):
                if res.get("StatusCode") in ("Forbidden", "InternalError"):
                    detail = "; ".join(str(m.get("Value", "")) for m in res.get("Messages", []))
                    raise BackendError(
                        f"cloudwatch query {res.get('Id')!r} failed: {res['StatusCode']}"
                        + (f": {self._scrub(detail)}" if detail else ""),
                        auth=res["StatusCode"] == "Forbidden",
                        retryable=res["StatusCode"] == "InternalError",
                    )
                slot = merged.setdefault(
                    res["Id"],
                    {"Id": res["Id"], "Label": res.get("Label", ""), "Timestamps": [], "Values": []},
                )
                slot["Timestamps"].extend(res.get("Timestamps", []))
                slot["Values"].extend(res.get("Values", []))
            token = answer.get("NextToken")
            if not token:
                break
        return list(merged.values())

    def _to_result(self, queries: Sequence[Mapping[str, Any]], results: list[dict[str, Any]]) -> QueryResult:
        returning = [q["Id"] for q in queries if q.get("ReturnData", True)]
        if len(returning) > 1:
            raise BackendError(
                f"cloudwatch query returns {len(returning)} series ({', '.join(map(str, returning))}); "
                "set ReturnData false on all but one or combine them with a metric math expression"
            )
        wanted = [r for r in results if r["Id"] in returning] if returning else results
        with_data = [r for r in wanted if r["Values"]]
        if not with_data:
            raise BackendError("cloudwatch query returned no datapoints in the window")
        if len(with_data) > 1:
            raise BackendError(
                f"cloudwatch query returned {len(with_data)} series; aggregate them in the query"
            )
        res = with_data[0]
        samples = sorted(
            Sample(ts.timestamp(), finite(float(v), "cloudwatch datapoint"))
            for ts, v in zip(res["Timestamps"], res["Values"], strict=False)
        )
        raw = orjson.dumps(
            {
                "Id": res["Id"],
                "Label": res["Label"],
                "Timestamps": [s.timestamp for s in samples],
                "Values": [s.value for s in samples],
            }
        )
        return QueryResult(tuple(samples), raw)

    async def close(self) -> None:
        async with self._lock:
            self._client = None
            await self._stack.aclose()
            self._stack = contextlib.AsyncExitStack()
        self._ca_file.remove()


def create(config: BackendConfig) -> Backend:
    return CloudWatchBackend(config)
