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
        await box.add("fees", f"o{i}".encode(), b"v", partition=1)
    assert len(box.sent) == 2  # two full batches of two went out as the fifth record came
    flushed = await box.flush()
    assert list(flushed) == [("fees", 1)] and len(box.sent) == 3
    assert [s.key for s in producer.to("fees")] == [f"o{i}".encode() for i in range(5)]
    await box.add("fees", b"anchor-1", b"v")
    await box.flush()
    assert producer.to("fees")[-1].partition == key_partition(b"anchor-1", 3)
    box.clear()
    assert box.sent == [] and box.builders == {}
