"""The dedup table remembers an event id for `dedup_retention_days` of wall-clock time after its
first decision, then forgets it: bounded state, and redeliveries inside the window still dropped.
"""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams.engine.partition import PartitionTask
from streams.engine.store import MemoryBackend, PartitionState
from streams.expiry import Expiry
from streams.step import SEEN
from tests.integration import events as ev
from tests.unit.shell_fakes import POLICY, FakeProducer, FakeRecord, home, partition_task

DAY_MS = 86_400_000
RETENTION_MS = POLICY.dedup_retention_ms
ANCHOR = "anchor-1"
P = home(ANCHOR)


def test_nothing_is_due_before_its_retention_has_passed() -> None:
    e = Expiry(retention_ms=1_000)
    e.remember("a", 100)
    e.remember("b", 50)
    e.remember("c", 900)
    assert e.due(now_ms=1_049) == []
    assert e.due(now_ms=1_100) == [("b", 50), ("a", 100)]  # oldest first
    assert len(e) == 1
    assert e.due(now_ms=1_899) == []
    assert e.due(now_ms=1_900) == [("c", 900)]
    assert len(e) == 0


def test_due_is_worked_off_a_limited_number_at_a_time() -> None:
    e = Expiry(retention_ms=10)
    for i in range(10):
        e.remember(f"k{i}", i)
    first = e.due(now_ms=1_000, limit=4)
    assert [k for k, _ in first] == ["k0", "k1", "k2", "k3"]
    assert len(e.due(now_ms=1_000, limit=4)) == 4
    assert len(e.due(now_ms=1_000, limit=4)) == 2
    assert e.due(now_ms=1_000, limit=4) == []


def test_rebuild_keeps_live_ids_and_returns_the_ones_to_forget() -> None:
    e = Expiry(retention_ms=1_000)
    e.remember("stale-heap-entry", 0)
    drop = e.rebuild(
        [("live", 5_000), ("due", 3_999), ("legacy", 0.5), ("junk", "x"), ("flag", True)],
        now_ms=5_000,
    )
    assert sorted(drop) == ["due", "flag", "junk", "legacy"]
    assert len(e) == 1  # the old heap is gone, only "live" is tracked
    assert e.due(now_ms=6_000) == [("live", 5_000)]


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.booleans()),  # (clock step, remember a new id?)
        max_size=200,
    ),
    st.integers(1, 100),
)
def test_every_id_is_forgotten_exactly_once_and_never_early(
    steps: list[tuple[int, bool]], retention: int
) -> None:
    e = Expiry(retention_ms=retention)
    now = 0
    remembered: dict[str, int] = {}
    forgotten: list[str] = []
    for i, (step, new) in enumerate(steps):
        now += step
        if new:
            remembered[f"id{i}"] = now
            e.remember(f"id{i}", now)
        for key, seen in e.due(now, limit=3):
            assert seen == remembered[key] and now - seen >= retention
            forgotten.append(key)
    now += retention
    while batch := e.due(now, limit=3):
        forgotten += [k for k, _ in batch]
    assert sorted(forgotten) == sorted(remembered) and len(e) == 0


def _banned_cart_add(offset: int, event: dict | None = None) -> FakeRecord:
    e = event or ev.cart_add(ANCHOR, "p-1", "taobao", "2020-10-10T12:00:00+08:00")
    return FakeRecord("p-cart-adds", P, offset, ev.ts(e), ANCHOR.encode(), orjson.dumps(e))


def _task(producer: FakeProducer, state: PartitionState | None = None,
          expiry: Expiry | None = None) -> PartitionTask:
    task = partition_task(P, prefix="p-", producer=producer, state=state, expiry=expiry)
    for topic in task.tps.values():  # every input caught up: the merge never waits
        task.note_lag(topic.topic, False)
    return task


async def _decide(task: PartitionTask, record: FakeRecord, now_ms: int) -> None:
    """One record through the task's merge and step, committed as the worker would."""
    task.buffer(record.topic, [record])
    assert await task.run(now_ms / 1000, now_ms) == 1
    await task.commit()


