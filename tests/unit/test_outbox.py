"""The outbox: keyed records land where Kafka's default partitioner puts them, a full batch is
handed over and a new one started, and every handed-over batch is kept for the commit check."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from streams.engine.outbox import Outbox, key_partition
from tests.unit.shell_fakes import FakeBatch, FakeProducer


def test_key_partition_is_kafkas_default_partitioner() -> None:
    for key in (b"anchor-1", "主播-7".encode(), b"", b"o2020-3621"):
        assert key_partition(key, 12) == DefaultPartitioner()(key, list(range(12)), [])


async def test_full_batches_are_handed_over_and_flush_sends_the_rest() -> None:
    producer = FakeProducer()
    producer.create_batch = lambda: FakeBatch(capacity=2)  # type: ignore[method-assign]
    box = Outbox(producer, {"fees": 3})  # type: ignore[arg-type]
    for i in range(5):
        box.add("fees", f"o{i}".encode(), b"v", partition=1)
    assert len(box.full) == 2 and box.sent == []  # two full batches of two, queued
    await box.send_full()
    assert len(box.sent) == 2 and box.full == []
    flushed = await box.flush()
    assert list(flushed) == [("fees", 1)] and len(box.sent) == 3
    assert [s.key for s in producer.to("fees")] == [f"o{i}".encode() for i in range(5)]
    box.add("fees", b"anchor-1", b"v")
    await box.flush()
    assert producer.to("fees")[-1].partition == key_partition(b"anchor-1", 3)
    box.clear()
    assert box.sent == [] and box.builders == {} and box.full == []


async def test_a_held_outbox_queues_full_batches_until_released_in_order() -> None:
    producer = FakeProducer()
    producer.create_batch = lambda: FakeBatch(capacity=1)  # type: ignore[method-assign]
    box = Outbox(producer, {"fees": 3})  # type: ignore[arg-type]
    box.hold()
    for i in range(3):
        box.add("fees", f"o{i}".encode(), b"v", partition=0)
    await box.send_full()
    assert box.sent == [] and len(box.full) == 2  # held: nothing reaches the producer
    await box.release()
    await box.flush()
    assert [s.key for s in producer.to("fees")] == [b"o0", b"o1", b"o2"]
