"""A small, deterministic JSON path: the GJSON subset KEDA's metrics-api `valueLocation` uses.

Syntax (both styles may be mixed):

- `a.b.c` — object keys; `a.0.b` or `a[0].b` — array index (negative counts from the end);
- `a.#.b` or `a[*].b` — every element of an array (the result is then a list);
- `a.#` as the last component — the length of the array `a`;
- `\\.` escapes a dot inside a key (`labels.app\\.kubernetes\\.io/name`); `['a.b']` quotes a key;
- a leading `$` or `$.` (JSONPath style) is ignored.

`select` returns the value at the path; a path with `#`/`*` returns a list of values.
Missing keys are errors with the path that failed, never a silent None.
"""

from __future__ import annotations

from typing import Any

from providers.base import BackendError

EACH = object()  # `#` / `[*]`: every element
COUNT = object()  # trailing `#`: the array's length

Component = str | int | object


def parse(path: str) -> list[Component]:
    """Split `path` into keys, indices, EACH and COUNT."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:].lstrip(".")
    parts: list[Component] = []
    buf: list[str] = []
    raw: list[bool] = []  # whether each part was quoted (a quoted key is never an index)
    i = 0

    def flush() -> None:
        if buf:
            parts.append("".join(buf))
            raw.append(False)
            buf.clear()

    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == ".":
            flush()
            i += 1
            continue
        if ch == "[":
            flush()
            close = text.find("]", i)
            if close < 0:
                raise BackendError(f"value path {path!r}: unclosed '['")
            inner = text[i + 1 : close].strip()
            if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
                parts.append(inner[1:-1])
                raw.append(True)
            elif inner in ("*", "#"):
                parts.append("#")
                raw.append(False)
            else:
                parts.append(inner)
                raw.append(False)
            i = close + 1
            continue
        buf.append(ch)
        i += 1
    flush()
    if not parts:
        raise BackendError("the value path is empty")
    out: list[Component] = []
    for n, (part, quoted) in enumerate(zip(parts, raw, strict=True)):
        assert isinstance(part, str)
        if quoted:
            out.append(part)
        elif part == "#":
            out.append(COUNT if n == len(parts) - 1 else EACH)
        elif part.lstrip("-").isdigit():
            out.append(int(part))
        else:
            out.append(part)
    return out


def _show(parts: list[Component]) -> str:
    shown = []
    for part in parts:
        if part is EACH or part is COUNT:
            shown.append("#")
        else:
            shown.append(str(part).replace(".", "\\."))
    return ".".join(shown) or "$"


def _step(node: Any, part: Component, done: list[Component], path: str) -> Any:
    if isinstance(part, int) and not isinstance(part, bool):
        if isinstance(node, list):
            try:
                return node[part]
            except IndexError:
                raise BackendError(
                    f"value path {path!r}: index {part} out of range at {_show(done)!r} ({len(node)} items)"
                ) from None
        if isinstance(node, dict) and str(part) in node:
            return node[str(part)]
    elif isinstance(part, str):
        if isinstance(node, dict):
            if part in node:
                return node[part]
            keys = ", ".join(sorted(str(k) for k in node)[:8])
            raise BackendError(f"value path {path!r}: no key {part!r} at {_show(done)!r} (keys: {keys})")
    kind = type(node).__name__ if node is not None else "null"
    raise BackendError(f"value path {path!r}: cannot take {_show([part])!r} of a {kind} at {_show(done)!r}")


def select(document: Any, path: str | list[Component]) -> Any:
    """The value at `path` in `document` (a list when the path contains `#`/`*`)."""
    parts = parse(path) if isinstance(path, str) else path
    shown = path if isinstance(path, str) else _show(parts)
    return _walk(document, parts, [], shown)


def _walk(node: Any, parts: list[Component], done: list[Component], path: str) -> Any:
    for n, part in enumerate(parts):
        if part is COUNT:
            if not isinstance(node, list):
                raise BackendError(f"value path {path!r}: '#' needs an array at {_show(done)!r}")
            return len(node)
        if part is EACH:
            if not isinstance(node, list):
                raise BackendError(f"value path {path!r}: '#' needs an array at {_show(done)!r}")
            rest = parts[n + 1 :]
            return [_walk(item, rest, [*done, i], path) for i, item in enumerate(node)]
        node = _step(node, part, done, path)
        done = [*done, part]
    return node


def has_wildcard(path: str) -> bool:
    return any(part is EACH for part in parse(path))
