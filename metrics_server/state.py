"""What we know about each KeptnMetric's value: the last good value, its age, the last error.

This is the explicit cache every consumer reads (the APIs, the lifecycle controller,
our own /metrics). The evaluator owns it on the leader; on other replicas it is fed from
the watched `KeptnMetric.status`, so every replica can serve.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from metrics_server.model import KeptnMetric, ObjectKey

RAW_VALUE_LIMIT = 1024 * 1024  # rawValue is capped at 1 MiB, as Keptn's status field allows


def format_value(value: float) -> str:
    """The shortest decimal that reads back as `value`: plain notation for 1e-4 <= |value| < 1e21,
    exponent form (`1e+21`, `1e-05`) outside. Not Go's `%v`, which uses exponent form from 1e+06."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError("non-finite values are never formatted")
    if value == 0:
        return "0"
    exact = Decimal(repr(value))  # repr gives the shortest round-tripping digits
    sign, digits, exponent = exact.as_tuple()
    assert isinstance(exponent, int)
    while len(digits) > 1 and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    lead = len(digits) + exponent - 1
    prefix = "-" if sign else ""
    if -4 <= lead < 21:
        text = format(exact, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{prefix}{mantissa}e{'-' if lead < 0 else '+'}{abs(lead):02d}"


def rfc3339(ts: float) -> str:
    """Kubernetes metav1.Time wire form: seconds precision, UTC, `Z`."""
    return dt.datetime.fromtimestamp(int(ts), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class IntervalResult:
    value: str
    range: dict[str, Any]
    last_updated: float
    err_msg: str = ""

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": self.value,
            "range": self.range,
            "lastUpdated": rfc3339(self.last_updated),
        }
        if self.err_msg:
            out["errMsg"] = self.err_msg
        return out


@dataclass
class MetricState:
    """Value and health of one KeptnMetric. `value` is always the last *good* value."""

    key: ObjectKey
    fetch_interval: float
    value: float | None = None
    value_text: str = ""
    raw: bytes = b""
    last_success: float | None = None  # when the current value was fetched
    last_attempt: float | None = None
    error: str = ""  # empty while the last attempt succeeded
    consecutive_failures: int = 0
    interval_results: deque[IntervalResult] = field(default_factory=deque)
    labels: dict[str, str] = field(default_factory=dict)
    #: extra age allowed for a value adopted from a written status: the leader refreshes an
    #: unchanged status's lastUpdated only every --status-refresh-interval (0 for own fetches)
    staleness_grace: float = 0.0

    def age(self, now: float) -> float | None:
        return None if self.last_success is None else max(0.0, now - self.last_success)

    def status(self) -> dict[str, Any]:
        """The KeptnMetric `.status` for this state, in upstream's field names."""
        out: dict[str, Any] = {"value": self.value_text}
        if self.raw:
            out["rawValue"] = base64.b64encode(self.raw[:RAW_VALUE_LIMIT]).decode()
        if self.last_attempt is not None:
            out["lastUpdated"] = rfc3339(self.last_attempt)
        out["errMsg"] = self.error
        # ours, additive (kubectl printer columns): upstream's lastUpdated also moves on failures
        if self.last_success is not None:
            out["valueFetchedAt"] = rfc3339(self.last_success)
        out["fetchFailed"] = bool(self.error)
        if self.interval_results:
            out["intervalResults"] = [r.to_status() for r in self.interval_results]
        return out


STALENESS_FACTOR = 3.0  # default bound: a value older than 3 x fetchIntervalSeconds is stale


class Unavailable(Exception):
    """A metric whose value must not be served now (none yet, not finite, or stale); says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def staleness_bound(state: MetricState, max_staleness: float | None) -> float:
    """Seconds after its fetch a value is still served: `max_staleness`, or STALENESS_FACTOR x
    the fetch interval, plus the state's grace (values adopted from a written status)."""
    base = max_staleness if max_staleness is not None else STALENESS_FACTOR * state.fetch_interval
    return base + state.staleness_grace


def servable_value(
    state: MetricState | None, what: str, now: float, max_staleness: float | None
) -> tuple[float, float]:
    """(value, fetch time) of a value every API may serve now, else Unavailable saying why.

    The bound is `max_staleness` seconds, or STALENESS_FACTOR x the metric's fetch interval.
    """
    if state is None or state.value is None or state.last_success is None:
        err = state.error if state is not None and state.error else "not fetched yet"
        raise Unavailable(f"no value yet for {what}: {err}")
    if not math.isfinite(state.value):
        raise Unavailable(f"the value of {what} is not a finite number ({state.value})")
    bound = staleness_bound(state, max_staleness)
    age = now - state.last_success
    if age > bound:
        err = f": last error: {state.error}" if state.error else ""
        raise Unavailable(
            f"the value of {what} is stale: fetched {age:.0f}s ago, more than the {bound:.0f}s allowed{err}"
        )
    return state.value, state.last_success


ChangeListener = Callable[[MetricState | None, ObjectKey], None]


class MetricStates:
    """The explicit cache of metric states, keyed by (namespace, name)."""

    def __init__(self, follower_grace: float = 0.0) -> None:
        self._states: dict[ObjectKey, MetricState] = {}
        self._listeners: list[ChangeListener] = []
        #: staleness grace for values adopted from status (see MetricState.staleness_grace)
        self.follower_grace = follower_grace
        #: --max-staleness (None: STALENESS_FACTOR x interval), for /metrics' staleness bound gauge
        self.max_staleness: float | None = None

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: object) -> bool:
        return key in self._states

    def get(self, key: ObjectKey) -> MetricState | None:
        return self._states.get(key)

    def values(self) -> list[MetricState]:
        return list(self._states.values())

    def ensure(self, key: ObjectKey, fetch_interval: float) -> MetricState:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = MetricState(key=key, fetch_interval=fetch_interval)
        state.fetch_interval = fetch_interval
        return state

    def remove(self, key: ObjectKey) -> None:
        if self._states.pop(key, None) is not None:
            self._notify(None, key)

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def changed(self, state: MetricState) -> None:
        self._notify(state, state.key)

    def _notify(self, state: MetricState | None, key: ObjectKey) -> None:
        for listener in list(self._listeners):
            listener(state, key)

    def load_status(self, metric: KeptnMetric) -> MetricState:
        """Adopt a metric's written status (replicas that do not fetch serve from it)."""
        state = self.ensure(metric.key, metric.fetch_interval_seconds)
        state.labels = dict(metric.meta.labels)
        status = metric.status or {}
        text = status.get("value")
        updated = parse_rfc3339(str(status.get("lastUpdated", "")))
        err = str(status.get("errMsg") or "")
        state.error = err
        state.last_attempt = updated
        if isinstance(text, str) and text and not err:
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                state.value, state.value_text, state.last_success = number, text, updated
                state.staleness_grace = self.follower_grace
        raw = status.get("rawValue")
        if isinstance(raw, str):
            try:
                state.raw = base64.b64decode(raw)
            except ValueError:
                state.raw = b""
        self.changed(state)
        return state
