"""Kubernetes label selector syntax: parsing, matching and errors."""

from __future__ import annotations

import pytest

from apiservice.selectors import SelectorError, parse_selector

LABELS = {"app": "web", "tier": "front", "version": "3", "example.com/owner": "team-a"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("   ", True),
        ("app=web", True),
        ("app==web", True),
        ("app=api", False),
        ("app!=web", False),
        ("app!=api", True),
        ("missing!=x", True),
        ("missing=x", False),
        ("app in (web,api)", True),
        ("app in (api)", False),
        ("app notin (api)", True),
        ("app notin (web)", False),
        ("missing notin (a)", True),
        ("missing in (a)", False),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!tier", False),
        ("app=web,tier=front", True),
        ("app=web, tier=back", False),
        ("app = web , tier in ( front , back )", True),
        ("example.com/owner=team-a", True),
        ("version>2", True),
        ("version<3", False),
        ("app>1", False),
        ("app in (web,)", True),
        ("app=", False),
        ("empty=", False),
    ],
)
def test_matching(text, expected):
    assert parse_selector(text).matches(LABELS) is expected


def test_empty_value_selects_empty_label():
    assert parse_selector("k=").matches({"k": ""})
    assert parse_selector("k in (,a)").matches({"k": ""})


@pytest.mark.parametrize(
    "text",
    [
        "app in web",
        "app in (web",
        "app notin",
        "=web",
        "app=web tier",
        "app=web,",
        ",app",
        "!",
        "!=x",
        "app == == web",
        "app in ()",
        "-bad=x",
        "UPPER_/x=y",
        "app=" + "v" * 64,
        "k" * 64 + "=v",
        "app=-x",
        "version>abc",
        "app ~ web",
        "a b",
    ],
)
def test_errors(text):
    with pytest.raises(SelectorError):
        parse_selector(text)


def test_to_label_selector():
    sel = parse_selector("a=1,b!=2,c in (x,y),d notin (z),e,!f,a=3,g>4")
    assert sel.to_label_selector() == {
        "matchLabels": {"a": "1"},
        "matchExpressions": [
            {"key": "b", "operator": "NotIn", "values": ["2"]},
            {"key": "c", "operator": "In", "values": ["x", "y"]},
            {"key": "d", "operator": "NotIn", "values": ["z"]},
            {"key": "e", "operator": "Exists"},
            {"key": "f", "operator": "DoesNotExist"},
            {"key": "a", "operator": "In", "values": ["3"]},
            {"key": "g", "operator": "Gt", "values": ["4"]},
        ],
    }