def _seen(state: PartitionState) -> dict[str, object]:
    return dict(state.items(SEEN))


async def test_a_redelivery_inside_the_window_is_dropped_and_the_id_is_forgotten_after_it() -> None:
    now = 1_700_000_000_000
    producer = FakeProducer()
    task = _task(producer)
    event = ev.cart_add(ANCHOR, "p-1", "taobao", "2020-10-10T12:00:00+08:00")
    await _decide(task, _banned_cart_add(7, event), now)
    assert [s.topic for s in producer.sent if not s.topic.endswith("-changelog")] == [
        "p-rejections"
    ]
    (key,) = _seen(task.state)
    assert _seen(task.state)[key] == now  # remembered from when it was decided, not occurred_at

    now += RETENTION_MS - 1
    await _decide(task, _banned_cart_add(8, event), now)  # a redelivery just inside the window
    assert len(producer.to("p-rejections")) == 1 and key in _seen(task.state)
    assert task.step.decided[-1] == ("cart-adds", 8, "duplicate")  # type: ignore[attr-defined]

    now += 1
    await _decide(task, _banned_cart_add(9), now)  # any record of the task moves forgetting along
    assert key not in _seen(task.state) and len(_seen(task.state)) == 1
    assert len(task.expiry) == 1


async def test_dead_letter_positions_are_forgotten_too() -> None:
    now = 1_700_000_000_000
    producer = FakeProducer()
    task = _task(producer)
    await _decide(task, FakeRecord("p-orders", P, 3, 0, None, b"{not json"), now)
    assert [s.topic for s in producer.sent if not s.topic.endswith("-changelog")] == [
        "p-dead-letters"
    ]
    assert list(_seen(task.state)) == [f"dead/orders/{P}/3"]
    now += RETENTION_MS
    await _decide(task, _banned_cart_add(0), now)
    assert all(not k.startswith("dead/") for k in _seen(task.state))


def _recover(state: PartitionState, ids: dict[str, object], last: int, now_ms: int) -> Expiry:
    """A changelog restore, then what the engine does with each partition it was assigned
    (streams/engine/engine.py: rebuild the expiry from the store, forget what is due)."""
    state.restore(SEEN, ((k.encode(), orjson.dumps(v)) for k, v in ids.items()), last)
    expiry = Expiry(RETENTION_MS)
    state.forget(SEEN, expiry.rebuild(state.items(SEEN), now_ms))
    return expiry


async def test_after_a_rebalance_the_recovered_table_is_read_again() -> None:
    now = 1_700_000_000_000
    state = PartitionState(MemoryBackend)
    recovered: dict[str, object] = {
        "cart-adds/recent": now - DAY_MS,
        "cart-adds/old": now - RETENTION_MS - 1,
        "orders/written-by-an-older-version": 1_602_000_000_000.0,
    }
    expiry = _recover(state, recovered, 2, now)
    assert set(_seen(state)) == {"cart-adds/recent"}
    assert len(expiry) == 1
    task = _task(FakeProducer(), state, expiry)
    await _decide(task, _banned_cart_add(0), now)
    assert len(task.expiry) == 2

    # the next assignment restores more ids from the changelog and reads the store again
    expiry = _recover(state, {"cart-adds/recovered": now - 2 * DAY_MS}, 5, now)
    assert len(expiry) == 3 and state.checkpoint(SEEN) == 5
    task = _task(FakeProducer(), state, expiry)
    await _decide(task, _banned_cart_add(1), now)
    assert len(task.expiry) == 4
    now += RETENTION_MS - DAY_MS
    await _decide(task, _banned_cart_add(2), now)
    assert "cart-adds/recovered" not in _seen(state) and "cart-adds/recent" not in _seen(state)
    assert len(_seen(state)) == 3  # the three cart-adds decided here are still inside the window
