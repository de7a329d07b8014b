"""`keptn-metrics evaluate` and `keptn-metrics analyze`: release gates without the operator.

    keptn-metrics evaluate --manifests DIR [--namespace NS] DEFINITION
    keptn-metrics analyze  --manifests DIR [--namespace NS] ANALYSIS

Both read a folder of manifests (KeptnMetricsProviders, Secrets, KeptnMetrics and our
lifecycle kinds), fetch the values live through the same providers the server uses, and
exit 0 on pass, 1 on fail, 2 when no verdict could be reached (a missing or invalid
resource, a backend that cannot be queried). `-o json` prints upstream-shaped status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from metrics_server.controller.analysis import collect_values, stored_values
from metrics_server.controller.evaluation import (
    FAILED,
    SUCCEEDED,
    AttemptResult,
    MetricReading,
    metric_candidates,
    not_found_message,
    run_attempt,
)
from metrics_server.controller.model import KeptnEvaluationDefinition, LifecycleManifests, load_lifecycle
from metrics_server.controller.scoring import AnalysisResult, ObjectiveValue, score_analysis
from metrics_server.durations import DurationError, parse_duration
from metrics_server.model import ObjectKey
from metrics_server.state import rfc3339

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


class GateError(Exception):
    """No verdict possible: printed as `error: ...`, exit status 2."""


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="run a KeptnEvaluationDefinition against a folder of manifests (exit 0 pass, 1 fail, 2 error)",
        description="Evaluate every objective of a KeptnEvaluationDefinition: fetch each referenced "
        "KeptnMetric live through its provider and compare it with evaluationTarget. Exit 0 when all "
        "objectives pass, 1 when one misses its target, 2 when no verdict is possible.",
    )
    add_common(ev)
    _gate_arguments(ev)
    ev.add_argument(
        "--retries",
        type=int,
        default=1,
        help="attempts before giving up (default 1; the definition's spec.retries applies in a cluster)",
    )
    ev.add_argument(
        "--retry-interval",
        default=None,
        help="wait between attempts (Go duration; default the definition's spec.retryInterval)",
    )
    ev.add_argument(
        "definition",
        metavar="DEFINITION",
        help="name of the KeptnEvaluationDefinition (or a KeptnEvaluation)",
    )
    ev.set_defaults(func=cmd_evaluate)

    an = sub.add_parser(
        "analyze",
        help="run an Analysis against a folder of manifests (exit 0 pass, 1 fail, 2 error)",
        description="Score an Analysis: render each AnalysisValueTemplate with spec.args, query its provider "
        "over the timeframe, score the objectives as upstream Keptn does. Exit 0 on pass, 1 on fail (and on "
        "warning unless --allow-warning), 2 when a value could not be fetched or a resource is missing.",
    )
    add_common(an)
    _gate_arguments(an)
    an.add_argument("--retries", type=int, default=1, help="attempts to fetch values that failed (default 1)")
    an.add_argument("--retry-interval", default="1s", help="first wait between attempts, doubled each time")
    an.add_argument(
        "--allow-warning", action="store_true", help="exit 0 when the analysis ends with a warning"
    )
    an.add_argument("analysis", metavar="ANALYSIS", help="name of the Analysis")
    an.set_defaults(func=cmd_analyze)


def _gate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifests", metavar="DIR", required=True, help="folder (or file) of YAML manifests")
    p.add_argument(
        "--namespace", "-n", default="default", help="namespace of the object and of manifests without one"
    )
    p.add_argument(
        "--server-namespace",
        default="keptn-system",
        help="namespace searched last for KeptnMetrics and providers (upstream's Keptn namespace)",
    )
    p.add_argument(
        "--fetch-timeout", type=float, default=10.0, help="seconds before a provider query is abandoned"
    )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")


# -- shared ---------------------------------------------------------------------------------


class _Env:
    """The folder's resources: the metrics kinds in a LocalStore, ours in LifecycleManifests."""

    def __init__(self, args: argparse.Namespace) -> None:
        from metrics_server.store.local import LocalStore, manifest_files

        root = Path(args.manifests)
        if not root.exists():
            raise GateError(f"{args.manifests}: no such file or folder")
        self.namespace: str = args.namespace
        self.store = LocalStore(
            root, default_namespace=args.namespace, server_namespace=args.server_namespace
        )
        self.store.reload()
        self.store.mark_synced()
        self.lifecycle: LifecycleManifests = load_lifecycle(manifest_files(root), args.namespace)
        for problems in self.store.problems.values():
            for problem in problems:
                print(f"warning: skipped {problem.path}: {problem.message}", file=sys.stderr)
        for message in self.lifecycle.problems:
            print(f"warning: skipped {message}", file=sys.stderr)


