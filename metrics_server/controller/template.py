"""AnalysisValueTemplate queries: the part of Go's text/template that upstream users write.

Upstream renders `spec.query` with Go's text/template and `Analysis.spec.args` as the
data, so placeholders look like `{{.workload}}`. Supported here:

    {{.name}}   {{ .name }}            a field of args
    {{index . "name"}}                 a key that is not a Go identifier (e.g. with dashes)
    {{- .name -}}                      Go's whitespace trimming markers
    {{/* a comment */}}                comments

Unlike Go (which prints `<no value>`), a placeholder without a matching arg is an error,
and every other action (pipelines, functions, if/range/with) is a clear error rather than a
query that silently asks the backend for something else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["TemplateError", "placeholders", "render"]


class TemplateError(ValueError):
    pass


_ACTION = re.compile(r"\{\{(?P<ltrim>-\s)?(?P<body>.*?)(?P<rtrim>\s-)?\}\}", re.S)
_FIELD = re.compile(r"^\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_INDEX = re.compile(r'^index\s+\.\s+(?:"(?P<dq>(?:[^"\\]|\\.)*)"|`(?P<bq>[^`]*)`)$')
_COMMENT = re.compile(r"^/\*.*\*/$", re.S)


def _parse(query: str) -> list[tuple[str, str | None, bool, bool]]:
    """Split into (text, arg name or None for comments, trim-left, trim-right) pieces."""
    pieces: list[tuple[str, str | None, bool, bool]] = []
    pos = 0
    for m in _ACTION.finditer(query):
        text = query[pos : m.start()]
        if "}}" in text:
            raise TemplateError(f"unexpected '}}}}' at offset {text.index('}}') + pos} in query")
        body = m.group("body").strip()
        ltrim, rtrim = bool(m.group("ltrim")), bool(m.group("rtrim"))
        if _COMMENT.match(body):
            pieces.append((text, None, ltrim, rtrim))
        elif fm := _FIELD.match(body):
            pieces.append((text, fm.group("name"), ltrim, rtrim))
        elif im := _INDEX.match(body):
            key = im.group("dq") if im.group("dq") is not None else im.group("bq")
            if im.group("dq") is not None:
                key = bytes(key, "utf-8").decode("unicode_escape")
            pieces.append((text, key, ltrim, rtrim))
        else:
            raise TemplateError(
                f"unsupported template action '{{{{{m.group('body')}}}}}': only {{{{.name}}}} and "
                f'{{{{index . "name"}}}} placeholders are supported'
            )
        pos = m.end()
    rest = query[pos:]
    if "{{" in rest:
        raise TemplateError(f"unclosed action '{{{{' at offset {rest.index('{{') + pos} in query")
    if "}}" in rest:
        raise TemplateError(f"unexpected '}}}}' at offset {rest.index('}}') + pos} in query")
    pieces.append((rest, None, False, False))
    return pieces


def placeholders(query: str) -> list[str]:
    """The arg names a query uses, in order (raises TemplateError on unsupported syntax)."""
    return [name for _text, name, _l, _r in _parse(query) if name is not None]


def render(query: str, args: Mapping[str, str]) -> str:
    """Fill the placeholders from `args`; raises TemplateError naming what is missing or unsupported."""
    pieces = _parse(query)
    missing = [name for _t, name, _l, _r in pieces if name is not None and name not in args]
    if missing:
        have = ", ".join(sorted(args)) or "none"
        names = list(dict.fromkeys(missing))
        uses = ", ".join("{{." + n + "}}" for n in names)
        raise TemplateError(
            f"query uses {uses} but Analysis spec.args does not set "
            f"{', '.join(repr(n) for n in names)} (args given: {have})"
        )
    out: list[str] = []
    trim_next = False
    for text, name, ltrim, rtrim in pieces:
        if trim_next:
            text = text.lstrip()
        if ltrim:
            text = text.rstrip()
        out.append(text)
        if name is not None:
            out.append(str(args[name]))
        trim_next = rtrim
    return "".join(out)
