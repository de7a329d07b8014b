"""Go-style durations (`30s`, `5m`, `1h30m`, `1.5h`, `300ms`) as Keptn's CRDs use them."""

from __future__ import annotations

import re

_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_WHOLE = re.compile(r"^[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")


class DurationError(ValueError):
    """A string that Go's time.ParseDuration would reject."""


def parse_duration(text: str) -> float:
    """Return seconds for a Go duration string, exactly the forms Go accepts ("0" included)."""
    if not isinstance(text, str):
        raise DurationError(f"duration must be a string, got {type(text).__name__}")
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0.0
    if not _WHOLE.match(s):
        raise DurationError(f"invalid duration {text!r} (expected Go form such as 30s, 5m, 1h30m)")
    sign = -1.0 if s.startswith("-") else 1.0
    total = sum(float(num) * _UNITS[unit] for num, unit in _PART.findall(s.lstrip("+-")))
    return sign * total


def format_duration(seconds: float) -> str:
    """Format seconds the way Go's Duration.String() does for whole seconds (`1h30m0s`, `5m0s`)."""
    if seconds == 0:
        return "0s"
    neg = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        ms = seconds * 1000
        out = f"{ms:g}ms"
    else:
        h, rem = divmod(seconds, 3600)
        m, s = divmod(rem, 60)
        sec = f"{s:g}s"
        if h:
            out = f"{int(h)}h{int(m)}m{sec}"
        elif m:
            out = f"{int(m)}m{sec}"
        else:
            out = sec
    return "-" + out if neg else out
