"""Which input offsets may be committed: exactly those of records handed to the streams and
acknowledged, in order, since the partition was last sought.

Faust's own bookkeeping treats a jump between two delivered offsets as a gap to skip (meant for
transaction markers) and tolerates one missing record after the committed offset; records that
were fetched but never delivered (a batch cut short by a rebalance) were then committed unread.
Here a jump is only skipped when the consumer vouches that nothing was left undelivered (the
consumer seeks back to the first record it did not deliver), and an acknowledgement counts only
for the record delivered in the partition's current epoch.

Pure data: no Faust, no Kafka. Partitions are any hashable key.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Partition:
    epoch: int
    position: int | None
    """Next offset to commit: one past the last record of the done prefix (None: nothing yet)."""
    pending: deque[int] = field(default_factory=deque)
    """Delivered, not yet part of the done prefix; strictly increasing."""
    done_early: set[int] = field(default_factory=set)
    """Acknowledged out of delivery order, still behind an unacknowledged record."""


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[Hashable, _Partition] = {}
        self._epochs = 0

    def reset(self, tp: Hashable, position: int | None) -> int:
        """The partition was sought to `position` (its committed offset, or None for the reset
        policy): forget what was delivered before. Returns the new epoch."""
        self._epochs += 1
        self._parts[tp] = _Partition(self._epochs, position)
        return self._epochs

    def ensure(self, tp: Hashable) -> int:
        """The partition's epoch, starting one (position unknown) if it has none yet."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition(self._new_epoch(), None)
        return part.epoch

    def forget(self, tp: Hashable) -> None:
        self._parts.pop(tp, None)

    def epoch(self, tp: Hashable) -> int | None:
        part = self._parts.get(tp)
        return part.epoch if part else None

    def deliver(self, tp: Hashable, offset: int) -> int | None:
        """Record that `offset` goes to the streams; returns the epoch to tag it with, or None
        if it must not be delivered (not after the last delivered offset of this epoch)."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition(self._new_epoch(), None)
        pending = part.pending
        last = pending[-1] if pending else (part.position - 1 if part.position is not None else -1)
        if offset <= last:
            return None
        pending.append(offset)
        return part.epoch

    def done(self, tp: Hashable, offset: int, epoch: int | None) -> bool:
        """A record finished; only one delivered in the partition's current epoch counts."""
        part = self._parts.get(tp)
        if part is None or epoch != part.epoch:
            return False
        pending = part.pending
        if not pending or offset < pending[0] or offset > pending[-1]:
            return False
        if offset != pending[0]:
            part.done_early.add(offset)
            return True
        pending.popleft()
        part.position = offset + 1
        early = part.done_early
        while pending and pending[0] in early:
            o = pending.popleft()
            early.discard(o)
            part.position = o + 1
        return True

    def position(self, tp: Hashable) -> int | None:
        part = self._parts.get(tp)
        return part.position if part else None

    def in_flight(self, tp: Hashable) -> int:
        part = self._parts.get(tp)
        return len(part.pending) if part else 0

    def partitions(self) -> Iterator[Hashable]:
        return iter(list(self._parts))

    def _new_epoch(self) -> int:
        self._epochs += 1
        return self._epochs
