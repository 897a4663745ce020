"""Recovery is told a changelog partition is read to its end only when every fetched record was
applied: the consumer's answer to `position()` while records are on their way."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.changelog import ChangelogFlow

TP = ("app-xingtu-task-state-changelog", 2)


def test_a_batch_holds_back_from_its_first_record_until_every_record_was_taken() -> None:
    f = ChangelogFlow()
    assert f.held_back(TP) is None
    epoch = f.fetched(TP, 10)
    assert f.held_back(TP) == 10  # fetched (the consumer's position is past it), not handed
    f.handing(TP, 10)
    f.handing(TP, 11)
    assert f.held_back(TP) == 10
    f.taken(TP, 10, epoch)
    assert f.held_back(TP) == 11
    f.batch_done(TP, epoch)
    assert f.held_back(TP) == 11  # 11 sits in recovery's queue
    f.taken(TP, 11, epoch)
    assert f.held_back(TP) is None  # the rest up to the position can only be aborted records


def test_a_record_being_put_into_the_queue_counts_before_the_put_returns() -> None:
    f = ChangelogFlow()
    epoch = f.fetched(TP, 0)
    f.handing(TP, 0)  # recovery may take it while the put is still awaiting
    f.taken(TP, 0, epoch)
    f.batch_done(TP, epoch)
    assert f.held_back(TP) is None


def test_records_not_handed_over_are_fetched_again_unless_the_partition_was_sought() -> None:
    f = ChangelogFlow()
    epoch = f.fetched(TP, 5)
    f.handing(TP, 5)
    f.not_handed(TP, 6)  # the flow stopped mid-batch
    f.not_handed(TP, 7)
    f.batch_done(TP, epoch)
    f.taken(TP, 5, epoch)
    assert f.refetch_due and f.refetch() == [(TP, 6)]
    assert f.held_back(TP) == 6
    f.sought(TP)  # the refetch seek (or recovery's own seek)
    assert not f.refetch_due and f.held_back(TP) is None


def test_a_cleared_queue_means_its_records_were_never_applied() -> None:
    f = ChangelogFlow()
    other = ("app-order-charge-state-changelog", 0)
    e1, e2 = f.fetched(TP, 3), f.fetched(other, 8)
    for o in (3, 4):
        f.handing(TP, o)
    f.handing(other, 8)
    f.taken(other, 8, e2)
    f.batch_done(TP, e1)
    f.batch_done(other, e2)
    f.discarded()
    assert f.refetch() == [(TP, 3)]
    assert f.held_back(other) is None


def test_records_of_a_reading_that_was_sought_away_do_not_release_the_new_one() -> None:
    f = ChangelogFlow()
    old = f.fetched(TP, 100)
    f.handing(TP, 100)
    f.sought(TP)  # recovery restarts from 0
    new = f.fetched(TP, 0)
    assert new != old and f.epoch(TP) == new
    f.handing(TP, 0)
    f.taken(TP, 100, old)  # the stale record comes off the queue
    assert f.held_back(TP) == 0
    f.batch_done(TP, old)  # a stale batch ending does not end the new one
    f.taken(TP, 0, new)
    assert f.held_back(TP) == 1  # still inside the new batch: 1 may be on its way
    f.batch_done(TP, new)
    assert f.held_back(TP) is None


@given(st.lists(st.tuples(st.sampled_from("fhtd"), st.integers(1, 3)), max_size=120))
def test_held_back_never_passes_a_record_recovery_has_not_taken(
    script: list[tuple[str, int]],
) -> None:
    """Random interleavings of fetch (f), hand over (h), take (t) and end of batch (d): the
    answer is None only when nothing fetched is still on its way, and otherwise never beyond
    the first record not yet taken."""
    f = ChangelogFlow()
    next_offset = 0
    fetched: list[int] = []  # fetched, not yet handed over
    queue: list[int] = []  # handed over, not yet taken
    epoch: int | None = None
    for op, n in script:
        if op == "f" and epoch is None:
            batch = list(range(next_offset, next_offset + n))
            next_offset += n + 1  # a gap: a transaction marker
            epoch = f.fetched(TP, batch[0])
            fetched += batch
        elif op == "h" and fetched:
            for _ in range(min(n, len(fetched))):
                o = fetched.pop(0)
                f.handing(TP, o)
                queue.append(o)
        elif op == "t" and queue:
            for _ in range(min(n, len(queue))):
                f.taken(TP, queue.pop(0), epoch if epoch is not None else f.epoch(TP))
        elif op == "d" and epoch is not None and not fetched:
            f.batch_done(TP, epoch)
            epoch = None
        waiting = fetched + queue
        held = f.held_back(TP)
        if waiting:
            assert held is not None and held <= min(waiting)
        elif epoch is None:
            assert held is None


def test_a_record_dropped_at_offset_zero_is_fetched_again() -> None:
    f = ChangelogFlow()
    epoch = f.fetched(TP, 0)
    f.not_handed(TP, 0)
    f.batch_done(TP, epoch)
    assert f.refetch() == [(TP, 0)] and f.held_back(TP) == 0
