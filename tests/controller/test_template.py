"""AnalysisValueTemplate placeholders: `{{.name}}` and upstream's Go-template forms."""

from __future__ import annotations

import pytest

from metrics_server.controller.template import TemplateError, placeholders, render

ARGS = {"workload": "podtato-head", "ns": "prod", "my-key": "v", "window": "5m"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('rate(x{job="{{.workload}}"}[1m])', 'rate(x{job="podtato-head"}[1m])'),
        ('x{job="{{ .workload }}", ns="{{.ns}}"}', 'x{job="podtato-head", ns="prod"}'),
        ("a {{- .ns -}} b", "aprodb"),
        ("a  {{- .ns }}  b", "aprod  b"),
        ('{{index . "my-key"}}', "v"),
        ("{{ index . `my-key` }}", "v"),
        ("up{{/* a comment */}}", "up"),
        ("max_over_time(up[{{.window}}])", "max_over_time(up[5m])"),
        ("no placeholders", "no placeholders"),
        ("{{.ns}}{{.ns}}", "prodprod"),
    ],
)
def test_render(query: str, expected: str) -> None:
    assert render(query, ARGS) == expected


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("{{.workload | upper}}", "unsupported template action"),
        ("{{if .ns}}x{{end}}", "unsupported template action"),
        ('{{printf "%s" .ns}}', "unsupported template action"),
        ("{{.a.b}}", "unsupported template action"),
        ("{{ $x := 1 }}", "unsupported template action"),
        ("x{{.ns", "unclosed action"),
        ("x}}", "unexpected '}}'"),
        ("{{.missing}}", "does not set 'missing'"),
    ],
)
def test_render_errors(query: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(query, ARGS)
    assert fragment in str(info.value)


def test_missing_args_are_listed() -> None:
    with pytest.raises(TemplateError) as info:
        render("{{.a}} {{.b}} {{.a}}", {"c": "1"})
    message = str(info.value)
    assert "{{.a}}, {{.b}}" in message and "args given: c" in message


def test_placeholders() -> None:
    assert placeholders('x{a="{{.a}}"} {{index . "b-c"}}') == ["a", "b-c"]
