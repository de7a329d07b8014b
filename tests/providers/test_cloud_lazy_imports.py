"""Cloud SDKs are heavy optional extras: they load only when a provider of their type exists."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SDK_PREFIXES = ("aiobotocore", "boto3", "botocore", "google.cloud", "azure")


def _loaded_after(code: str) -> list[str]:
    script = textwrap.dedent(
        f"""
        import importlib, json, sys
        for name in ("providers", "metrics_server", "metrics_server.cli", "metrics_server.evaluator"):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
        {code}
        print(json.dumps(sorted(sys.modules)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    return [
        m
        for m in modules
        if m.split(".")[0] in {p.split(".")[0] for p in SDK_PREFIXES}
        and any(m == p or m.startswith(p + ".") for p in SDK_PREFIXES)
    ]


def test_importing_the_server_loads_no_cloud_sdk() -> None:
    assert _loaded_after("") == []


def test_a_cloudwatch_provider_loads_only_the_aws_sdk() -> None:
    loaded = _loaded_after(
        "from providers import BackendConfig, create_backend\n"
        "        create_backend(BackendConfig(type='cloudwatch', target_server='us-east-1'))"
    )
    assert any(m.startswith("aiobotocore") for m in loaded)
    assert not any(m.startswith(("google.cloud", "azure")) for m in loaded)
