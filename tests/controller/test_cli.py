"""`keptn-metrics evaluate` / `analyze` on local manifests against real loopback backends:
exit 0 pass, 1 fail, 2 error; readable tables and `-o json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from metrics_server.cli import main
from tests.controller.backends import Backends


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def provider(name: str, ptype: str, url: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetricsProvider",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": ptype, "targetServer": url},
    }


def metric(name: str, query: str, prov: str = "prom") -> dict[str, Any]:
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetric",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"provider": {"name": prov}, "query": query, "fetchIntervalSeconds": 10},
    }


def ked(name: str, *objectives: tuple[str, str], retries: int = 10) -> dict[str, Any]:
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnEvaluationDefinition",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "objectives": [{"keptnMetricRef": {"name": m}, "evaluationTarget": t} for m, t in objectives],
            "retries": retries,
            "retryInterval": "1s",
        },
    }


@pytest.fixture
def folder(tmp_path: Path, backends: Backends) -> Path:
    backends.prom.values.update({"cpus": 6, "errors": 3, "latency": [0.9, 0.2]})
    backends.exposition.update({"process_open_fds": 12, 'gc_total{generation="0"}': 40})
    write(
        tmp_path / "metrics.yaml",
        provider("prom", "prometheus", backends.prom_url),
        provider("self", "openmetrics", backends.metrics_url),
        metric("available-cpus", "cpus"),
        metric("error-count", "errors"),
        metric("broken", "boom"),
        metric("open-files", "process_open_fds", prov="self"),
    )
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- evaluate -------------------------------------------------------------------------------


def test_evaluate_pass(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        folder / "ked.yaml",
        ked("gate", ("available-cpus", ">4"), ("error-count", "<=3"), ("open-files", "<1k")),
    )
    code, out, _ = run(capsys, "evaluate", "--manifests", str(folder), "gate")
    assert code == 0, out
    assert "Succeeded (PASS)" in out
    assert "value '6' met objective '>4'" in out and "value '12' met objective '<1k'" in out
    assert out.splitlines()[1].split() == ["OBJECTIVE", "TARGET", "VALUE", "STATUS", "MESSAGE"]


def test_evaluate_fail(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(folder / "ked.yaml", ked("gate", ("available-cpus", ">4"), ("error-count", "==0")))
    code, out, _ = run(capsys, "evaluate", "--manifests", str(folder), "gate")
    assert code == 1
    assert "Failed (FAIL)" in out and "value '3' did not meet objective '==0'" in out


def test_evaluate_json(folder: Path, capsys: pytest.CaptureFixture[str], backends: Backends) -> None:
    write(folder / "ked.yaml", ked("gate", ("available-cpus", "!=6"), ("error-count", "<5")))
    code, out, _ = run(capsys, "evaluate", "--manifests", str(folder), "gate", "-o", "json")
    doc = json.loads(out)
    assert code == 1 and doc["exitCode"] == 1
    status = doc["status"]
    assert status["overallStatus"] == "Failed" and status["retryCount"] == 1
    assert status["evaluationStatus"] == {
        "available-cpus": {
            "value": "6",
            "status": "Failed",
            "message": "value '6' did not meet objective '!=6'",
        },
        "error-count": {"value": "3", "status": "Succeeded", "message": "value '3' met objective '<5'"},
    }
    assert {"startTime", "endTime"} <= set(status)


def test_evaluate_missing_metric_is_an_error(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(folder / "ked.yaml", ked("gate", ("available-cpus", ">4"), ("nope", ">1")))
    code, out, _ = run(capsys, "evaluate", "--manifests", str(folder), "gate")
    assert code == 2
    assert 'keptnmetrics.metrics.keptn.sh "nope" not found' in out and "(ERROR)" in out


def test_evaluate_backend_failure_is_an_error(
    folder: Path, capsys: pytest.CaptureFixture[str], backends: Backends
) -> None:
    backends.prom.fail_with["boom"] = 500
    write(folder / "ked.yaml", ked("gate", ("broken", ">1")))
    code, out, _ = run(capsys, "evaluate", "--manifests", str(folder), "gate")
    assert code == 2 and "KeptnMetric default/broken" in out


def test_evaluate_retries_until_pass(
    folder: Path, capsys: pytest.CaptureFixture[str], backends: Backends
) -> None:
    backends.prom.fail_with["cpus"] = 503
    write(folder / "ked.yaml", ked("gate", ("available-cpus", ">4")))

    calls = {"n": 0}
    import metrics_server.controller.cli as gate

    real_sleep = gate.asyncio.sleep

    async def fake_sleep(seconds: float) -> None:  # the backend recovers while we "wait"
        calls["n"] += 1
        backends.prom.fail_with.pop("cpus", None)
        await real_sleep(0)

    gate.asyncio.sleep = fake_sleep  # type: ignore[assignment]
    try:
        code, out, _ = run(capsys, "evaluate", "--manifests", str(folder), "gate", "--retries", "3")
    finally:
        gate.asyncio.sleep = real_sleep  # type: ignore[assignment]
    assert code == 0 and calls["n"] == 1 and "after 2 attempts" in out


def test_evaluate_unknown_definition(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "evaluate", "--manifests", str(folder), "nothing")
    assert code == 2 and "KeptnEvaluationDefinition default/nothing not found" in err


def test_evaluate_invalid_target_is_reported(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(folder / "ked.yaml", ked("gate", ("available-cpus", "=>4")))
    code, _, err = run(capsys, "evaluate", "--manifests", str(folder), "gate")
    assert code == 2
    assert "spec.objectives[0].evaluationTarget" in err and "'=>4'" in err


def test_evaluate_through_a_keptn_evaluation(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evaluation = {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnEvaluation",
        "metadata": {"name": "run-1", "namespace": "default"},
        "spec": {"evaluationDefinition": "gate", "workloadVersion": "1"},
    }
    write(folder / "ked.yaml", ked("gate", ("available-cpus", ">4")), evaluation)
    code, out, _ = run(capsys, "evaluate", "--manifests", str(folder), "run-1")
    assert code == 0 and "default/gate" in out


# -- analyze --------------------------------------------------------------------------------


def template(name: str, query: str, prov: str = "prom") -> dict[str, Any]:
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "AnalysisValueTemplate",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"provider": {"name": prov}, "query": query},
    }


def definition(*objectives: dict[str, Any], passing: int = 90, warning: int = 50) -> dict[str, Any]:
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "AnalysisDefinition",
        "metadata": {"name": "slo", "namespace": "default"},
        "spec": {
            "objectives": list(objectives),
            "totalScore": {"passPercentage": passing, "warningPercentage": warning},
        },
    }


def objective(
    name: str, failure: dict, warning: dict | None = None, weight: int = 1, key: bool = False
) -> dict:
    target = {"failure": failure} | ({"warning": warning} if warning else {})
    return {
        "analysisValueTemplateRef": {"name": name},
        "target": target,
        "weight": weight,
        "keyObjective": key,
    }


def analysis(timeframe: dict[str, str], args: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "Analysis",
        "metadata": {"name": "release-1", "namespace": "default"},
        "spec": {"analysisDefinition": {"name": "slo"}, "timeframe": timeframe, "args": args},
    }


PAST = {"from": "2024-05-01T10:00:00Z", "to": "2024-05-01T10:05:00Z"}


def analysis_files(folder: Path, *objectives: dict, timeframe: dict | None = None, **kw: Any) -> None:
    write(
        folder / "analysis.yaml",
        template("latency", "{{.metric}}"),
        template("errors", 'sum(errors{job="{{ .job }}"})'),
        template("fds", "process_open_fds", prov="self"),
        definition(*objectives, **kw),
        analysis(timeframe or PAST, {"metric": "latency", "job": "api"}),
    )


def test_analyze_pass_uses_the_timeframe(
    folder: Path, capsys: pytest.CaptureFixture[str], backends: Backends
) -> None:
    backends.prom.values['sum(errors{job="api"})'] = 0
    analysis_files(
        folder,
        objective(
            "latency", {"greaterThan": {"fixedValue": "500m"}}, {"greaterThan": {"fixedValue": "300m"}}
        ),
        objective("errors", {"greaterThan": {"fixedValue": 0}}, key=True),
    )
    code, out, _ = run(capsys, "analyze", "--manifests", str(folder), "release-1")
    assert code == 0, out
    assert (
        "PASS, score 2/2 = 100.0%" in out and "timeframe 2024-05-01T10:00:00Z .. 2024-05-01T10:05:00Z" in out
    )
    # the range [from, to] was asked for, and the newest sample (0.2 at `to`) is the value
    assert backends.prom.calls["latency"] == 1
    assert [line.split()[1] for line in out.splitlines() if line.startswith("latency")] == ["0.2"]


def test_analyze_warning(folder: Path, capsys: pytest.CaptureFixture[str], backends: Backends) -> None:
    backends.prom.values["latency"] = [0.4]
    backends.prom.values['sum(errors{job="api"})'] = 0
    analysis_files(
        folder,
        objective(
            "latency",
            {"greaterThan": {"fixedValue": "500m"}},
            {"greaterThan": {"fixedValue": "300m"}},
            weight=2,
        ),
        objective("errors", {"greaterThan": {"fixedValue": 0}}),
        passing=90,
        warning=60,
    )
    code, out, _ = run(capsys, "analyze", "--manifests", str(folder), "release-1")
    assert code == 1 and "WARNING, score 2/3" in out
    code, _, _ = run(capsys, "analyze", "--manifests", str(folder), "release-1", "--allow-warning")
    assert code == 0


def test_analyze_key_objective_fails(
    folder: Path, capsys: pytest.CaptureFixture[str], backends: Backends
) -> None:
    backends.prom.values['sum(errors{job="api"})'] = 2
    analysis_files(
        folder,
        objective("latency", {"greaterThan": {"fixedValue": "500m"}}, weight=10),
        objective("errors", {"greaterThan": {"fixedValue": 0}}, key=True),
        passing=50,
        warning=10,
    )
    code, out, _ = run(capsys, "analyze", "--manifests", str(folder), "release-1", "-o", "json")
    doc = json.loads(out)
    assert code == 1
    assert doc["status"]["pass"] is False and doc["status"]["warning"] is False
    raw = json.loads(doc["status"]["raw"])
    assert raw["totalScore"] == 10 and raw["maximumScore"] == 11
    assert raw["objectiveResults"][1]["result"]["failResult"]["fulfilled"] is True
    assert doc["status"]["storedValues"]["errors"] == {
        "objectiveReference": {"name": "errors"},
        "query": 'sum(errors{job="api"})',
        "value": "2",
    }
    assert doc["status"]["timeframe"] == {"from": "2024-05-01T10:00:00Z", "to": "2024-05-01T10:05:00Z"}


def test_analyze_openmetrics_recent(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    analysis_files(
        folder,
        objective("fds", {"notInRange": {"lowBound": 0, "highBound": 100}}),
        timeframe={"recent": "5m"},
    )
    code, out, _ = run(capsys, "analyze", "--manifests", str(folder), "release-1")
    assert code == 0, out


def test_analyze_openmetrics_past_timeframe_is_an_error(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    analysis_files(folder, objective("fds", {"greaterThan": {"fixedValue": 100}}))
    code, out, _ = run(capsys, "analyze", "--manifests", str(folder), "release-1")
    assert code == 2 and "reads only the current value" in out


def test_analyze_missing_template_arg(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        folder / "analysis.yaml",
        template("latency", "{{.metric}}"),
        definition(objective("latency", {"greaterThan": {"fixedValue": 1}})),
        analysis(PAST, {}),
    )
    code, out, _ = run(capsys, "analyze", "--manifests", str(folder), "release-1")
    assert code == 2 and "does not set 'metric'" in out


def test_analyze_unknown_analysis_and_definition(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "analyze", "--manifests", str(folder), "release-1")
    assert code == 2 and "Analysis default/release-1 not found" in err
    write(folder / "analysis.yaml", analysis(PAST, {}))
    code, _, err = run(capsys, "analyze", "--manifests", str(folder), "release-1")
    assert code == 2 and "AnalysisDefinition default/slo" in err


def test_examples_folder_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    from metrics_server.controller.model import load_lifecycle
    from metrics_server.store.local import manifest_files

    root = Path(__file__).resolve().parents[2] / "examples" / "lifecycle"
    manifests = load_lifecycle(manifest_files(root))
    assert not manifests.problems
    assert manifests.evaluation_definitions and manifests.analyses and manifests.templates
    code, _, _ = run(capsys, "validate", str(root))
    assert code == 0
