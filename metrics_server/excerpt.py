"""Bounded, single-line excerpts of client input for logs and error messages.

Anything a client or a manifest author controls (paths, object names, query strings,
gRPC metadata, YAML values) goes through `excerpt` before it is logged, so one request
can neither flood the log nor forge extra log lines.
"""

from __future__ import annotations

DEFAULT_LIMIT = 200


def excerpt(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """`value` as printable text of at most about `limit` characters, control characters escaped.

    Strings are shown as themselves (not repr'd), other values with repr(); an elided tail is
    replaced by `...(+N chars)` so the reader knows the input was longer.
    """
    text = value if isinstance(value, str) else repr(value)
    total = len(text)
    head = text[: max(limit, 0)]
    if not head.isprintable():
        head = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in head)
        head = head[:limit]
    if total > limit:
        return f"{head}...(+{total - limit} chars)"
    return head
