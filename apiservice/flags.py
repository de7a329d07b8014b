"""Command-line flags of the aggregated API server, named as every Kubernetes aggregated API
server names them, and the options object built from them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from apiservice import connections
from apiservice.connections import ConnectionLimits

DEFAULT_ALWAYS_ALLOW = "/healthz,/readyz,/livez"
DEFAULT_SELF_SIGNED_HOSTS = (
    "localhost,127.0.0.1,keptn-metrics.keptn-system.svc,keptn-metrics.keptn-system.svc.cluster.local"
)


def default_self_signed_hosts(namespace: str) -> str:
    """The names of our Service (`keptn-metrics`) in the server's namespace, plus loopback."""
    return f"localhost,127.0.0.1,keptn-metrics.{namespace}.svc,keptn-metrics.{namespace}.svc.cluster.local"


def _csv(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("aggregated API (custom.metrics.k8s.io, external.metrics.k8s.io)")
    g.add_argument(
        "--secure-port", type=int, default=6443, help="HTTPS port of the metrics APIs (default 6443)"
    )
    g.add_argument(
        "--bind-address",
        default=None,
        help="address the HTTPS and gRPC servers listen on (default 127.0.0.1 in local mode, 0.0.0.0 in"
        " Kubernetes mode)",
    )
    g.add_argument(
        "--tls-cert-file", help="serving certificate (PEM, may include intermediates); reloaded on change"
    )
    g.add_argument("--tls-private-key-file", help="key of --tls-cert-file (PEM); reloaded on change")
    g.add_argument(
        "--cert-dir",
        default="apiserver.local.config/certificates",
        help="where a self-signed CA and serving pair are generated when no --tls-cert-file is given",
    )
    g.add_argument(
        "--self-signed-hosts",
        default=None,
        help="comma list of DNS names / IPs the generated serving certificate is valid for"
        " (default: localhost, 127.0.0.1 and the keptn-metrics Service in --server-namespace)",
    )
    g.add_argument(
        "--insecure-http",
        action="store_true",
        help="local mode only: serve plain HTTP on 127.0.0.1 (experiments; no client certificates)",
    )
    g.add_argument(
        "--client-ca-file", help="CA bundle that verifies client certificates (user = CN, groups = O)"
    )
    g.add_argument(
        "--requestheader-client-ca-file",
        help="CA bundle that verifies the front-proxy (aggregator) client certificate",
    )
    g.add_argument(
        "--requestheader-allowed-names",
        default=None,
        help="comma list of front-proxy certificate CNs allowed to assert identities (empty: any)",
    )
    g.add_argument("--requestheader-username-headers", default=None, help="default X-Remote-User")
    g.add_argument(
        "--requestheader-uid-headers",
        default=None,
        help="headers carrying the user's UID (kube-apiserver 1.33+ sends X-Remote-Uid; default: from the "
        "authentication ConfigMap, else none)",
    )
    g.add_argument("--requestheader-group-headers", default=None, help="default X-Remote-Group")
    g.add_argument("--requestheader-extra-headers-prefix", default=None, help="default X-Remote-Extra-")
    g.add_argument(
        "--authentication-kubeconfig", help="kubeconfig for TokenReview (default: in-cluster / --kubeconfig)"
    )
    g.add_argument(
        "--authorization-kubeconfig",
        help="kubeconfig for SubjectAccessReview (default: in-cluster / --kubeconfig)",
    )
    g.add_argument(
        "--authorization-always-allow-paths",
        default=DEFAULT_ALWAYS_ALLOW,
        help="comma list of paths served without authentication or authorization",
    )
    g.add_argument(
        "--anonymous-auth",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="treat requests without credentials as system:anonymous instead of answering 401",
    )
    g.add_argument(
        "--authorization-mode",
        choices=("Webhook", "AlwaysAllow"),
        default=None,
        help="Webhook (SubjectAccessReview; default in Kubernetes mode) or AlwaysAllow (any"
        " authenticated user; default in local mode)",
    )
    g.add_argument(
        "--authentication-token-webhook-cache-ttl",
        type=float,
        default=10.0,
        help="seconds a TokenReview answer is cached (default 10)",
    )
    g.add_argument(
        "--authorization-webhook-cache-authorized-ttl",
        type=float,
        default=10.0,
        help="seconds an allowing SubjectAccessReview is cached (default 10)",
    )
    g.add_argument(
        "--authorization-webhook-cache-unauthorized-ttl",
        type=float,
        default=10.0,
        help="seconds a denying SubjectAccessReview is cached (default 10)",
    )
    g.add_argument(
        "--max-staleness",
        type=float,
        default=None,
        help="seconds after the last successful fetch a value stops being served"
        " (default: 3 x the metric's fetchIntervalSeconds)",
    )
    g.add_argument(
        "--discovery-limit",
        type=int,
        default=1000,
        help="most metric entries listed in discovery (default 1000)",
    )
    g.add_argument(
        "--cert-reload-interval",
        type=float,
        default=10.0,
        help="seconds between checks of the certificate and CA files for changes",
    )
    g.add_argument(
        "--apiservice-ca-injection",
        default="",
        help="Kubernetes mode: comma list of APIService names whose spec.caBundle is patched with"
        " the self-signed CA at start (e.g. v1beta2.custom.metrics.k8s.io)",
    )
    c = parser.add_argument_group("connections (both HTTP ports)")
    connections.add_arguments(c)
    k = parser.add_argument_group("KEDA")
    k.add_argument("--grpc-port", type=int, default=9998, help="KEDA external scaler gRPC port (0 disables)")
    k.add_argument(
        "--keda-auth",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="require a bearer token on the metrics port's values: /api/v1/metrics/{namespace}/{name}"
        " (TokenReview + SubjectAccessReview get keptnmetrics in the namespace) and /metrics"
        " (SubjectAccessReview get on the non-resource path /metrics, as for any Kubernetes"
        " component; a ServiceMonitor sends its service account token); off by default like upstream",
    )
    k.add_argument(
        "--keda-grpc-insecure",
        action="store_true",
        help="serve the gRPC scaler in plain text (default: TLS with the serving certificate)",
    )
    k.add_argument(
        "--keda-grpc-client-ca-file",
        default=None,
        help="require gRPC clients (KEDA) to present a certificate issued by this CA bundle",
    )


@dataclass(frozen=True)
class ApiOptions:
    """The aggregated API's part of `ServeConfig` (frozen: built once at the CLI boundary)."""

    kubernetes_mode: bool = False
    secure_port: int = 6443
    bind_address: str = "0.0.0.0"
    tls_cert_file: str | None = None
    tls_private_key_file: str | None = None
    cert_dir: str = "apiserver.local.config/certificates"
    self_signed_hosts: list[str] = field(default_factory=lambda: _csv(DEFAULT_SELF_SIGNED_HOSTS))
    insecure_http: bool = False
    client_ca_file: str | None = None
    requestheader_client_ca_file: str | None = None
    #: None = not given (Kubernetes mode then reads the ConfigMap); [] = any CN allowed.
    requestheader_allowed_names: list[str] | None = None
    requestheader_username_headers: list[str] | None = None
    requestheader_uid_headers: list[str] | None = None
    requestheader_group_headers: list[str] | None = None
    requestheader_extra_headers_prefix: list[str] | None = None
    authentication_kubeconfig: str | None = None
    authorization_kubeconfig: str | None = None
    kubeconfig: str | None = None
    server_namespace: str = "keptn-system"
    always_allow_paths: list[str] = field(default_factory=lambda: _csv(DEFAULT_ALWAYS_ALLOW))
    anonymous_auth: bool = False
    authorization_mode: str = "AlwaysAllow"
    token_cache_ttl: float = 10.0
    authz_allowed_ttl: float = 10.0
    authz_denied_ttl: float = 10.0
    max_staleness: float | None = None
    discovery_limit: int = 1000
    cert_reload_interval: float = 10.0
    apiservice_ca_injection: list[str] = field(default_factory=list)
    grpc_port: int = 9998
    keda_auth: bool = False
    keda_grpc_insecure: bool = False
    keda_grpc_client_ca_file: str | None = None
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace,
        kubernetes_mode: bool,
        *,
        server_namespace: str = "keptn-system",
        kubeconfig: str | None = None,
    ) -> ApiOptions:
        """The options from the flags `add_arguments` defined; `server_namespace` and `kubeconfig`
        are other components' flags, handed over by the CLI (metrics_server/config.py)."""

        def opt_csv(value: str | None) -> list[str] | None:
            return None if value is None else _csv(value)

        mode = args.authorization_mode or ("Webhook" if kubernetes_mode else "AlwaysAllow")
        insecure = bool(args.insecure_http)
        if insecure and kubernetes_mode:
            raise SystemExit(
                "--insecure-http is only allowed in local mode: Kubernetes mode always serves TLS"
            )
        cert, key = args.tls_cert_file, args.tls_private_key_file
        if bool(cert) != bool(key):
            raise SystemExit("--tls-cert-file and --tls-private-key-file must be given together")
        return cls(
            kubernetes_mode=kubernetes_mode,
            secure_port=args.secure_port,
            bind_address=args.bind_address or ("0.0.0.0" if kubernetes_mode else "127.0.0.1"),
            tls_cert_file=cert,
            tls_private_key_file=key,
            cert_dir=args.cert_dir,
            self_signed_hosts=_csv(args.self_signed_hosts or default_self_signed_hosts(server_namespace)),
            insecure_http=insecure,
            client_ca_file=args.client_ca_file,
            requestheader_client_ca_file=args.requestheader_client_ca_file,
            requestheader_allowed_names=opt_csv(args.requestheader_allowed_names),
            requestheader_username_headers=opt_csv(args.requestheader_username_headers),
            requestheader_uid_headers=opt_csv(args.requestheader_uid_headers),
            requestheader_group_headers=opt_csv(args.requestheader_group_headers),
            requestheader_extra_headers_prefix=opt_csv(args.requestheader_extra_headers_prefix),
            authentication_kubeconfig=args.authentication_kubeconfig,
            authorization_kubeconfig=args.authorization_kubeconfig,
            kubeconfig=kubeconfig,
            server_namespace=server_namespace,
            always_allow_paths=_csv(args.authorization_always_allow_paths),
            anonymous_auth=args.anonymous_auth,
            authorization_mode=mode,
            token_cache_ttl=args.authentication_token_webhook_cache_ttl,
            authz_allowed_ttl=args.authorization_webhook_cache_authorized_ttl,
            authz_denied_ttl=args.authorization_webhook_cache_unauthorized_ttl,
            max_staleness=args.max_staleness,
            discovery_limit=max(1, args.discovery_limit),
            cert_reload_interval=args.cert_reload_interval,
            apiservice_ca_injection=_csv(args.apiservice_ca_injection),
            grpc_port=args.grpc_port,
            keda_auth=args.keda_auth,
            keda_grpc_insecure=bool(args.keda_grpc_insecure),
            keda_grpc_client_ca_file=args.keda_grpc_client_ca_file,
            limits=connections.limits_from_args(args),
        )
