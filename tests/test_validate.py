"""`keptn-metrics validate` checks every kind it knows with upstream Keptn's rules (issue 9, item 5).

The upstream manifests in tests/upstream_manifests are the ones upstream's own chainsaw tests
apply: each `invalid-*` / `*bad*` file is rejected by upstream's webhooks, every other one is
accepted. The CLI runs as a user runs it (a subprocess): one line per problem naming file,
document index and field, exit 1, never a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT / "tests" / "upstream_manifests"

UPSTREAM_INVALID = {
    "invalid-analysis-1.yaml": "Analysis default/invalid-analysis-1: spec.timeframe:",
    "invalid-analysis-2.yaml": "Analysis default/invalid-analysis-2: spec.timeframe.recent:",
    "invalid-analysis-3.yaml": "Analysis default/invalid-analysis-3: spec.timeframe:",
    "badanalysis.yaml": "AnalysisDefinition default/ed-my-proj-dev-svc1: spec.totalScore:",
    "analysisdef_bad.yaml": "AnalysisDefinition default/analysisdefinition-bad: "
    "spec.objectives[0].target.failure:",
}
UPSTREAM_VALID = [
    "valid-analysis-1.yaml",
    "valid-analysis-2.yaml",
    "goodanalysis.yaml",
    "analysisdef_good.yaml",
    "analysisdef_good_empty_fail.yaml",
    "keptnevaluationdefinition1.yaml",
]


def validate(*paths: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metrics_server", "validate", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def problem_lines(out: subprocess.CompletedProcess[str]) -> list[str]:
    lines = out.stderr.splitlines()
    assert lines[-1] == f"{len(lines) - 1} problem(s) found"
    return lines[:-1]


@pytest.mark.parametrize("name", sorted(UPSTREAM_INVALID))
def test_upstreams_invalid_examples_are_rejected(name: str) -> None:
    out = validate(UPSTREAM / name)
    assert out.returncode == 1, out.stdout
    assert "Traceback" not in out.stderr
    (line,) = problem_lines(out)
    assert line.startswith(f"error: {UPSTREAM / name} (document 1): {UPSTREAM_INVALID[name]}"), line


def test_upstreams_valid_examples_are_accepted() -> None:
    out = validate(*(UPSTREAM / n for n in UPSTREAM_VALID))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"ok: {len(UPSTREAM_VALID)} Keptn object(s) valid\n"


def test_the_whole_upstream_folder_reports_each_bad_file() -> None:
    out = validate(UPSTREAM)
    assert out.returncode == 1
    lines = problem_lines(out)
    assert sorted(Path(line.split(" (document")[0].removeprefix("error: ")).name for line in lines) == sorted(
        UPSTREAM_INVALID
    )


def definition(pass_pct: int, warn_pct: int, operator: str = "lessThan: {fixedValue: 2}") -> str:
    return f"""apiVersion: metrics.keptn.sh/v1
kind: AnalysisDefinition
metadata: {{name: d, namespace: apps}}
spec:
  objectives:
    - analysisValueTemplateRef: {{name: t}}
      target:
        failure: {{{operator}}}
  totalScore: {{passPercentage: {pass_pct}, warningPercentage: {warn_pct}}}
"""


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        # upstream: "warn percentage score cannot be higher or equal than Pass percentage score"
        (definition(75, 75), "spec.totalScore: warningPercentage must be smaller than passPercentage"),
        (definition(50, 60), "spec.totalScore: warningPercentage must be smaller than passPercentage"),
        # upstream: "lower bound of the range needs to be smaller than higher bound"
        (
            definition(90, 75, "inRange: {lowBound: 5, highBound: 5}"),
            "spec.objectives[0].target.failure: spec.objectives[0].target.failure.inRange: lowBound 5 "
            "must be smaller than highBound 5",
        ),
        (
            definition(90, 75, "notInRange: {lowBound: 1k, highBound: 1000}"),
            "must be smaller than highBound 1000",
        ),
        (definition(90, 75, ""), "spec.objectives[0].target.failure"),  # no operator set
    ],
)
def test_analysis_definition_rules(tmp_path: Path, manifest: str, fragment: str) -> None:
    file = tmp_path / "def.yaml"
    file.write_text(manifest)
    out = validate(file)
    assert out.returncode == 1
    (line,) = problem_lines(out)
    assert line.startswith(f"error: {file} (document 1): AnalysisDefinition apps/d: ")
    assert fragment in line


def test_a_range_with_distinct_bounds_is_accepted(tmp_path: Path) -> None:
    file = tmp_path / "def.yaml"
    file.write_text(definition(90, 75, "inRange: {lowBound: 1, highBound: 5}"))
    out = validate(file)
    assert out.returncode == 0, out.stderr


def test_every_kind_is_checked_with_document_index(tmp_path: Path) -> None:
    file = tmp_path / "all.yaml"
    file.write_text(
        """apiVersion: apps/v1
