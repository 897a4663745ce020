"""PartitionTask with a fake transactional producer: event-time order across its three lanes,
what one transaction carries, and what stays local when it fails."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from streams.engine.partition import PartitionTask, TransactionFailed
from streams.step import CHARGES, SEEN, STORES, TASKS
from tests.integration import events as ev
from tests.unit.shell_fakes import CHANGELOG_TOPICS, GROUP, FakeProducer, FakeRecord, home
from tests.unit.shell_fakes import partition_task as make_task

ANCHOR = "anchor-pt"
P = home(ANCHOR)
NOW_MS = 1_700_000_000_000


def rec(topic: str, offset: int, event: dict, ts_ms: int | None = None) -> FakeRecord:
    return FakeRecord(
        "p-" + topic, P, offset, ev.ts(event) if ts_ms is None else ts_ms, ANCHOR.encode(),
        orjson.dumps(event),
    )


def caught_up(task: PartitionTask, *topics: str) -> None:
    for t in topics or ("xingtu-tasks", "cart-adds", "orders"):
        task.note_lag("p-" + t, False)


def decided(task: PartitionTask) -> list[tuple[str, int, str]]:
    decisions: list[tuple[str, int, str]] = task.step.decided  # type: ignore[attr-defined]
    return decisions


def local(task: PartitionTask) -> dict[str, dict[str, object]]:
    return {s: dict(task.state.items(s)) for s in STORES}


def sale(at: str, offset: int = 0) -> tuple[dict, dict]:
    c = ev.cart_add(ANCHOR, "sku", "taobao", at, task_id="xt-1")
    o = ev.order(ANCHOR, "sku", "taobao", at, 10_000, task_id="xt-1", order_id="ord-1")
    return c, o


async def test_three_lanes_are_decided_in_event_time_order() -> None:
    producer = FakeProducer()
    task = make_task(P, producer=producer)
    c, o = sale("2020-09-10T10:00:00+08:00")
    t = ev.task(ANCHOR, "sku", "xt-1", "2020-09-01T10:00:00+08:00")
    task.buffer("p-cart-adds", [rec("cart-adds", 0, c)])
    task.buffer("p-orders", [rec("orders", 0, o)])
    caught_up(task, "cart-adds", "orders")
    # the tasks lane is empty and the broker holds more for it: nothing is decided yet
    assert await task.run(0.0, NOW_MS) == 0 and producer.begun == 0
    task.buffer("p-xingtu-tasks", [rec("xingtu-tasks", 0, t)])  # buffered after the sales
    assert await task.run(0.0, NOW_MS) == 1  # the task; its lane may hold more on the broker
    caught_up(task, "xingtu-tasks")
    assert await task.run(0.0, NOW_MS) == 2
    assert decided(task) == [
        ("xingtu-tasks", 0, "applied"),
        ("cart-adds", 0, "accepted"),
        ("orders", 0, "accepted"),
    ]
    await task.commit()  # outputs are handed over in batches, at the latest at the commit
    assert producer.to("p-rejections") == []
    (fee,) = producer.to("p-fees")
    assert orjson.loads(fee.value or b"")["fee_fen"] == 2000


async def test_a_caught_up_empty_lane_is_waited_for_max_idle_only() -> None:
    task = make_task(P, max_idle=2.0)
    c, o = sale("2020-09-10T10:00:00+08:00")
    task.buffer("p-cart-adds", [rec("cart-adds", 0, c)], 100.0)  # fetched at t=100 s
    task.buffer("p-orders", [rec("orders", 0, o)], 103.0)  # fetched at t=103 s
    caught_up(task, "cart-adds", "orders")
    task.note_lag("p-xingtu-tasks", False)  # caught up and empty
    assert await task.run(100.0, NOW_MS) == 0  # it holds the cart-add up ...
    assert await task.run(101.9, NOW_MS) == 0
    assert await task.run(102.0, NOW_MS) == 1  # ... for max_idle from its arrival
    assert decided(task) == [("cart-adds", 0, "rejected")]  # no task came: match required
    # the order waits max_idle from its own arrival, not from the first wait
    assert await task.run(104.9, NOW_MS) == 0
    assert await task.run(105.0, NOW_MS) == 1
    assert decided(task)[-1] == ("orders", 0, "rejected")


async def test_a_commit_sends_offsets_one_past_the_last_decided_and_one_changelog_per_key() -> None:
    producer = FakeProducer()
    task, t, c, o = matched_sale(producer)
    refunds = [
        ev.order(ANCHOR, "sku", "taobao", f"2020-09-1{d}T10:00:00+08:00", 2_000,
                 order_id="ord-1", status="refunded")
        for d in (1, 2, 3)
    ]
    task.buffer("p-xingtu-tasks", [rec("xingtu-tasks", 5, t)])
    task.buffer("p-cart-adds", [rec("cart-adds", 10, c)])
    task.buffer("p-orders", [rec("orders", 20 + i, e) for i, e in enumerate([o, *refunds])])
    assert await task.run(0.0, NOW_MS) == 6
    offsets = await task.commit()
    assert len(producer.to("p-fees")) == 4  # one charge, three reversals
    want = {
        TopicPartition("p-xingtu-tasks", P): 6,
        TopicPartition("p-cart-adds", P): 11,
        TopicPartition("p-orders", P): 24,
    }
    assert offsets == want and producer.offsets == [(want, GROUP)]
    assert producer.committed == [1]
    changelog = {
        s: [x for x in producer.to(CHANGELOG_TOPICS[s]) if x.partition == P] for s in STORES
    }
    # the charge was written four times (charge + three reversals): one changelog record
    assert [x.key for x in changelog[CHARGES]] == [b"ord-1"]
    assert orjson.loads(changelog[CHARGES][0].value or b"")["reversed_fen"] == 1_200
    assert len(changelog[TASKS]) == 1
    assert len(changelog[SEEN]) == 6  # one per decided event id
    assert len(producer.sent) == 4 + 8  # nothing else in the transaction
    assert local(task)[CHARGES]["ord-1"]["reversed_fen"] == 1_200  # type: ignore[index]
    # the local checkpoints are the offsets the changelog records got
    assert task.state.checkpoint(SEEN) == 5 and task.state.checkpoint(CHARGES) == 0
    # the next transaction carries only what was decided after this commit
    more = ev.cart_add(ANCHOR, "sku", "taobao", "2020-09-14T10:00:00+08:00", task_id="xt-1")
    task.buffer("p-cart-adds", [rec("cart-adds", 11, more)])
    assert await task.run(0.0, NOW_MS) == 1
    await task.commit()
    assert producer.offsets[-1][0][TopicPartition("p-cart-adds", P)] == 12
    assert [x.key for x in producer.sent if x.txn == 2 and x.topic.endswith("-changelog")] == [
        f"cart-adds/{more['event_id']}".encode()
    ]


@pytest.mark.parametrize("failing", ["p-fees", CHANGELOG_TOPICS[TASKS]])
async def test_a_failed_send_fails_the_commit_and_nothing_is_kept_locally(failing: str) -> None:
    producer = FakeProducer(fail_topics=(failing,))
    task = make_task(P, producer=producer)
    caught_up(task)
    t = ev.task(ANCHOR, "sku", "xt-1", "2020-09-01T10:00:00+08:00")
    _, o = sale("2020-09-10T10:00:00+08:00")
    task.buffer("p-xingtu-tasks", [rec("xingtu-tasks", 0, t)])
    task.buffer("p-orders", [rec("orders", 0, o)])
    assert await task.run(0.0, NOW_MS) == 2
    with pytest.raises(TransactionFailed, match="not written"):
        await task.commit()
    # the offsets may have been sent to the transaction (beside the batches), never committed
    assert producer.committed == []
    assert local(task) == {s: {} for s in STORES}
    assert all(task.state.checkpoint(s) is None for s in STORES)
    await task.close()
    assert producer.stopped and not task.state.dirty


async def test_a_failed_commit_call_is_a_transaction_failure_too() -> None:
    producer = FakeProducer()

    async def refuse() -> None:
        raise RuntimeError("ProducerFenced")

    producer.commit_transaction = refuse  # type: ignore[method-assign]
    task = make_task(P, producer=producer)
    caught_up(task)
    c, _ = sale("2020-09-10T10:00:00+08:00")
    task.buffer("p-cart-adds", [rec("cart-adds", 0, c)])
    await task.run(0.0, NOW_MS)
    with pytest.raises(TransactionFailed, match="ProducerFenced"):
        await task.commit()
    assert local(task) == {s: {} for s in STORES}


def late_count(topic: str) -> float:
    return REGISTRY.get_sample_value("livecommerce_late_records_total", {"topic": topic}) or 0.0


async def test_records_older_than_stream_time_are_decided_and_counted_late() -> None:
    producer = FakeProducer()
    task = make_task(P, producer=producer)
    caught_up(task)
    before = {t: late_count(t) for t in ("cart-adds", "orders", "xingtu-tasks")}
    # one lane's log out of timestamp order: the merge keeps log order, so 2 and 3 are late
    carts = [
        ev.cart_add(ANCHOR, "sku", "taobao", at)
        for at in ("2020-10-10T10:00:00+08:00", "2020-10-09T10:00:00+08:00",
                   "2020-10-01T10:00:00+08:00", "2020-10-11T10:00:00+08:00")
    ]
    task.buffer("p-cart-adds", [rec("cart-adds", i, e) for i, e in enumerate(carts)])
    assert await task.run(0.0, NOW_MS) == 4
    assert [o for _, _, o in decided(task)] == ["rejected"] * 4  # decided at once, not dropped
    assert late_count("cart-adds") - before["cart-adds"] == 2
    assert task.stream_time == ev.ts(carts[3])
    t = ev.task(ANCHOR, "sku", "xt-9", "2020-09-01T10:00:00+08:00")
    task.buffer("p-xingtu-tasks", [rec("xingtu-tasks", 0, t)])  # arrives after stream time
    assert await task.run(0.0, NOW_MS) == 1
    assert late_count("xingtu-tasks") - before["xingtu-tasks"] == 1
    assert late_count("orders") == before["orders"]


def matched_sale(producer: FakeProducer) -> tuple[PartitionTask, dict, dict, dict]:
    """A task whose inputs are caught up, a Xingtu match and the sale (cart-add, order) it
    validates."""
    task = make_task(P, producer=producer)
    caught_up(task)
    t = ev.task(ANCHOR, "sku", "xt-1", "2020-09-01T10:00:00+08:00")
    c, o = sale("2020-09-10T10:00:00+08:00")
    return task, t, c, o


async def test_decisions_while_a_transaction_commits_go_into_the_next_one() -> None:
    """Pipelined commits: after `seal()`, decisions go on; their outputs wait until the sealed
    transaction has committed, then go out in the next one with their own offsets."""
    producer = FakeProducer()
    task, t, c, o = matched_sale(producer)
    task.buffer("p-xingtu-tasks", [rec("xingtu-tasks", 0, t)])
    assert await task.run(0.0, NOW_MS) == 1
    sealed = task.seal()
    assert sealed is not None and task.seal() is None  # one sealed transaction at a time
    task.buffer("p-cart-adds", [rec("cart-adds", 0, c)])
    task.buffer("p-orders", [rec("orders", 0, o)])
    assert await task.run(0.0, NOW_MS) == 2  # decided on the sealed task state
    assert producer.begun == 1 and producer.to("p-fees") == []
    await task.finish(sealed)
    orders_tp = TopicPartition("p-orders", P)
    tasks_tp = TopicPartition("p-xingtu-tasks", P)
    assert producer.committed == [1]
    assert producer.offsets[0][0] == {tasks_tp: 1}  # the sealed transaction's offsets only
    assert producer.begun == 2 and task.in_txn  # the next transaction began for the held work
    await task.commit()
    assert producer.committed == [1, 2]
    assert producer.offsets[1][0][orders_tp] == 1
    (fee,) = producer.to("p-fees")
    assert fee.txn == 2
    assert {s.txn for s in producer.to(CHANGELOG_TOPICS[TASKS])} == {1}


async def test_a_transaction_adds_its_likely_partitions_and_offsets_as_it_begins() -> None:
    """What the commit would wait for is done as the transaction begins: the changelog
    partitions and those the previous transaction wrote to are added, the offsets so far sent
    (the commit's final offsets replace them)."""
    producer = FakeProducer()
    task, t, c, o = matched_sale(producer)
    task.buffer("p-xingtu-tasks", [rec("xingtu-tasks", 0, t)])
    task.buffer("p-cart-adds", [rec("cart-adds", 0, c)])
    task.buffer("p-orders", [rec("orders", 0, o)])
    assert await task.run(0.0, NOW_MS) == 3
    changelogs = {TopicPartition(topic, P) for topic in CHANGELOG_TOPICS.values()}
    assert producer._txn_manager.added == [changelogs]  # nothing decided before: no offsets
    assert producer.offsets == []
    await task.commit()
    (fee,) = producer.to("p-fees")
    c2 = ev.cart_add(ANCHOR, "sku", "taobao", "2020-09-11T10:00:00+08:00", task_id="xt-1")
    task.buffer("p-cart-adds", [rec("cart-adds", 1, c2)])
    assert await task.run(0.0, NOW_MS) == 1
    second = producer._txn_manager.added[1]
    assert changelogs | {TopicPartition("p-fees", fee.partition or 0)} <= second
    inputs = ("xingtu-tasks", "cart-adds", "orders")
    first_offsets = {TopicPartition(f"p-{t}", P): 1 for t in inputs}
    await task.commit()
    assert [o for o, _ in producer.offsets] == [
        first_offsets,  # the first commit
        first_offsets,  # sent early as the second transaction began
        {**first_offsets, TopicPartition("p-cart-adds", P): 2},  # its commit
    ]
    assert producer.committed == [1, 2]


def test_aiokafka_still_adds_partitions_by_the_method_the_worker_calls() -> None:
    from aiokafka.producer.transaction_manager import TransactionManager

    assert callable(getattr(TransactionManager, "maybe_add_partition_to_txn", None))


async def test_a_warm_up_transaction_commits_the_starting_positions_and_nothing_else() -> None:
    producer = FakeProducer()
    task = make_task(P, producer=producer)
    start = {TopicPartition("p-orders", P): 7}
    await task.warm_up(start)
    assert producer.committed == [1] and producer.sent == []
    assert producer.offsets == [(start, GROUP)]
    (added,) = producer._txn_manager.added
    assert {TopicPartition(t, P) for t in CHANGELOG_TOPICS.values()} <= added
    assert TopicPartition("p-fees", 0) in added and TopicPartition("p-rejections", P) in added
    assert local(task) == {s: {} for s in STORES} and not task.in_txn
