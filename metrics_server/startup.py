"""Start-up failures the operator can fix, each with a one-line explanation (no traceback)."""

from __future__ import annotations


class StartupError(Exception):
    """`serve` cannot start: the message says what is missing or taken and how to fix it."""
