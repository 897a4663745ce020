"""Event-time order across the three inputs of one partition number (pure, no Kafka).

Kafka Streams' rule (PartitionGroup, KIP-695), kept here: of the heads of the input partitions'
buffers, take the record with the smallest (timestamp, topic rank, offset); each partition's
log order is kept because only heads are taken. A lane with nothing buffered blocks the merge
while the broker is known to hold more for it (`behind`), and otherwise for at most `max_idle`
from the moment it first held the others up (Kafka Streams' idle deadline, reset when the lane
receives records): a record still on its way to it could belong before theirs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")


@dataclass(eq=False)
class Lane(Generic[R]):
    """One input partition's buffered records, in log order."""

    rank: int
    """Tie-break between topics on equal timestamps (tasks 0, cart-adds 1, orders 2)."""
    records: deque[R] = field(default_factory=deque)
    behind: bool = True
    """The broker holds records for this partition past what is buffered (or it is unknown)."""
    waiting_since: float | None = None
    """When this empty lane first held up records of the others (None: it has not)."""

    def add(self, records: list[R]) -> None:
        self.records.extend(records)
        self.waiting_since = None

    def blocks(self, now: float, max_idle: float) -> bool:
        """An empty lane that may still receive an earlier record (starts its idle clock)."""
        if self.behind:
            return True
        if max_idle <= 0:
            return False
        if self.waiting_since is None:
            self.waiting_since = now
        return now - self.waiting_since < max_idle


def merge_ready(
    lanes: list[Lane[R]],
    key: Callable[[R], tuple[int, int]],
    now: float,
    max_idle: float,
    limit: int | None = None,
) -> list[R]:
    """Take records off the lanes' heads in merge order until an empty lane blocks.

    `key(record)` is (timestamp, offset); the lane's rank goes between them.
    """
    out: list[R] = []
    while limit is None or len(out) < limit:
        best: Lane[R] | None = None
        best_key: tuple[int, int, int] | None = None
        for lane in lanes:
            if lane.records:
                ts, offset = key(lane.records[0])
                k = (ts, lane.rank, offset)
                if best_key is None or k < best_key:
                    best, best_key = lane, k
        if best is None:
            return out
        # every empty lane is asked (no short-circuit): each starts its idle clock now
        if any([lane.blocks(now, max_idle) for lane in lanes if not lane.records]):
            return out
        out.append(best.records.popleft())
    return out
