"""Properties of the event-time merge of a partition number's input lanes (streams.engine.merge):
Kafka Streams' PartitionGroup rule, as pure code."""

from __future__ import annotations

from typing import NamedTuple

from hypothesis import given
from hypothesis import strategies as st

from streams.engine.merge import Lane, merge_ready


class Rec(NamedTuple):
    lane: int
    offset: int
    ts: int


def key(r: Rec) -> tuple[int, int]:
    return r.ts, r.offset


def lanes_of(
    timestamps: list[list[int]], *, behind: bool = False, arrived: list[float] | None = None
) -> list[Lane[Rec]]:
    """Lanes holding records with these timestamps, arrived at `arrived` (default: long ago)."""
    lanes: list[Lane[Rec]] = [Lane(rank, behind=behind) for rank in range(len(timestamps))]
    for rank, tss in enumerate(timestamps):
        when = arrived[rank] if arrived is not None else -1e12
        lanes[rank].add([Rec(rank, off, ts) for off, ts in enumerate(tss)], when)
    return lanes


def left(lanes: list[Lane[Rec]]) -> list[Rec]:
    return [r for lane in lanes for r in lane.records]


TIMESTAMPS = st.lists(st.lists(st.integers(0, 20), max_size=12), min_size=1, max_size=4)
SORTED = TIMESTAMPS.map(lambda lanes: [sorted(ts) for ts in lanes])


@given(SORTED)
def test_sorted_lanes_come_out_in_timestamp_rank_offset_order(timestamps: list[list[int]]) -> None:
    lanes = lanes_of(timestamps)
    out = merge_ready(lanes, key, now=0.0, max_idle=0.0)
    assert out == sorted(out, key=lambda r: (r.ts, r.lane, r.offset))
    assert len(out) == sum(map(len, timestamps)) and not left(lanes)


@given(TIMESTAMPS)
def test_each_lane_keeps_its_log_order_whatever_its_timestamps(
    timestamps: list[list[int]],
) -> None:
    lanes = lanes_of(timestamps)
    out = merge_ready(lanes, key, now=0.0, max_idle=0.0)
    for rank, tss in enumerate(timestamps):
        assert [r.offset for r in out if r.lane == rank] == list(range(len(tss)))


@given(
    TIMESTAMPS,
    st.lists(st.booleans(), min_size=4, max_size=4),
    st.lists(st.floats(0, 10), min_size=4, max_size=4),
    st.floats(0, 10),
    st.floats(0, 5),
    st.one_of(st.none(), st.integers(0, 30)),
)
def test_nothing_is_lost_or_duplicated_and_a_stop_has_a_reason(
    timestamps: list[list[int]],
    behind: list[bool],
    arrived: list[float],
    now: float,
    max_idle: float,
    limit: int | None,
) -> None:
    lanes = lanes_of(timestamps, arrived=arrived)
    for lane in lanes:
        lane.behind = behind[lane.rank]
    given_records = [r for lane in lanes for r in lane.records]
    out = merge_ready(lanes, key, now=now, max_idle=max_idle, limit=limit)
    rest = left(lanes)
    assert sorted(out + rest) == sorted(given_records)
    assert len(set(out)) == len(out)
    # what was taken is the prefix of what an unblocked merge takes
    free = lanes_of(timestamps)
    assert out == merge_ready(free, key, now=now, max_idle=0.0)[: len(out)]
    if rest and (limit is None or len(out) < limit):
        empty = [lane for lane in lanes if not lane.records]
        assert empty, "stopped with every lane holding records"
        head = min((lane for lane in lanes if lane.records), key=lambda la: (
            key(la.records[0])[0], la.rank, key(la.records[0])[1]))
        assert any(lane.behind for lane in empty) or now - head.head_arrival < max_idle


@given(SORTED, st.integers(0, 3))
def test_an_empty_lane_that_is_behind_blocks_everything(
    timestamps: list[list[int]], empty: int
) -> None:
    lanes = lanes_of([*timestamps, []], arrived=[-1e9] * (len(timestamps) + 1))
    lanes[-1].behind = True  # however long the others have waited: the broker holds more
    assert merge_ready(lanes, key, now=0.0, max_idle=0.0) == []
    assert merge_ready(lanes, key, now=0.0, max_idle=1.0) == []
    assert left(lanes) == left(lanes_of(timestamps))


@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=10),
    st.integers(0, 100_000),
    st.integers(0, 100_000),
    st.integers(1, 50_000),
)
def test_a_record_held_up_by_a_caught_up_empty_lane_waits_max_idle_from_its_arrival(
    timestamps: list[int], arrived: int, elapsed: int, max_idle: int
) -> None:
    """Times in ms as floats (exact in binary), as the engine passes seconds."""

    def merge(max_idle: float) -> list[Rec]:
        lanes = lanes_of([sorted(timestamps), []], arrived=[float(arrived), 0.0])
        lanes[1].behind = False
        return merge_ready(lanes, key, now=arrived + elapsed, max_idle=max_idle)

    assert len(merge(max_idle)) == (0 if elapsed < max_idle else len(timestamps))
    # max_idle = 0: it never waits for a caught-up lane
    assert len(merge(0.0)) == len(timestamps)