def _duration(text: str, flag: str) -> float:
    try:
        seconds = parse_duration(text)
    except DurationError as exc:
        raise GateError(f"{flag}: {exc}") from None
    if seconds < 0:
        raise GateError(f"{flag}: must not be negative")
    return seconds


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _run(coro: Any) -> int:
    try:
        result: int = asyncio.run(coro)
    except GateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return result


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


# -- evaluate -------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    return _run(_evaluate(args))


def _find_definition(env: _Env, name: str) -> KeptnEvaluationDefinition:
    key = ObjectKey(env.namespace, name)
    definition = env.lifecycle.evaluation_definitions.get(key)
    if definition is not None:
        return definition
    evaluation = env.lifecycle.evaluations.get(key)
    if evaluation is not None:
        dkey = ObjectKey(env.namespace, evaluation.evaluation_definition)
        definition = env.lifecycle.evaluation_definitions.get(dkey)
        if definition is not None:
            return definition
        raise GateError(f"KeptnEvaluationDefinition {dkey} (referenced by KeptnEvaluation {key}) not found")
    raise GateError(f"KeptnEvaluationDefinition {key} not found in {env.store.root}")


async def _read_objectives(
    env: _Env, definition: KeptnEvaluationDefinition, pool: Any
) -> dict[int, MetricReading]:
    from metrics_server.fetch import fetch_once
    from metrics_server.state import format_value
    from providers import BackendError

    async def one(i: int) -> tuple[int, MetricReading]:
        objective = definition.objectives[i]
        metric = None
        for key in metric_candidates(objective, definition.meta.namespace, env.store.server_namespace):
            metric = env.store.get_metric(key)
            if metric is not None:
                break
        if metric is None:
            return i, MetricReading(None, "", not_found_message(objective))
        provider = env.store.resolve_provider(metric)
        if provider is None:
            return i, MetricReading(
                None,
                "",
                f"KeptnMetricsProvider {metric.provider_name!r} of KeptnMetric {metric.key} not found",
            )
        try:
            client, config = await pool.get(provider)
            outcome = await fetch_once(client, config, metric.query, metric.range)
        except BackendError as exc:
            return i, MetricReading(None, "", f"KeptnMetric {metric.key}: {exc.message}")
        return i, MetricReading(outcome.value, format_value(outcome.value))

    pairs = await asyncio.gather(*(one(i) for i in range(len(definition.objectives))))
    return dict(pairs)


async def _evaluate(args: argparse.Namespace) -> int:
    from metrics_server.fetch import BackendPool

    env = _Env(args)
    definition = _find_definition(env, args.definition)
    retries = max(1, args.retries)
    interval = (
        _duration(args.retry_interval, "--retry-interval")
        if args.retry_interval is not None
        else definition.retry_interval_seconds
    )
    pool = BackendPool(env.store, timeout=args.fetch_timeout)
    started = time.time()
    previous: dict[str, Any] = {}
    attempt = 0
    result: AttemptResult | None = None
    try:
        while attempt < retries:
            attempt += 1
            readings = await _read_objectives(env, definition, pool)
            result = run_attempt(definition, readings, previous)
            previous = result.evaluation_status
            if result.succeeded or attempt >= retries:
                break
            await asyncio.sleep(interval)
    finally:
        await pool.close()
    assert result is not None
    overall = SUCCEEDED if result.succeeded else FAILED
    code = EXIT_PASS if result.succeeded else EXIT_FAIL if result.definite_failure else EXIT_ERROR
    if args.output == "json":
        _emit_json(
            {
                "apiVersion": "lifecycle.keptn.sh/v1",
                "kind": "KeptnEvaluationDefinition",
                "metadata": {"name": definition.meta.name, "namespace": definition.meta.namespace},
                "status": {
                    "overallStatus": overall,
                    "retryCount": attempt,
                    "evaluationStatus": result.evaluation_status,
                    "startTime": rfc3339(started),
                    "endTime": rfc3339(time.time()),
                },
                "objectives": [
                    {
                        "keptnMetricRef": o.objective.metric_ref.to_json(),
                        "evaluationTarget": o.objective.target.text,
                        "value": o.value,
                        "status": o.status,
                        "message": o.message,
                    }
                    for o in result.outcomes
                ],
                "exitCode": code,
            }
        )
    else:
        verdict = {EXIT_PASS: "PASS", EXIT_FAIL: "FAIL", EXIT_ERROR: "ERROR"}[code]
        print(
            f"KeptnEvaluationDefinition {definition.key}: {overall} ({verdict}) after {attempt} "
            f"attempt{'s' if attempt != 1 else ''}"
        )
        rows = [
            [o.objective.metric_ref.name, o.objective.target.text, o.value or "-", o.status, o.message]
            for o in result.outcomes
        ]
        print(_table(["OBJECTIVE", "TARGET", "VALUE", "STATUS", "MESSAGE"], rows))
    return code


