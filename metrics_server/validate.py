"""`keptn-metrics validate`: check manifest files offline, every kind we know, with the rules
upstream Keptn's admission webhooks and CRD schemas enforce.

KeptnMetric, KeptnMetricsProvider and Secret are checked by the parsers the server uses;
Analysis, AnalysisDefinition, AnalysisValueTemplate, KeptnEvaluationDefinition and
KeptnEvaluation by the lifecycle controller's. Other kinds (Deployments, Services, ...) are
skipped. Each problem is one line naming file, document index (1-based) and field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metrics_server.controller.model import PARSERS as LIFECYCLE_PARSERS
from metrics_server.excerpt import excerpt
from metrics_server.model import PARSERS as CORE_PARSERS
from metrics_server.model import ValidationError
from metrics_server.store.local import (
    DEFAULT_MAX_MANIFEST_BYTES,
    MESSAGE_LIMIT,
    document_items,
    manifest_files,
    read_documents,
)

Parser = Callable[[Mapping[str, Any], str], Any]
PARSERS: dict[str, Parser] = {**CORE_PARSERS, **LIFECYCLE_PARSERS}


@dataclass(frozen=True)
class Problem:
    where: str  # file, document index (and item index inside a List)
    message: str  # "<Kind> <ns>/<name>: <field>: <what is wrong>"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Report:
    checked: int = 0  # Keptn objects (and Secrets) checked, valid or not
    problems: list[Problem] = field(default_factory=list)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def check_document(doc: Any, where: str, default_namespace: str, report: Report) -> None:
    """Check one YAML document; `where` is "<file> (document <n>" (closed here)."""
    items, shape_problems = document_items(doc, f"{where})")  # the server's own reading of a document
    report.problems.extend(Problem(p.path, p.message) for p in shape_problems)
    for position, item in enumerate(items):
        location = f"{where})" if items == [doc] else f"{where}, item {position + 1})"
        if not isinstance(item, Mapping):
            report.problems.append(Problem(location, f"must be a mapping, got {type(item).__name__}"))
            continue
        kind = item.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and "items" in item:
            report.problems.append(Problem(location, f"{kind}: items: must be a list"))
            continue
        if not isinstance(kind, str) or not kind:
            report.problems.append(Problem(location, "kind: is required"))
            continue
        parser = PARSERS.get(kind)
        if parser is None:
            continue  # not a kind we know
        report.checked += 1
        try:
            parser(item, default_namespace)
        except ValidationError as exc:
            report.problems.append(Problem(location, excerpt(_one_line(str(exc)), MESSAGE_LIMIT)))
        except Exception as exc:  # a malformed document must never end in a traceback
            report.problems.append(
                Problem(location, f"{kind}: cannot be checked: {type(exc).__name__}: {_one_line(str(exc))}")
            )


def check_file(
    path: Path,
    report: Report,
    default_namespace: str = "default",
    max_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
) -> None:
    try:
        documents = read_documents(path, max_bytes)  # the server's reader: size cap, nesting limit
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        report.problems.append(Problem(str(path), excerpt(_one_line(str(exc)), MESSAGE_LIMIT)))
        return
    for index, doc in enumerate(documents):
        if doc is not None:
            check_document(doc, f"{path} (document {index + 1}", default_namespace, report)


def check_paths(
    paths: Iterable[str], default_namespace: str = "default", max_bytes: int = DEFAULT_MAX_MANIFEST_BYTES
) -> Report:
    """Check every manifest file under each path (a file or a folder)."""
    report = Report()
    for root in paths:
        path = Path(root)
        if not path.exists():
            report.problems.append(Problem(root, "no such file or folder"))
            continue
        for file in manifest_files(path):
            check_file(file, report, default_namespace, max_bytes)
    return report
