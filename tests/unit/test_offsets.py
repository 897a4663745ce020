"""The commit position only ever covers records that were delivered and acknowledged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.offsets import OffsetTracker

TP = ("orders", 0)


def test_position_follows_the_acknowledged_prefix() -> None:
    t = OffsetTracker()
    epoch = t.reset(TP, 10)
    assert t.position(TP) == 10
    for o in (10, 11, 12):
        assert t.deliver(TP, o) == epoch
    t.done(TP, 11, epoch)
    assert t.position(TP) == 10  # 10 still open
    t.done(TP, 10, epoch)
    assert t.position(TP) == 12
    t.done(TP, 12, epoch)
    assert t.position(TP) == 13
    assert t.in_flight(TP) == 0


def test_a_jump_between_delivered_offsets_is_covered_once_both_sides_are_done() -> None:
    # transaction markers at 11 and 12: the consumer vouches nothing was left undelivered
    t = OffsetTracker()
    epoch = t.reset(TP, 10)
    t.deliver(TP, 10)
    t.deliver(TP, 13)
    t.done(TP, 13, epoch)
    assert t.position(TP) == 10
    t.done(TP, 10, epoch)
    assert t.position(TP) == 14


def test_acks_from_before_a_seek_do_not_count() -> None:
    t = OffsetTracker()
    old = t.reset(TP, 0)
    for o in range(5):
        t.deliver(TP, o)
    new = t.reset(TP, 2)  # sought back to the committed offset
    t.deliver(TP, 2)
    t.deliver(TP, 3)
    assert not t.done(TP, 2, old)
    assert not t.done(TP, 3, old)
    assert t.position(TP) == 2
    assert t.done(TP, 2, new)
    assert t.position(TP) == 3


def test_an_offset_is_delivered_once_per_epoch() -> None:
    t = OffsetTracker()
    epoch = t.reset(TP, 5)
    assert t.deliver(TP, 4) is None  # before the position
    assert t.deliver(TP, 5) == epoch
    assert t.deliver(TP, 5) is None
    t.done(TP, 5, epoch)
    assert t.deliver(TP, 5) is None
    assert t.deliver(TP, 6) == epoch


def test_unknown_partition_starts_at_its_first_delivered_record() -> None:
    t = OffsetTracker()
    assert t.position(TP) is None
    epoch = t.deliver(TP, 7)
    assert epoch is not None
    t.done(TP, 7, epoch)
    assert t.position(TP) == 8
    t.forget(TP)
    assert t.position(TP) is None
    assert list(t.partitions()) == []


@given(
    n=st.integers(1, 60),
    order=st.randoms(use_true_random=False),
    skip=st.sets(st.integers(0, 59)),
)
def test_never_past_an_unacknowledged_record(n: int, order, skip: set[int]) -> None:  # type: ignore[no-untyped-def]
    t = OffsetTracker()
    epoch = t.reset(TP, 0)
    for o in range(n):
        t.deliver(TP, o)
    acked = [o for o in range(n) if o not in skip]
    order.shuffle(acked)
    for o in acked:
        t.done(TP, o, epoch)
        pos = t.position(TP)
        assert pos is not None
        # every offset below the position was acknowledged
        assert all(x in acked[: acked.index(o) + 1] for x in range(pos))
    missing = [o for o in range(n) if o in skip]
    assert t.position(TP) == (min(missing) if missing else n)


def test_ensure_starts_an_epoch_once_and_a_seek_changes_it() -> None:
    t = OffsetTracker()
    first = t.ensure(TP)
    assert t.ensure(TP) == first
    assert t.deliver(TP, 3) == first  # delivery keeps the epoch it was fetched in
    assert t.reset(TP, 0) != first