def test_every_record_waits_from_its_own_arrival_not_from_the_lanes_first_wait() -> None:
    lanes = lanes_of([[1, 2], []], arrived=[10.0, 0.0])
    lanes[1].behind = False
    assert merge_ready(lanes, key, now=14.9, max_idle=5.0) == []
    assert [r.ts for r in merge_ready(lanes, key, now=15.0, max_idle=5.0)] == [1, 2]
    # later records of the busy lane, the sparse one still empty: they wait again (Kafka
    # Streams would take them at once, its idle deadline having passed)
    lanes[0].add([Rec(0, 2, 3)], 40.0)
    assert merge_ready(lanes, key, now=44.0, max_idle=5.0) == []
    # the sparse lane's late record arrives in time and goes first
    lanes[1].add([Rec(1, 0, 2)], 44.5)
    assert [r.ts for r in merge_ready(lanes, key, now=44.5, max_idle=5.0)] == [2]
    assert merge_ready(lanes, key, now=44.5, max_idle=5.0) == []  # lane 1 is empty again
    assert [r.ts for r in merge_ready(lanes, key, now=45.0, max_idle=5.0)] == [3]


def test_two_empty_caught_up_lanes_hold_a_record_up_for_max_idle_once() -> None:
    lanes = lanes_of([[], [], [1]], arrived=[0.0, 0.0, 100.0])
    lanes[0].behind = lanes[1].behind = False
    assert merge_ready(lanes, key, now=100.0, max_idle=2.0) == []
    assert [r.ts for r in merge_ready(lanes, key, now=102.0, max_idle=2.0)] == [1]


def test_nothing_is_taken_when_nothing_is_buffered() -> None:
    lanes = lanes_of([[], []])
    lanes[1].behind = False
    assert merge_ready(lanes, key, now=0.0, max_idle=5.0) == []


def test_a_lane_running_empty_mid_merge_stops_it_while_it_is_behind() -> None:
    lanes = lanes_of([[1, 5], [2, 3, 4]])
    lanes[1].behind = True  # more of lane 1 on the broker: its next record may be < 5
    assert [r.ts for r in merge_ready(lanes, key, now=0.0, max_idle=0.0)] == [1, 2, 3, 4]
    assert left(lanes) == [Rec(0, 1, 5)]
    lanes = lanes_of([[1], [2, 3]])
    lanes[0].behind = True
    assert [r.ts for r in merge_ready(lanes, key, now=0.0, max_idle=0.0)] == [1]


def test_ties_go_to_the_lower_rank_then_the_lower_offset() -> None:
    lanes = lanes_of([[7], [7, 7], [7]])
    out = merge_ready(lanes, key, now=0.0, max_idle=0.0)
    assert [(r.lane, r.offset) for r in out] == [(0, 0), (1, 0), (1, 1), (2, 0)]


def test_limit_stops_after_that_many_records() -> None:
    lanes = lanes_of([[1, 2, 3], [1, 2]])
    assert len(merge_ready(lanes, key, now=0.0, max_idle=0.0, limit=3)) == 3
    assert len(left(lanes)) == 2


def test_a_caught_up_lane_lets_a_record_go_only_once_a_fetch_after_its_wait_confirms_it() -> None:
    """Time spent elsewhere is no evidence: the broker's word, `max_idle` after the record
    arrived, that the empty lane still has nothing is."""
    lanes = lanes_of([[], [], [1]], arrived=[0.0, 0.0, 100.0])
    lanes[0].behind = lanes[1].behind = False
    lanes[0].confirmed, lanes[1].confirmed = 101.0, 300.0
    # a second later, but lane 0 was last known caught up 1 s after the record came
    assert merge_ready(lanes, key, now=200.0, max_idle=5.0) == []
    lanes[0].confirmed = 104.9
    assert merge_ready(lanes, key, now=200.0, max_idle=5.0) == []
    lanes[0].confirmed = 105.0  # every empty lane confirmed max_idle after the arrival
    assert [r.ts for r in merge_ready(lanes, key, now=200.0, max_idle=5.0)] == [1]


def test_a_confirmation_cannot_stand_in_for_time_that_has_not_passed() -> None:
    lanes = lanes_of([[], [1]], arrived=[0.0, 100.0])
    lanes[0].behind, lanes[0].confirmed = False, 1e9  # a clock that disagrees with `now`
    assert merge_ready(lanes, key, now=104.0, max_idle=5.0) == []
    assert [r.ts for r in merge_ready(lanes, key, now=105.0, max_idle=5.0)] == [1]