# -- analyze --------------------------------------------------------------------------------


def cmd_analyze(args: argparse.Namespace) -> int:
    return _run(_analyze(args))


async def _analyze(args: argparse.Namespace) -> int:
    from metrics_server.fetch import BackendPool

    env = _Env(args)
    key = ObjectKey(env.namespace, args.analysis)
    analysis = env.lifecycle.analyses.get(key)
    if analysis is None:
        raise GateError(f"Analysis {key} not found in {env.store.root}")
    definition = env.lifecycle.analysis_definitions.get(analysis.definition_key)
    if definition is None:
        raise GateError(
            f"AnalysisDefinition {analysis.definition_key} (referenced by Analysis {key}) not found"
        )
    interval = _duration(args.retry_interval, "--retry-interval")
    retries = max(1, args.retries)
    now = time.time()
    start, end = analysis.timeframe.resolve(now)
    pool = BackendPool(env.store, timeout=args.fetch_timeout)
    values: dict[str, ObjectiveValue] = {}
    try:
        for attempt in range(1, retries + 1):
            values = await collect_values(
                analysis,
                definition,
                templates=env.lifecycle.templates.get,
                providers=env.store.get_provider,
                pool=pool,
                start=start,
                end=end,
                now=time.time(),
                server_namespace=env.store.server_namespace,
                done=values,
            )
            if all(v.value is not None and not v.error for v in values.values()) or attempt == retries:
                break
            await asyncio.sleep(interval * 2 ** (attempt - 1))
    finally:
        await pool.close()
    result = score_analysis(definition, values)
    errors = [r for r in result.objective_results if r.error]
    if errors:
        code = EXIT_ERROR
    elif result.passed or (result.warning and args.allow_warning):
        code = EXIT_PASS
    else:
        code = EXIT_FAIL
    if args.output == "json":
        _emit_json(
            _analysis_json(
                analysis.meta.name, analysis.meta.namespace, definition, values, result, start, end, code
            )
        )
    else:
        _print_analysis(key, definition, result, start, end, code)
    return code


def _analysis_json(
    name: str,
    namespace: str,
    definition: Any,
    values: dict[str, ObjectiveValue],
    result: AnalysisResult,
    start: float,
    end: float,
    code: int,
) -> dict[str, Any]:
    raw = result.raw()
    return {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "Analysis",
        "metadata": {"name": name, "namespace": namespace},
        "status": {
            "state": "Completed",
            "pass": result.passed,
            "warning": result.warning,
            "raw": json.dumps(raw, separators=(",", ":")),
            "storedValues": stored_values(definition, values),
            "timeframe": {"from": rfc3339(start), "to": rfc3339(end)},
        },
        "result": raw,
        "score": {
            "total": result.total_score,
            "maximum": result.maximum_score,
            "percentage": round(result.achieved_percentage, 2),
            "passPercentage": definition.pass_percentage,
            "warningPercentage": definition.warning_percentage,
        },
        "exitCode": code,
    }


def _print_analysis(
    key: ObjectKey, definition: Any, result: AnalysisResult, start: float, end: float, code: int
) -> None:
    from metrics_server.state import format_value

    if code == EXIT_ERROR:
        verdict = "ERROR (some values could not be fetched)"
    elif result.passed:
        verdict = "PASS"
    elif result.warning:
        verdict = "WARNING"
    else:
        verdict = "FAIL" + (" (a key objective failed)" if result.key_objective_failed else "")
    print(
        f"Analysis {key} ({definition.key}): {verdict}, "
        f"score {result.total_score:g}/{result.maximum_score:g} = {result.achieved_percentage:.1f}% "
        f"(pass >= {definition.pass_percentage}%, warning >= {definition.warning_percentage}%)"
    )
    print(f"timeframe {rfc3339(start)} .. {rfc3339(end)}")
    rows = []
    for r in result.objective_results:
        o = r.objective
        rows.append(
            [
                o.template_ref.name,
                format_value(r.value) if r.value is not None else "-",
                o.failure.describe() if o.failure else "-",
                o.warning.describe() if o.warning else "-",
                str(o.weight) + (" key" if o.key_objective else ""),
                f"{r.score:g}",
                r.status + (f": {r.error}" if r.error else ""),
            ]
        )
    print(_table(["OBJECTIVE", "VALUE", "FAIL IF", "WARN IF", "WEIGHT", "SCORE", "RESULT"], rows))