kind: Deployment
metadata: {name: not-ours}
---
apiVersion: metrics.keptn.sh/v1
kind: AnalysisValueTemplate
metadata: {name: t}
spec: {provider: {name: prom}}
---
apiVersion: lifecycle.keptn.sh/v1
kind: KeptnEvaluationDefinition
metadata: {name: ked}
spec:
  objectives:
    - keptnMetricRef: {name: m}
---
apiVersion: metrics.keptn.sh/v1
kind: Analysis
metadata: {name: a}
spec:
  timeframe: {recent: 5m}
---
apiVersion: metrics.keptn.sh/v1
kind: KeptnMetric
metadata: {name: m}
spec: {provider: {name: p}, query: q, fetchIntervalSeconds: 5, range: {step: 1m}}
---
apiVersion: lifecycle.keptn.sh/v1
kind: KeptnEvaluation
metadata: {name: e}
spec: {workloadVersion: "1", retryInterval: soon}
"""
    )
    out = validate(file)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = problem_lines(out)
    assert [line.split(": ", 2)[1] for line in lines] == [f"{file} (document {n})" for n in (2, 3, 4, 5, 6)]
    assert "AnalysisValueTemplate default/t: spec.query: is required" in lines[0]
    assert "KeptnEvaluationDefinition default/ked: spec.objectives[0].evaluationTarget" in lines[1]
    assert "Analysis default/a: spec.analysisDefinition: is required" in lines[2]
    assert "KeptnMetric default/m: spec.range" in lines[3]
    assert "KeptnEvaluation default/e: spec.retryInterval: invalid duration 'soon'" in lines[4]


@pytest.mark.parametrize(
    "text",
    [
        "kind: 5\n",
        "- just\n- a list\n",
        "kind: AnalysisDefinitionList\napiVersion: v1\nitems: 7\n",
        "kind: AnalysisDefinition\napiVersion: metrics.keptn.sh/v1\nmetadata: {name: d}\nspec: [1]\n",
        "kind: Analysis\napiVersion: metrics.keptn.sh/v1\nmetadata: {name: a}\n"
        "spec: {analysisDefinition: {name: d}, timeframe: {from: [1], to: 2}}\n",
        "kind: AnalysisDefinition\napiVersion: metrics.keptn.sh/v1\nmetadata: {name: d}\n"
        "spec: {objectives: [{analysisValueTemplateRef: {name: t}, target: {failure: {inRange: 3}}}],"
        " totalScore: {passPercentage: 9, warningPercentage: 1}}\n",
        "{unclosed: [\n",
    ],
)
def test_malformed_documents_are_one_line_never_a_traceback(tmp_path: Path, text: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    out = validate(file)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    (line,) = problem_lines(out)
    assert line.startswith(f"error: {file}")


def test_items_of_a_list_are_located(tmp_path: Path) -> None:
    file = tmp_path / "list.yaml"
    file.write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "  - {apiVersion: metrics.keptn.sh/v1, kind: AnalysisValueTemplate, metadata: {name: ok},"
        " spec: {provider: {name: p}, query: q}}\n"
        "  - {apiVersion: metrics.keptn.sh/v1, kind: AnalysisValueTemplate, metadata: {name: bad},"
        " spec: {}}\n"
    )
    out = validate(file)
    (line,) = problem_lines(out)
    assert line.startswith(f"error: {file} (document 1, item 2): AnalysisValueTemplate default/bad: ")
