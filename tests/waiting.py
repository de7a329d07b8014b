"""Waiting for a condition in async tests: poll, and fail with one message past a bound.

The bound is generous (a loaded CI machine is slow); it is a failure guard, never a timed
assertion about speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(cond: Callable[[], object], within: float, poll: float = 0.02) -> float:
    """Seconds until `cond()` was true; AssertionError if it is still false after `within` s."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not cond():
        if loop.time() - start > within:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(poll)
    return loop.time() - start
