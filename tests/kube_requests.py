"""How kube-apiserver turns an HTTP request into authorizer attributes, and how it refuses one.

Read from kubernetes/apiserver (facts only): pkg/endpoints/request/requestinfo.go
(`RequestInfoFactory.NewRequestInfo`), pkg/endpoints/handlers/responsewriters/errors.go
(`forbiddenMessage`, `ForbiddenStatusError`), pkg/endpoints/filters/authentication.go
(`Unauthorized`) and k8s.io/apimachinery's `errors.NewForbidden` / `NewUnauthorized`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.rbac import Attributes, User

JSON = dict[str, Any]

_API_PREFIXES = {"api", "apis"}
_GROUPLESS_PREFIXES = {"api"}
_SPECIAL_VERBS = {"proxy", "watch"}
_SPECIAL_VERBS_NO_SUBRESOURCES = {"proxy"}
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


def _exact_name(field_selector: str) -> str:
    """fields.Selector.RequiresExactMatch("metadata.name") for `a=b,c==d` selectors."""
    for term in field_selector.split(","):
        for op in ("==", "="):
            key, sep, value = term.partition(op)
            if sep and not key.endswith("!") and key.strip() == "metadata.name":
                return value.strip()
    return ""


def _is_path_segment_name(name: str) -> bool:
    return name not in (".", "..") and "/" not in name and "%" not in name


def request_attributes(method: str, path: str, query: Mapping[str, str], user: User) -> Attributes:
    """The authorizer attributes of a request, as NewRequestInfo derives them."""
    non_resource = Attributes(user, method.lower(), False, path=path)
    parts = [p for p in path.strip("/").split("/")] if path.strip("/") else []
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix not in _GROUPLESS_PREFIXES:
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    verb = _METHOD_VERBS.get(method.upper(), "")
    if parts[0] in _SPECIAL_VERBS:
        verb, parts = parts[0], parts[1:]
    namespace = ""
    if parts and parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0] if parts else ""
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb not in _SPECIAL_VERBS_NO_SUBRESOURCES else ""
    if not name and verb == "get":
        watch = query.get("watch")
        verb = "watch" if watch is not None and watch not in _GO_FALSE else "list"
        selected = _exact_name(query.get("fieldSelector", ""))
        if selected and _is_path_segment_name(selected):
            name = selected
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(user, verb, True, namespace, group, version, resource, subresource, name, path)


def _forbidden_message(attrs: Attributes) -> str:
    user = attrs.user.name
    if not attrs.resource_request:
        return f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" {where}'


def forbidden_status(attrs: Attributes, reason: str = "") -> JSON:
    """The 403 Status kube-apiserver answers to a request its authorizer did not allow."""
    text = _forbidden_message(attrs).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    err = f"{text}: {reason}" if reason else text
    group, resource = (attrs.api_group, attrs.resource) if attrs.resource_request else ("", "")
    qualified = f"{resource}.{group}" if group else resource
    if not group and not resource:
        message = f"forbidden: {err}"
    elif not attrs.name:
        message = f"{qualified} is forbidden: {err}"
    else:
        message = f'{qualified} "{attrs.name}" is forbidden: {err}'
    details: JSON = {}
    if attrs.name:
        details["name"] = attrs.name
    if group:
        details["group"] = group
    if resource:
        details["kind"] = resource
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    }


UNAUTHORIZED_STATUS: JSON = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}
