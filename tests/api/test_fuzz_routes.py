"""Property-based: no request to any route of either port, and no call of a gRPC method,
gets a 5xx other than 503-by-design, and the server keeps answering (issue 10)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzz_targets import (
    GRPC_ACCEPTABLE,
    GRPC_METHODS,
    HEADER_NAMES,
    METHODS,
    METRICS_ROUTES,
    NAMES,
    NAMESPACES,
    QUERY_KEYS,
    RES,
    RESOURCES,
    SECURE_ROUTES,
    VERSIONS,
    FuzzServer,
    acceptable,
    fuzz_server,
    grpc_call,
    grpc_channel,
    raw_request,
    send,
)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)


@pytest.fixture(scope="module")
def server() -> Iterator[FuzzServer]:
    with fuzz_server() as s:
        yield s


#: numbers past Python's int-conversion limit (4,300 digits) and past int64
huge_number = st.tuples(
    st.sampled_from(["", "-", "+"]),
    st.sampled_from([1, 19, 20, 4300, 4301, 5000, 6000]),
    st.sampled_from("19"),
).map(lambda t: t[0] + t[2] * t[1])


def segment() -> st.SearchStrategy[str]:
    """A path segment: a known value, or any text (percent-encoded, or raw where harmless)."""
    wild = st.text(max_size=80)
    return st.one_of(
        st.sampled_from(NAMESPACES + NAMES),
        wild.map(lambda t: quote(t, safe="")),
        wild.map(lambda t: quote(t, safe="/%*.:@!$&'()+,;=")),
        huge_number,
    )


selectors = st.one_of(
    st.tuples(st.sampled_from(["tier>", "tier<", "app=web,tier>", "tier>1,tier<"]), huge_number).map("".join),
    st.sampled_from(["tier in (3,4)", "!tier", "app=web,tier!=2", "tier", "tier notin ()", "a b", "(", "="]),
    st.text(max_size=200),
)


@st.composite
def targets(draw: st.DrawFn, routes: tuple[str, ...]) -> str:
    # mostly valid requests with a few fuzzed parts reach the deep code; fully random ones the rest
    value_routes = tuple(r for r in routes if "{metric}" in r or "{name}" in r)
    template = draw(st.one_of(st.sampled_from(value_routes), st.sampled_from(routes)))

    fuzz_path = draw(st.booleans())  # else: a valid path, fuzzed query and headers

    def part(valid: st.SearchStrategy[str], fuzzed: st.SearchStrategy[str]) -> str:
        return draw(st.one_of(valid, valid, fuzzed) if fuzz_path else valid)

    path = template.format(
        ns=part(st.just("shop"), segment()),
        name=part(st.sampled_from(["cpu", "*", "stale", "failing"]), segment()),
        metric=part(st.sampled_from(["cpu", "stale", "failing"]), segment()),
        res=part(st.just(RES), st.one_of(st.sampled_from(RESOURCES), segment())),
        ver=part(
            st.just("v1beta1") if "external" in template else st.sampled_from(VERSIONS[:2]),
            st.one_of(st.sampled_from(VERSIONS), segment()),
        ),
    )
    if not fuzz_path and "{metric}" in template and draw(st.booleans()):
        # one selector on a valid request: what reaches label matching
        key = draw(st.sampled_from(["labelSelector", "metricLabelSelector"]))
        return f"{path}?{key}={quote(draw(selectors), safe='')}"
    params = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(QUERY_KEYS[:2]), st.sampled_from(QUERY_KEYS), st.text(max_size=20)),
                st.one_of(
                    st.text(max_size=200),
                    st.tuples(st.sampled_from(["tier>", "tier<", "a=b,tier>"]), huge_number).map("".join),
                    st.sampled_from(["tier in (3,4)", "!tier", "app=web,tier!=2", "a b", "(", "=", "x" * 70]),
                ),
            ),
            max_size=4,
        )
    )
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
    return path + (f"?{query}" if query else "")


header_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=300
)
headers = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(HEADER_NAMES), st.from_regex(r"X-[A-Za-z0-9-]{1,30}", fullmatch=True)),
        header_value,
    ),
    max_size=5,
)


def check(
    server: FuzzServer, port: int, tls: Any, method: str, target: str, hdrs: list[tuple[str, str]]
) -> None:
    status = send(port, raw_request(method, target, hdrs), tls)
    assert acceptable(status), (status, method, target[:300], hdrs)


WILDCARD = f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/{RES}/*/cpu"
EXTERNAL = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/cpu"
HUGE = quote("tier>" + "9" * 5000)


@SETTINGS
@given(method=st.sampled_from(METHODS), target=targets(SECURE_ROUTES), hdrs=headers)
@example("GET", f"{WILDCARD}?labelSelector={HUGE}", [])  # the reproduced 500s
@example("GET", f"{WILDCARD}?metricLabelSelector={HUGE}", [])
@example("GET", f"{EXTERNAL}?labelSelector={HUGE}", [])
@example(
    "GET", f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/{RES}/cpu/cpu", [("X-Remote-User", "\xff")]
)
def test_secure_port_never_fails(
    server: FuzzServer, method: str, target: str, hdrs: list[tuple[str, str]]
) -> None:
    check(server, server.secure_port, server.client_tls(), method, target, hdrs)


@SETTINGS
@given(method=st.sampled_from(METHODS), target=targets(METRICS_ROUTES), hdrs=headers)
def test_metrics_port_never_fails(
    server: FuzzServer, method: str, target: str, hdrs: list[tuple[str, str]]
) -> None:
    check(server, server.metrics_port, None, method, target, hdrs)


@SETTINGS
@given(
    method=st.sampled_from(GRPC_METHODS),
    name=st.text(max_size=50),
    namespace=st.one_of(st.sampled_from(NAMESPACES), st.text(max_size=70)),
    metric=st.one_of(st.sampled_from(NAMES), st.text(max_size=300)),
    target=st.one_of(
        st.sampled_from(["1", "0", "-1", "nan", "inf", "1e309", "2.5", ""]), st.text(max_size=20)
    ),
)
def test_grpc_methods_never_fail(
    server: FuzzServer, method: str, name: str, namespace: str, metric: str, target: str
) -> None:
    with grpc_channel(server) as channel:
        meta = {"keptnMetricName": metric, "keptnMetricNamespace": namespace, "targetValue": target}
        code = grpc_call(channel, method, name, namespace, meta)
    assert code in GRPC_ACCEPTABLE, (code, method, name, namespace, metric, target)


def test_server_still_answers_after_fuzzing(server: FuzzServer) -> None:
    assert send(server.secure_port, raw_request("GET", "/healthz", []), server.client_tls()) == 200
    assert send(server.metrics_port, raw_request("GET", "/healthz", []), None) == 200
    with grpc_channel(server) as channel:
        assert grpc_call(channel, "IsActive", "so", "shop", {"keptnMetricName": "cpu"}) == "OK"
