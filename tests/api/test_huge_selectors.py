"""Bad input never 500s (issue 10, item 5: `labelSelector=tier>` + 5,000 digits answered 500
with a traceback; Python refuses to convert such a string to int)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from apiservice.selectors import SelectorError, int64, parse_selector
from tests.api.conftest import World

RES = "keptnmetrics.metrics.keptn.sh"
HUGE = "tier>" + "9" * 5000
HUGE_NEGATIVE = "tier<-" + "1" * 5000


@pytest.mark.parametrize(
    "path",
    [
        f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/{RES}/*/cpu?labelSelector={quote(HUGE)}",
        f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/{RES}/*/cpu?metricLabelSelector={quote(HUGE)}",
        f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/shop/{RES}/cpu/cpu?metricLabelSelector={quote(HUGE)}",
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/cpu?labelSelector={quote(HUGE)}",
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/cpu?labelSelector={quote(HUGE_NEGATIVE)}",
    ],
)
async def test_huge_numbers_in_selectors_are_400(start: Any, world: World, path: str) -> None:
    world.add("shop", "cpu", 2.5, labels={"tier": "3"})
    api = await start()
    status, data, _ = await api.get(path)
    assert status == 400, data
    assert data["kind"] == "Status" and data["reason"] == "BadRequest"
    assert len(data["message"]) < 1000  # the message quotes an excerpt, not 5,000 digits
    assert (await api.get("/healthz"))[0] == 200


def test_bounds_are_int64_like_kubernetes() -> None:
    assert int64("9223372036854775807") == 2**63 - 1
    assert int64("-9223372036854775808") == -(2**63)
    assert int64("9223372036854775808") is None and int64("9" * 5000) is None and int64("1e3") is None
    with pytest.raises(SelectorError):
        parse_selector("tier>9223372036854775808")
    sel = parse_selector("tier>2")
    assert (
        sel.matches({"tier": "3"})
        and not sel.matches({"tier": "9" * 5000})
        and not sel.matches({"tier": "x"})
    )
