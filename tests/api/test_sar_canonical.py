"""Authorization on canonical names (issue 10, item 7: alias spellings reached the
SubjectAccessReview as spelled, so a rule for keptnmetrics.metrics.keptn.sh did not apply)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import KubeReviews, World

RES = "keptnmetrics.metrics.keptn.sh"


def rbac_for_canonical_only(spec: dict[str, Any]) -> tuple[bool, str]:
    """A Role granting get on custom.metrics.k8s.io keptnmetrics.metrics.keptn.sh/* and nothing else."""
    attrs = spec.get("resourceAttributes") or {}
    ok = attrs.get("group") == "custom.metrics.k8s.io" and attrs.get("resource") == RES
    return ok, "" if ok else "no rule"


@pytest.mark.parametrize("spelling", [RES, "keptnmetrics.metrics.sh", "keptnmetrics"])
@pytest.mark.parametrize("scope", ["namespaces/shop/{r}/cpu/cpu", "namespaces/shop/{r}/*/cpu"])
async def test_every_alias_is_authorized_as_the_canonical_resource(
    start: Any, kube: KubeReviews, world: World, spelling: str, scope: str
) -> None:
    world.add("shop", "cpu", 2.5)
    kube.policy = rbac_for_canonical_only
    api = await start("--authorization-mode", "Webhook")
    status, data, _ = await api.get(f"/apis/custom.metrics.k8s.io/v1beta2/{scope.format(r=spelling)}")
    assert status == 200, data
    assert kube.sars[-1]["resourceAttributes"]["resource"] == RES
