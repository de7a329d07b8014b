"""The `keptn-metrics` command line.

keptn-metrics serve --manifests examples/local      # local mode: no cluster needed
keptn-metrics serve                                  # Kubernetes mode (in-cluster or --kubeconfig)
keptn-metrics query --provider-type prometheus --target-server URL 'up'
keptn-metrics validate deploy/ examples/
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

import apiservice.flags
import metrics_server.controller.flags
import metrics_server.egress_flags
import metrics_server.kube.flags
from metrics_server import logsetup
from metrics_server.aggregation import AGGREGATIONS
from metrics_server.model import ValidationError, parse_metric, parse_provider, parse_secret
from metrics_server.state import rfc3339
from providers.registry import BACKENDS, TYPE_NAMES

EPILOG = """\
examples:
  keptn-metrics serve --manifests examples/local
      run the evaluator on a folder of manifests; values at http://127.0.0.1:9999/api/v1/metrics/NS/NAME
  keptn-metrics query --provider-type prometheus --target-server http://127.0.0.1:9090 'sum(up)'
      one evaluation, exactly as the server would do it
  keptn-metrics validate examples/ deploy/
      check manifests offline with upstream Keptn's rules
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format (default text)"
    )
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def _add_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        conflict_handler="resolve",
        help="run the metrics server (local mode with --manifests, else Kubernetes mode)",
        description="Run the evaluator and serve the metrics APIs. With --manifests DIR it reads "
        "KeptnMetric, KeptnMetricsProvider and Secret manifests from a folder (reloaded on change) "
        "and needs no cluster; without it, it watches the Kubernetes API.",
    )
    # components own their flags; the core flags below are added last and win any overlap
    for add_component_flags in (
        apiservice.flags.add_arguments,
        metrics_server.kube.flags.add_arguments,
        metrics_server.controller.flags.add_arguments,
        metrics_server.egress_flags.add_arguments,
    ):
        add_component_flags(p)
    _add_common(p)
    p.add_argument("--manifests", metavar="DIR", help="local mode: folder (or file) of YAML manifests")
    p.add_argument(
        "--default-namespace", default="default", help="namespace for manifests without one (local mode)"
    )
    p.add_argument(
        "--server-namespace",
        default=os.environ.get("POD_NAMESPACE", "keptn-system"),
        help="namespace whose KeptnMetricsProviders serve metrics of every namespace (default $POD_NAMESPACE "
        "or keptn-system)",
    )
    p.add_argument(
        "--reload-interval", type=float, default=1.0, help="seconds between manifest change checks"
    )
    _add_max_manifest_bytes(p)
    p.add_argument(
        "--openmetrics-parser",
        choices=("process", "thread"),
        default="process",
        help="where openmetrics expositions are parsed: a worker process (default; keeps the CPU work "
        "off the serving interpreter) or a thread",
    )
    p.add_argument(
        "--openmetrics-scrape-ttl",
        type=float,
        default=1.0,
        help="seconds one scrape of an openmetrics target is shared by all queries that read it (default 1)",
    )
    p.add_argument(
        "--bind-address",
        default=None,
        help="address to listen on (default 127.0.0.1 in local mode, 0.0.0.0 in Kubernetes mode)",
    )
    p.add_argument(
        "--metrics-port", type=int, default=9999, help="plain-HTTP port: health, /metrics, KEDA REST"
    )
    p.add_argument(
        "--fetch-timeout", type=float, default=10.0, help="seconds before a provider query is abandoned"
    )
    p.add_argument(
        "--provider-concurrency", type=int, default=100, help="max concurrent queries per provider"
    )
    p.add_argument(
        "--max-backoff", type=float, default=300.0, help="cap of the retry delay after errors (seconds)"
    )
    p.add_argument(
        "--shutdown-delay",
        type=float,
        default=None,
        help="seconds between /readyz turning false and closing listeners on SIGTERM (default 2 in "
        "Kubernetes mode, 0 in local mode)",
    )
    p.set_defaults(func=_cmd_serve)


def _add_max_manifest_bytes(parser: argparse.ArgumentParser) -> None:
    from metrics_server.store.local import DEFAULT_MAX_MANIFEST_BYTES

    parser.add_argument(
        "--max-manifest-bytes",
        type=int,
        default=DEFAULT_MAX_MANIFEST_BYTES,
        help="largest manifest file read; a bigger one is reported and skipped "
        f"(default {DEFAULT_MAX_MANIFEST_BYTES} = 2 MiB, 0 = no limit)",
    )


