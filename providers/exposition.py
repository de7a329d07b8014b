"""Parsing Prometheus/OpenMetrics text expositions into samples, by sample name.

Pure functions, importable in a worker process: `index_samples` is what the openmetrics
provider runs off the serving event loop (see providers/scrape.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

SampleRow = tuple[dict[str, str], float, float | None]  # labels, value, timestamp
Index = dict[str, list[SampleRow]]


class ExpositionError(ValueError):
    """The endpoint answered something that is not a valid exposition."""


def index_samples(body: bytes, names: Iterable[str]) -> Index:
    """The samples of every name in `names` (others are skipped), parsed from one scrape.

    Format detection as Prometheus does it: `# EOF` at the end means OpenMetrics.
    """
    wanted = frozenset(names)
    text = body.decode("utf-8", errors="replace")
    parse = parse_openmetrics if text.rstrip().endswith("# EOF") else parse_prometheus
    found: Index = {name: [] for name in wanted}
    try:
        for family in parse(text):
            for sample in family.samples:
                rows = found.get(sample.name)
                if rows is not None:
                    ts = float(sample.timestamp) if sample.timestamp is not None else None
                    rows.append((dict(sample.labels), float(sample.value), ts))
    except ValueError as exc:
        raise ExpositionError(str(exc)[:120]) from None
    return found
