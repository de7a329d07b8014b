"""Kubernetes label selectors (`labels.Parse` syntax) and their LabelSelector JSON form.

Supported: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k`
(does not exist), and `k>n` / `k<n` (integer comparison, as Kubernetes allows).
Requirements are ANDed and separated by commas. As in Kubernetes, `!=` and `notin` match
objects that lack the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metrics_server.names import dns1123_subdomain_errors

__all__ = ["Requirement", "Selector", "SelectorError", "parse_selector"]

_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|<|>|[^\s=!(),<>]+)")


class SelectorError(ValueError):
    """A selector Kubernetes would reject; the message says where and why."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        if op in ("!=", "notin"):
            return self.key not in labels or labels[self.key] not in self.values
        if self.key not in labels:
            return False
        have = int64(labels[self.key])
        if have is None:
            return False  # as Kubernetes: a label that is not an int64 never matches Gt/Lt
        bound = int64(self.values[0])
        assert bound is not None  # parse_selector admits only int64 bounds
        return have > bound if op == "gt" else have < bound


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()
    text: str = ""

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def to_label_selector(self) -> dict[str, Any]:
        """The metav1.LabelSelector JSON for this selector (as custom-metrics-apiserver echoes it)."""
        match_labels: dict[str, str] = {}
        expressions: list[dict[str, Any]] = []
        names = {"in": "In", "notin": "NotIn", "exists": "Exists", "!": "DoesNotExist", "!=": "NotIn"}
        for r in self.requirements:
            if r.operator == "=" and r.key not in match_labels:
                match_labels[r.key] = r.values[0]
            elif r.operator == "=":
                expressions.append({"key": r.key, "operator": "In", "values": list(r.values)})
            elif r.operator in ("gt", "lt"):
                expressions.append(
                    {"key": r.key, "operator": "Gt" if r.operator == "gt" else "Lt", "values": list(r.values)}
                )
            else:
                item: dict[str, Any] = {"key": r.key, "operator": names[r.operator]}
                if r.values:
                    item["values"] = list(r.values)
                expressions.append(item)
        out: dict[str, Any] = {}
        if match_labels:
            out["matchLabels"] = match_labels
        if expressions:
            out["matchExpressions"] = expressions
        return out


_INT64 = re.compile(r"[-+]?[0-9]{1,19}")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def int64(text: str) -> int | None:
    """`text` as Go's strconv.ParseInt(text, 10, 64) reads it, or None (never a huge int)."""
    if not _INT64.fullmatch(text):
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


def _check_key(key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or dns1123_subdomain_errors(prefix)):
        raise SelectorError(f"invalid label key {key!r}: prefix must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not _NAME.match(name):
        raise SelectorError(
            f"invalid label key {key!r}: name part must be 63 characters or less, start and end with an"
            " alphanumeric character and contain only alphanumerics, '-', '_' or '.'"
        )


def _check_value(value: str) -> None:
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(
            f"invalid label value {value!r}: must be 63 characters or less, empty or beginning and ending"
            " with an alphanumeric character, with '-', '_', '.' or alphanumerics between"
        )


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:  # pragma: no cover - the pattern matches any non-space character
            raise SelectorError(f"unable to parse selector {text!r} at position {pos}")
        out.append(m.group(1))
        pos = m.end()
    return out


def parse_selector(text: str | None) -> Selector:
    """Parse a Kubernetes label selector; raise SelectorError with a clear message if invalid."""
    if text is None or not text.strip():
        return Selector()
    toks = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def peek() -> str | None:
        return toks[i] if i < len(toks) else None

    shown_text = text if len(text) <= 200 else text[:200] + "..."

    def fail(msg: str) -> SelectorError:
        return SelectorError(f"unable to parse labelSelector {shown_text!r}: {msg}")

    while True:
        tok = peek()
        if tok is None:
            raise fail("expected a requirement")
        if tok == "!":
            i += 1
            key = peek()
            if key is None or key in ("=", "==", "!=", "!", "(", ")", ",", "<", ">"):
                raise fail("'!' must be followed by a label key")
            _check_key(key)
            i += 1
            reqs.append(Requirement(key, "!"))
        else:
            if tok in ("=", "==", "!=", "(", ")", ",", "<", ">"):
                raise fail(f"expected a label key, found {tok!r}")
            key = tok
            _check_key(key)
            i += 1
            op = peek()
            if op is None or op == ",":
                reqs.append(Requirement(key, "exists"))
            elif op in ("=", "==", "!="):
                i += 1
                value = peek()
                if value is None or value == ",":
                    value = ""  # `k=` selects an empty value, as in Kubernetes
                elif value in ("=", "==", "!=", "!", "(", ")", "<", ">"):
                    raise fail(f"expected a value after {op!r}, found {value!r}")
                else:
                    i += 1
                _check_value(value)
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            elif op in ("<", ">"):
                i += 1
                value = peek()
                if value is None or int64(value) is None:
                    shown = value if value is None or len(value) <= 40 else value[:40] + "..."
                    raise fail(f"{op!r} needs a 64-bit integer value, found {shown!r}")
                i += 1
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
            elif op in ("in", "notin"):
                i += 1
                if peek() != "(":
                    raise fail(f"expected '(' after {op!r}")
                i += 1
                values: list[str] = []
                while True:
                    v = peek()
                    if v is None:
                        raise fail("missing ')'")
                    if v == ")":
                        i += 1
                        break
                    if v == ",":
                        values.append("")  # `in (a,,b)` includes the empty value
                        i += 1
                        continue
                    if v in ("=", "==", "!=", "!", "(", "<", ">"):
                        raise fail(f"unexpected {v!r} in value list")
                    _check_value(v)
                    values.append(v)
                    i += 1
                    if peek() == ",":
                        i += 1
                        if peek() == ")":
                            values.append("")
                    elif peek() != ")":
                        raise fail("values must be separated by ','")
                if not values:
                    raise fail(f"{op!r} needs at least one value")
                reqs.append(Requirement(key, op, tuple(sorted(set(values)))))
            else:
                raise fail(f"unknown operator {op!r} after key {key!r}")
        nxt = peek()
        if nxt is None:
            break
        if nxt != ",":
            raise fail(f"expected ',' between requirements, found {nxt!r}")
        i += 1
    return Selector(tuple(reqs), text)
