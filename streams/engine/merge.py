"""Event-time order across the three inputs of one partition number (pure, no Kafka).

Of the heads of the input partitions' buffers, take the record with the smallest (timestamp,
topic rank, offset); each partition's log order is kept because only heads are taken (Kafka
Streams' PartitionGroup). While an input partition has nothing buffered:
- if the broker is known to hold more for it (`behind`), nothing is taken: its next record
  could belong first;
- if it is caught up, a record of the others is taken only once the broker has confirmed the
  empty partition still caught up (a fetch response, `Lane.confirmed`) at least `max_idle`
  after that record arrived: producers batch per partition, so a record of a sparse input can
  reach the broker a linger period after records of busy inputs that were produced after it,
  and time the worker spent deciding other records is no evidence that it did not (a backlog
  released at once was decided out of order that way).
Kafka Streams waits once per empty period (its idle deadline is reset only when the partition
receives data) and then decides freely; measuring the wait from each record's arrival keeps
every decision in event-time order whenever cross-input skew stays below `max_idle`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")


@dataclass(eq=False)
class Lane(Generic[R]):
    """One input partition's buffered records, in log order, with when they arrived."""

    rank: int
    """Tie-break between topics on equal timestamps (tasks 0, cart-adds 1, orders 2)."""
    records: deque[R] = field(default_factory=deque)
    behind: bool = True
    """The broker holds records for this partition past what is buffered (or it is unknown)."""
    confirmed: float = float("inf")
    """When the broker last said where this partition ends (the fetch response `behind` comes
    from), on the clock of `now`; +inf: as of any time (a caller that does not track it)."""
    arrivals: deque[list[float]] = field(default_factory=deque)
    """[arrival time, records left] per added batch, oldest first."""

    def add(self, records: list[R], now: float) -> None:
        if records:
            self.records.extend(records)
            self.arrivals.append([now, len(records)])

    @property
    def head_arrival(self) -> float:
        """When the head record arrived (-inf for records added without an arrival time)."""
        return self.arrivals[0][0] if self.arrivals else float("-inf")

    def pop(self) -> R:
        record = self.records.popleft()
        if self.arrivals:
            batch = self.arrivals[0]
            batch[1] -= 1
            if batch[1] <= 0:
                self.arrivals.popleft()
        return record


def merge_ready(
    lanes: list[Lane[R]],
    key: Callable[[R], tuple[int, int]],
    now: float,
    max_idle: float,
    limit: int | None = None,
) -> list[R]:
    """Take records off the lanes' heads in merge order until an empty lane holds them up.

    `key(record)` is (timestamp, offset); the lane's rank goes between them.
    """
    out: list[R] = []
    while limit is None or len(out) < limit:
        best: Lane[R] | None = None
        best_key: tuple[int, int, int] | None = None
        empty = False
        confirmed = now
        for lane in lanes:
            if lane.records:
                ts, offset = key(lane.records[0])
                k = (ts, lane.rank, offset)
                if best_key is None or k < best_key:
                    best, best_key = lane, k
            elif lane.behind:
                return out
            else:
                empty = True
                confirmed = min(confirmed, lane.confirmed)
        if best is None:
            return out
        if empty and max_idle > 0 and confirmed - best.head_arrival < max_idle:
            return out
        out.append(best.pop())
    return out

