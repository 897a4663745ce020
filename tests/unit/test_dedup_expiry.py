"""The dedup table remembers an event id for `dedup_retention_days` of wall-clock time after its
first decision, then forgets it: bounded state, and redeliveries inside the window still dropped.
"""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams.codec import INPUTS, Decoder, load_validators
from streams.config import REPO_ROOT
from streams.expiry import Expiry
from streams.policy import load_policy
from streams.processor import Processor, Tables, _murmur
from tests.integration import events as ev
from tests.unit.shell_fakes import FakeMessage, RecordingEmitter

DAY_MS = 86_400_000
POLICY = load_policy()
RETENTION_MS = POLICY.dedup_retention_ms
DECODERS = {t: Decoder(t, load_validators(REPO_ROOT / "schemas")) for t in INPUTS}
PARTITIONS = 4


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


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def _processor(processed: dict, clock: Clock) -> tuple[Processor, RecordingEmitter]:
    emitter = RecordingEmitter()
    proc = Processor(
        prefix="p-", partitions=PARTITIONS, policy=POLICY, decoders=DECODERS,
        tables=Tables(tasks={}, charges={}, processed=processed),
        emitter=emitter,  # type: ignore[arg-type]
        clock=clock,
    )
    return proc, emitter


def _banned_cart_add() -> FakeMessage:
    e = ev.cart_add("anchor-1", "p-1", "taobao", "2020-10-10T12:00:00+08:00")
    partition = _murmur(e["anchor_id"]) % PARTITIONS
    return FakeMessage("p-cart-adds", partition, 7, b"anchor-1", orjson.dumps(e), ev.ts(e))


async def test_a_redelivery_inside_the_window_is_dropped_and_the_id_is_forgotten_after_it() -> None:
    clock = Clock(1_700_000_000_000)
    processed: dict = {}
    proc, emitter = _processor(processed, clock)
    msg = _banned_cart_add()
    await proc.process(msg)
    assert [t for t, *_ in emitter.sent] == ["p-rejections"]
    (key,) = processed
    assert processed[key] == clock.ms  # remembered from when it was decided, not occurred_at

    clock.ms += RETENTION_MS - 1
    await proc.process(msg)  # a redelivery just inside the window
    assert len(emitter.sent) == 1 and key in processed

    clock.ms += 1
    other = _banned_cart_add()  # any record of the worker moves the forgetting along
    await proc.process(other)
    assert key not in processed and len(processed) == 1
    assert len(proc.expiry) == 1


async def test_dead_letter_positions_are_forgotten_too() -> None:
    clock = Clock(1_700_000_000_000)
    processed: dict = {}
    proc, emitter = _processor(processed, clock)
    await proc.process(FakeMessage("p-orders", 1, 3, None, b"{not json", 0))
    assert [t for t, *_ in emitter.sent] == ["p-dead-letters"] and len(processed) == 1
    clock.ms += RETENTION_MS
    await proc.process(_banned_cart_add())
    assert all(not k.startswith("dead/") for k in processed)


async def test_after_a_rebalance_the_recovered_table_is_read_again() -> None:
    clock = Clock(1_700_000_000_000)
    processed = {
        "cart-adds/recent": clock.ms - DAY_MS,
        "cart-adds/old": clock.ms - RETENTION_MS - 1,
        "orders/written-by-an-older-version": 1_602_000_000_000.0,
    }
    proc, _ = _processor(processed, clock)
    await proc.process(_banned_cart_add())  # the first record reads the table
    assert set(processed) >= {"cart-adds/recent"}
    assert "cart-adds/old" not in processed
    assert "orders/written-by-an-older-version" not in processed
    assert len(proc.expiry) == 2

    processed["cart-adds/recovered"] = clock.ms - 2 * DAY_MS  # a changelog recovery adds ids
    proc.state_recovered()
    await proc.process(_banned_cart_add())
    assert len(proc.expiry) == 4
    clock.ms += RETENTION_MS - DAY_MS
    await proc.process(_banned_cart_add())
    assert "cart-adds/recovered" not in processed and "cart-adds/recent" not in processed
