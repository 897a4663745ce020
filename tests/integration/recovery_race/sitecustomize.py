"""Loaded at start-up by the worker of `test_recovery_race` only (its PYTHONPATH points here).

Widens a race in Faust's table recovery so that a test hits it every time instead of once in
dozens of restarts: recovery's idle check runs every 0.2 s instead of every 5 s, and a changelog
record that would go into recovery's empty queue waits 0.8 s first, while the fetch has already
moved the consumer's position past it. Without `streams.changelog`, recovery takes the moved
position for "the rest is aborted transactions" and skips the records still on their way.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import faust.tables.recovery as _recovery
from faust.topics import Topic


class _QuickIdleChecks:
    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def wait_for(fut: Any, timeout: float | None = None) -> Any:
        return await asyncio.wait_for(fut, 0.2 if timeout is None else min(timeout, 0.2))


_recovery.asyncio = _QuickIdleChecks()  # type: ignore[assignment]
_compile_decode = Topic._compile_decode


def _compile_slow_changelog_decode(self: Any) -> None:
    _compile_decode(self)
    decode = self.decode

    async def slow_decode(message: Any, *, propagate: bool = False) -> Any:
        # the conductor decodes a record just before putting it into the channel's queue
        if str(message.topic).endswith("-changelog") and self.queue.empty():
            print("race shim: changelog record held 0.8 s", file=sys.stderr, flush=True)
            await asyncio.sleep(0.8)
        return await decode(message, propagate=propagate)

    self.decode = slow_decode


Topic._compile_decode = _compile_slow_changelog_decode  # type: ignore[method-assign]
