"""Which fetched changelog records table recovery has not applied yet, per partition.

Faust's recovery decides that a changelog partition whose consumer position has reached the
highwater, while the last offset it applied has not, ends in aborted transactions, and declares
it recovered; records it is given after that are skipped as already seen. The consumer's position
moves when a batch is *fetched*, before its records are handed to recovery's queue, so a check
that lands while a batch is on its way wipes the partition's recovered state: a SIGKILL test
run lost every Xingtu task that way (fees missing, matched cart-adds rejected). The consumer
answers recovery's `position()` with the first record still on its way (`held_back`), so the
check only fires once every fetched record was applied: when the rest really is aborted.

Pure bookkeeping (no Faust, no I/O); `streams.consumer` feeds it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class _Partition:
    epoch: int = 0
    queued: deque[int] = field(default_factory=deque)  # handed over, not yet taken, in order
    next_to_hand: int | None = None  # first record of the batch being handed over
    dropped: int | None = None  # first record fetched and never handed over (until a seek)


class ChangelogFlow:
    def __init__(self) -> None:
        self._parts: dict[Hashable, _Partition] = {}
        self._epochs = 0
        self._dropped: set[Hashable] = set()  # partitions with a `dropped` offset

    def _part(self, tp: Hashable) -> _Partition:
        part = self._parts.get(tp)
        if part is None:
            self._epochs += 1
            part = self._parts[tp] = _Partition(epoch=self._epochs)
        return part

    def epoch(self, tp: Hashable) -> int | None:
        part = self._parts.get(tp)
        return part.epoch if part is not None else None

    def sought(self, tp: Hashable) -> None:
        """Reading restarts elsewhere: forget what was on its way (a new epoch, so records of the
        old one taken later do not count)."""
        self._parts.pop(tp, None)
        self._dropped.discard(tp)

    def fetched(self, tp: Hashable, first_offset: int) -> int:
        """A batch for `tp` is about to be handed over; returns the epoch to tag its records."""
        part = self._part(tp)
        if part.next_to_hand is None:
            part.next_to_hand = first_offset
        return part.epoch

    def handing(self, tp: Hashable, offset: int) -> None:
        """Called before the record goes into recovery's queue (it may be taken at once)."""
        part = self._part(tp)
        part.queued.append(offset)
        part.next_to_hand = offset + 1

    def not_handed(self, tp: Hashable, offset: int) -> None:
        """A fetched record was not handed over (the flow stopped, the partition paused): it
        must be fetched again (`refetch`) unless the partition is sought first."""
        self._drop(tp, self._part(tp), offset)

    def _drop(self, tp: Hashable, part: _Partition, offset: int) -> None:
        if part.dropped is None or offset < part.dropped:
            part.dropped = offset
        self._dropped.add(tp)

    def batch_done(self, tp: Hashable, epoch: int) -> None:
        part = self._parts.get(tp)
        if part is not None and part.epoch == epoch:
            part.next_to_hand = None

    def discarded(self) -> None:
        """Recovery's queue was cleared: what was queued was never applied."""
        for tp, part in self._parts.items():
            if part.queued:
                first = part.queued[0]
                part.queued.clear()
                self._drop(tp, part, first)

    @property
    def refetch_due(self) -> bool:
        return bool(self._dropped)  # checked after every fetch: no scan

    def refetch(self) -> list[tuple[Hashable, int]]:
        """(partition, offset) to seek back to; the seek makes the partition `sought`."""
        out = []
        for tp in self._dropped:
            dropped = self._parts[tp].dropped
            if dropped is not None:
                out.append((tp, dropped))
        return out

    def taken(self, tp: Hashable, offset: int, epoch: int | None) -> None:
        """Recovery took the record at `offset` off its queue."""
        part = self._parts.get(tp)
        if part is None or epoch != part.epoch:
            return
        queued = part.queued
        while queued and queued[0] <= offset:
            queued.popleft()

    def held_back(self, tp: Hashable) -> int | None:
        """The first offset fetched for `tp` that recovery has not taken yet, or None if it has
        taken everything that was fetched."""
        part = self._parts.get(tp)
        if part is None:
            return None
        waiting = [
            o for o in (part.queued[0] if part.queued else None, part.next_to_hand, part.dropped)
            if o is not None
        ]
        return min(waiting) if waiting else None
