"""The shipped PrometheusRule and Grafana dashboard, as data the ops tests work on."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "deploy" / "components" / "prometheus-rules" / "prometheusrule.yaml"
DASHBOARD_FILE = ROOT / "deploy" / "grafana" / "keptn-metrics.json"
JOB = "keptn-metrics"


def prometheus_rule() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return doc


def rule_groups_file(directory: Path) -> Path:
    """The PrometheusRule's spec as a plain Prometheus rule file (what the operator hands Prometheus)."""
    path = directory / "keptn-metrics.rules.yaml"
    path.write_text(yaml.safe_dump(prometheus_rule()["spec"], sort_keys=False), encoding="utf-8")
    return path


def alerts() -> list[dict[str, Any]]:
    return [r for g in prometheus_rule()["spec"]["groups"] for r in g["rules"] if "alert" in r]


def alert_names() -> list[str]:
    return sorted({a["alert"] for a in alerts()})


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in rows."""
    out: list[dict[str, Any]] = []
    for panel in doc["panels"]:
        out.append(panel)
        out += panel.get("panels", [])
    return out


def panel_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every target of every panel."""
    return [(p["title"], t["expr"]) for p in panels(doc) for t in p.get("targets", []) if t.get("expr")]


def variable_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(variable name, the series selector inside label_values(...)) of every query variable."""
    out = []
    for var in doc["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert m, f"variable {var['name']}: expected label_values(selector, label), got {query!r}"
        out.append((var["name"], m.group(1)))
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation for the forms the dashboard uses: $name and ${name}."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)
