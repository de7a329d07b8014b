"""HTTP `Accept` negotiation the way Kubernetes' Go servers do it.

Kubernetes parses `Accept` with github.com/munnerz/goautoneg (`ParseAccept`) and then
walks the sorted clauses (k8s.io/apiserver pkg/endpoints/handlers/negotiation/negotiate.go,
`NegotiateMediaTypeOptions`). The quirks are kept on purpose so that our answers match a Go
server's for the same header: clauses that cannot be parsed are dropped, `q=0` is not
"refused", and the sort is goautoneg's `Less` (q first, then concrete types before `*`)
applied by an insertion sort, which is what Go's `sort.Sort` does for up to 12 clauses.

We serve JSON only, so a clause is usable when it names `application/json`,
`application/*` or `*/*`; protobuf and YAML clauses are skipped, as a Go server without
those serializers would skip them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Clause:
    type: str
    subtype: str
    q: float = 1.0
    params: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_json(self) -> bool:
        """Whether a JSON serializer matches this clause (type and subtype, with wildcards)."""
        if self.type == "*" and self.subtype == "*":
            return True
        return self.type == "application" and self.subtype in ("json", "*")


def _less(a: Clause, b: Clause) -> bool:
    # goautoneg's acceptSlice.Less, verbatim in meaning (it is not a strict weak order).
    if a.q > b.q:
        return True
    if a.type != "*" and b.type == "*":
        return True
    return a.subtype != "*" and b.subtype == "*"


def _q(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0  # strconv.ParseFloat's zero value on error


def parse_accept(header: str) -> list[Clause]:
    """goautoneg.ParseAccept: the clauses of an Accept header, sorted by preference."""
    clauses: list[Clause] = []
    for part in header.split(","):
        part = part.strip(" ")
        if not part:
            continue
        media, _, rest = part.partition(";")
        mtype, slash, subtype = media.partition("/")
        mtype = mtype.strip(" ")
        if not slash:
            if mtype != "*":
                continue
            subtype = "*"
        elif "/" in subtype:
            continue
        subtype = subtype.strip(" ")
        q = 1.0
        params: dict[str, str] = {}
        if rest:
            for param in rest.split(";"):
                key, eq, value = param.partition("=")
                if not eq or "=" in value:
                    continue
                key = key.strip(" ")
                if key == "q":
                    q = _q(value)
                else:
                    params[key] = value.strip(" ")
        clauses.append(Clause(mtype, subtype, q, params))
    for i in range(1, len(clauses)):  # Go's insertionSort (sort.Sort for n <= 12)
        j = i
        while j > 0 and _less(clauses[j], clauses[j - 1]):
            clauses[j], clauses[j - 1] = clauses[j - 1], clauses[j]
            j -= 1
    return clauses


def _usable(clause: Clause) -> bool:
    """The parameter checks of `acceptMediaTypeOptions` that do not depend on the endpoint's
    transform: `stream` must be `watch` (JSON has a stream serializer), `sv` is never allowed."""
    stream = clause.params.get("stream", "")
    if stream and stream != "watch":
        return False
    return not clause.params.get("sv", "")


def requested_conversion(clause: Clause) -> tuple[str, str, str] | None:
    """(group, version, kind) asked for with `g`, `v`, `as`; None when none of them is given."""
    p = clause.params
    if not ({"g", "v", "as"} & p.keys()):
        return None
    return p.get("g", ""), p.get("v", ""), p.get("as", "")


def negotiate_conversion(
    header: str, allowed: frozenset[tuple[str, str, str]]
) -> tuple[str, str, str] | None:
    """The first JSON clause that asks for one of the `allowed` conversions, as
    NegotiateMediaTypeOptions with an endpoint whose AllowsMediaTypeTransform accepts exactly
    those; None when no clause does (an empty header never asks for a conversion)."""
    if not header:
        return None
    for clause in parse_accept(header):
        if not clause.is_json or not _usable(clause):
            continue
        convert = requested_conversion(clause)
        if convert is not None and convert in allowed:
            return convert
    return None


def accepts_json(header: str) -> bool:
    """kube-openapi's handlers (pkg/handler, pkg/handler3): an empty Accept is `*/*`; a clause
    whose type is `application` or `*` and whose subtype is `json` or `*` selects JSON,
    whatever its parameters."""
    return any(
        c.type in ("application", "*") and c.subtype in ("json", "*") for c in parse_accept(header or "*/*")
    )
