"""The `test` extra declares boto3 and aiobotocore ranges pip can resolve at once (issue 9, item 7).

moto brings boto3; each boto3 release needs botocore at its own release or later (boto3
1.43.N: botocore>=1.43.N,<1.44) and aiobotocore pins botocore to a narrow window. Without a
boto3 range inside that window, `pip install -e '.[test]'` after `.[all]` backtracks through
about a hundred releases. Here the declared ranges are checked against the aiobotocore that
is installed.
"""

from __future__ import annotations

import importlib.metadata as metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def declared_test_extra() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["optional-dependencies"]["test"]]
    return {r.name.lower(): r for r in reqs}


def bounds(spec: SpecifierSet) -> tuple[Version, Version]:
    lower = [Version(s.version) for s in spec if s.operator == ">="]
    upper = [Version(s.version) for s in spec if s.operator == "<"]
    assert len(lower) == 1 and len(upper) == 1, f"{spec} needs one >= and one < bound"
    return lower[0], upper[0]


def test_boto3_and_aiobotocore_have_closed_ranges() -> None:
    extra = declared_test_extra()
    assert "boto3" in extra and "aiobotocore" in extra, "the test extra must pin both (see pyproject)"
    bounds(extra["boto3"].specifier)
    bounds(extra["aiobotocore"].specifier)


def test_the_boto3_range_lies_in_the_botocore_window_of_aiobotocore() -> None:
    extra = declared_test_extra()
    installed = Version(metadata.version("aiobotocore"))
    assert installed in extra["aiobotocore"].specifier, f"aiobotocore {installed} is outside the test extra"
    botocore = next(
        Requirement(r) for r in metadata.requires("aiobotocore") or [] if Requirement(r).name == "botocore"
    )
    window_low, window_high = bounds(botocore.specifier)
    boto3_low, boto3_high = bounds(extra["boto3"].specifier)
    # boto3 X needs botocore >= X: every allowed boto3 then finds a botocore in the window
    assert window_low <= boto3_low and boto3_high <= window_high, (
        f"boto3 {extra['boto3'].specifier} must lie inside the botocore window {botocore.specifier} "
        f"of aiobotocore {installed}"
    )
