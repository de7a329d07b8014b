"""A scriptable loopback server speaking the Prometheus HTTP API (instant and range).

Used where a test (or benchmark) must control values, latency and failures precisely:
each query string maps to a value, a list of values, or an error; requests are counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
from aiohttp import web


@dataclass
class PromAPI:
    values: dict[str, float | str | list[float]] = field(default_factory=dict)
    latency: float = 0.0
    fail_with: dict[str, int] = field(default_factory=dict)  # query -> HTTP status
    default: float | None = None  # answer for unknown queries (None: empty vector)
    calls: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/v1/query", self.handle)
        app.router.add_route("*", "/api/v1/query_range", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        query = params.get("query", "")
        self.calls[query] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1
        if query in self.fail_with:
            status = self.fail_with[query]
            body = {"status": "error", "errorType": "internal", "error": f"scripted failure {status}"}
            return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
        value = self.values.get(query, self.default)
        now = time.time()
        if request.path.endswith("query_range"):
            points = value if isinstance(value, list) else [value] if value is not None else []
            start, step = float(params["start"]), float(params["step"])
            result = (
                [{"metric": {}, "values": [[start + i * step, str(v)] for i, v in enumerate(points)]}]
                if points
                else []
            )
            data = {"resultType": "matrix", "result": result}
        else:
            result = [] if value is None else [{"metric": {}, "value": [now, str(value)]}]
            data = {"resultType": "vector", "result": result}
        return web.Response(
            body=orjson.dumps({"status": "success", "data": data}), content_type="application/json"
        )
