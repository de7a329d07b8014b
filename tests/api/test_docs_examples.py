"""The requests docs/api.md shows answer as it says (issue 9, item 6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.api.conftest import World

API_DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
#: every path of a `kubectl get --raw` or curl (port 6443) example
EXAMPLES = sorted(
    set(
        re.findall(
            r'(/apis/[^"`\s]+)',
            "\n".join(
                line for line in API_DOC.splitlines() if "kubectl get --raw" in line or ":6443/apis/" in line
            ),
        )
    )
)


def test_the_doc_has_examples() -> None:
    assert any("keptnmetrics.metrics.sh/*/*?labelSelector=app%3Dfrontend" in p for p in EXAMPLES), EXAMPLES
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES)
async def test_each_example_answers_with_a_value(world: World, start, path: str) -> None:
    world.add("default", "cpu", 2, labels={"app": "frontend"})
    world.add("default", "cpu-seconds", 1.5, labels={"app": "frontend"})
    world.add("default", "other", 9, labels={"app": "backend"})
    api = await start()
    status, data, _ = await api.get(path)
    assert status == 200, data
    names = [
        i["describedObject"]["name"] if "describedObject" in i else i["metricName"] for i in data["items"]
    ]
    assert names and "other" not in names, names