def _add_query(sub: Any) -> None:
    p = sub.add_parser(
        "query",
        help="evaluate one query against a provider, exactly as the server would",
        description="Run one query. Exit status 0 and the value on stdout, or non-zero and a one-line error.",
        epilog=_secret_keys_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(p)
    p.add_argument("--provider-type", required=True, choices=TYPE_NAMES)
    p.add_argument("--target-server", required=True, help="the provider's targetServer")
    p.add_argument(
        "--secret-file", help="a Secret manifest (YAML, data or stringData) with the provider's keys"
    )
    p.add_argument(
        "--secret-key", default="", help="the key the provider reads where it uses secretKeyRef.key"
    )
    p.add_argument("--insecure-skip-tls-verify", action="store_true")
    p.add_argument(
        "--interval", help="range.interval (Go duration, e.g. 5m): query a range instead of an instant"
    )
    p.add_argument("--step", help="range.step (needs --aggregation)")
    p.add_argument("--aggregation", choices=AGGREGATIONS)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before the query is abandoned")
    p.add_argument("-o", "--output", choices=("value", "json"), default="value")
    p.add_argument("query", help="the query, in the provider's language")
    p.set_defaults(func=_cmd_query)


def _secret_keys_epilog() -> str:
    lines = [f"  {b.name}: {', '.join(b.secret_keys)}" for b in BACKENDS]
    head = "Secret keys each provider type may read (--secret-file; <secretKeyRef.key> is --secret-key):"
    return head + "\n" + "\n".join(lines)


def _add_validate(sub: Any) -> None:
    p = sub.add_parser("validate", help="check manifests offline with upstream Keptn's rules")
    _add_common(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders of YAML manifests")
    _add_max_manifest_bytes(p)
    p.set_defaults(func=_cmd_validate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keptn-metrics",
        description="Keptn metrics server: KeptnMetrics as live numbers for HPA, KEDA and release gates.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_query(sub)
    _add_validate(sub)
    _extend_commands(sub)
    return parser


def _extend_commands(sub: Any) -> None:
    """Commands contributed by components (the lifecycle controller's evaluate/analyze)."""
    from metrics_server.controller.cli import add_commands

    add_commands(sub, _add_common)


# -- commands ------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    """The CLI boundary: flags become one frozen ServeConfig; below here nothing sees `args`."""
    from metrics_server.app import serve
    from metrics_server.config import ServeConfig
    from metrics_server.startup import StartupError

    config = ServeConfig.from_args(args)
    try:
        return _run(serve(config))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(coro: Any) -> int:
    try:
        import uvloop  # the optional `speed` extra
    except ImportError:
        result: int = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    return result


def _load_secret(path: str) -> Any:
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"error: cannot read secret file {path}: {' '.join(str(exc).split())}") from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise SystemExit(f"error: {path} must contain exactly one Secret manifest")
    doc = docs[0]
    doc.setdefault("apiVersion", "v1")
    doc.setdefault("metadata", {}).setdefault("name", "cli-secret")
    return parse_secret(doc)


def _cmd_query(args: argparse.Namespace) -> int:
    from metrics_server.fetch import fetch_once, provider_config
    from providers import BackendError, create_backend

    provider_doc: dict[str, Any] = {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetricsProvider",
        "metadata": {"name": "cli", "namespace": "default"},
        "spec": {
            "type": args.provider_type,
            "targetServer": args.target_server,
            "insecureSkipTlsVerify": args.insecure_skip_tls_verify,
        },
    }
    metric_doc: dict[str, Any] = {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetric",
        "metadata": {"name": "cli", "namespace": "default"},
        "spec": {"provider": {"name": "cli"}, "query": args.query, "fetchIntervalSeconds": 10},
    }
    if args.interval or args.step or args.aggregation:
        rng: dict[str, Any] = {"interval": args.interval or "5m"}
        if args.step:
            rng["step"] = args.step
        if args.aggregation:
            rng["aggregation"] = args.aggregation
        metric_doc["spec"]["range"] = rng
    try:
        secret = _load_secret(args.secret_file) if args.secret_file else None
        provider = parse_provider(provider_doc)
        metric = parse_metric(metric_doc)
    except ValidationError as exc:
        print(
            f"error: {exc.field_path.replace('spec.range.', '--').replace('spec.', '')}: {exc.message}",
            file=sys.stderr,
        )
        return 2
    config = provider_config(provider, secret, timeout=args.timeout)
    if args.secret_key:
        from dataclasses import replace

        config = replace(config, secret_key=args.secret_key)

    async def once() -> Any:
        client = create_backend(config)
        try:
            return await fetch_once(client, config, metric.query, metric.range)
        finally:
            await client.close()

    try:
        outcome = asyncio.run(once())
    except BackendError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    from metrics_server.state import RAW_VALUE_LIMIT, format_value

    value = format_value(outcome.value)
    if args.output == "json":
        raw = outcome.raw[:RAW_VALUE_LIMIT]
        try:
            raw_text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raw_text = base64.b64encode(raw).decode()
        sys.stdout.write(
            orjson.dumps(
                {"value": value, "rawValue": raw_text, "timestamp": rfc3339(outcome.fetched_at)}
            ).decode()
            + "\n"
        )
    else:
        print(value)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from metrics_server.validate import check_paths

    report = check_paths(args.paths, max_bytes=args.max_manifest_bytes)
    for problem in report.problems:
        print(f"error: {problem}", file=sys.stderr)
    if report.problems:
        print(f"{len(report.problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"ok: {report.checked} Keptn object(s) valid")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logsetup.configure(args.log_format, args.log_level)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
