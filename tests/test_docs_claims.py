"""What the docs say about values is what the code does (issue 9, item 6)."""

from __future__ import annotations

import re
from pathlib import Path

from metrics_server.state import format_value

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _sentence(start: str, end: str) -> str:
    begin = README.index(start)
    return README[begin : README.index(end, begin)]


def test_readme_value_examples_are_what_we_print() -> None:
    ours = _sentence("`value` is the shortest decimal", "That is not Go's `%v`")
    examples = re.findall(r"`([-+0-9.e]+)`", ours)
    assert len(examples) >= 8, examples
    for text in examples:
        assert format_value(float(text)) == text


def test_readme_says_where_go_percent_v_differs() -> None:
    go = _sentence("That is not Go's `%v`", "upstream's text depends")
    examples = re.findall(r"`([-+0-9.e]+)`", go)
    assert examples == ["1e+06", "1.23456789e+08"]
    for text in examples:  # Go's exponent form; ours is plain below 1e21
        assert format_value(float(text)) == str(int(float(text)))
