"""When the dedup table forgets an event id: `dedup_retention_days` after it was first decided.

The table of decided event ids exists to drop redeliveries (a producer's retry, a replayed
batch); kept forever it grows with every event, and a flood of hostile records grows it without
bound. An id is remembered from the wall-clock time it was first decided, not its `occurred_at`
or its record's timestamp: both are the producer's to forge, and a forged future time would
make the worker forget every id at once.

Pure bookkeeping (no Faust, no I/O): a min-heap of (first decided, key). The shell removes due
keys from its local store only; the table's changelog forgets them by itself (its topic is
`compact,delete` with the same retention), so forgetting costs no extra writes to Kafka.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

DEFAULT_LIMIT = 64
"""At most this many ids forgotten per processed record: a backlog of due ids is worked off
over the following records instead of stalling one."""


class Expiry:
    """Which remembered ids are due to be forgotten."""

    def __init__(self, retention_ms: int) -> None:
        if retention_ms <= 0:
            raise ValueError(f"retention must be positive, not {retention_ms} ms")
        self.retention_ms = retention_ms
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def expired(self, seen_ms: int, now_ms: int) -> bool:
        return now_ms - seen_ms >= self.retention_ms

    def remember(self, key: str, seen_ms: int) -> None:
        heapq.heappush(self._heap, (seen_ms, key))

    def rebuild(self, entries: Iterable[tuple[str, object]], now_ms: int) -> list[str]:
        """Start over from the table's current (key, first decided) entries, e.g. after a
        rebalance brought partitions recovered from their changelogs. Returns the keys that are
        already due, or whose value is not a time this version wrote: forget those at once."""
        heap: list[tuple[int, str]] = []
        drop = []
        for key, seen_ms in entries:
            if type(seen_ms) is not int or self.expired(seen_ms, now_ms):
                drop.append(key)
            else:
                heap.append((seen_ms, key))
        heapq.heapify(heap)
        self._heap = heap
        return drop

    def any_due(self, now_ms: int) -> bool:
        """Cheap enough for every record: is the oldest remembered id due?"""
        heap = self._heap
        return bool(heap) and now_ms - heap[0][0] >= self.retention_ms

    def due(self, now_ms: int, limit: int = DEFAULT_LIMIT) -> list[tuple[str, int]]:
        """Remove and return up to `limit` (key, first decided) entries whose retention has
        passed, oldest first."""
        heap = self._heap
        out: list[tuple[str, int]] = []
        while heap and len(out) < limit and self.expired(heap[0][0], now_ms):
            seen_ms, key = heapq.heappop(heap)
            out.append((key, seen_ms))
        return out
