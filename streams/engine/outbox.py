"""A transaction's output records, appended to per-partition record batches.

aiokafka's `send()` costs a metadata wait, a partitioner call, an accumulator lookup and a
future per record; the worker knows its partitions (keys are hashed as Kafka's default
partitioner does) and only needs one answer per batch, so it fills `BatchBuilder`s and hands
each over whole (`send_batch`), every future checked before the transaction commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2


@lru_cache(maxsize=1 << 16)
def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Outbox:
    """Records appended synchronously (no coroutine per record); full batches queue in `full`
    and go out, in the order they filled, on `send_full()` unless the outbox is held."""

    def __init__(self, producer: AIOKafkaProducer, partitions: dict[str, int]) -> None:
        self.producer = producer
        self.partitions = partitions
        """Partition count per topic, read when the partition was set up."""
        self.builders: dict[tuple[str, int], Any] = {}
        self.full: list[tuple[tuple[str, int], Any]] = []
        """Filled batches not yet handed to the producer, oldest first."""
        self.sent: list[asyncio.Future[Any]] = []
        self.written: set[tuple[str, int]] = set()
        """Every (topic, partition) a batch was handed over for."""
        self.held = False
        """While True, full batches wait: the records belong to a transaction that has not
        begun (the previous one is still being committed)."""
        self._sending = asyncio.Lock()
        """One sender at a time: per partition, batches reach Kafka in the order they filled."""

    def hold(self) -> None:
        self.held = True

    async def release(self) -> None:
        """The transaction began: send what was held, and send from now on."""
        self.held = False
        await self.send_full()

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        if partition is None:
            partition = key_partition(key or b"", self.partitions[topic])
        headers = list(headers)  # the batch builder (Cython) takes a list only
        where = (topic, partition)
        builder = self.builders.get(where)
        if builder is None:
            builder = self.builders[where] = self.producer.create_batch()
        if builder.append(timestamp=timestamp_ms, key=key, value=value, headers=headers) is None:
            self.full.append((where, builder))
            builder = self.builders[where] = self.producer.create_batch()
            if builder.append(
                timestamp=timestamp_ms, key=key, value=value, headers=headers
            ) is None:
                raise ValueError(f"a record for {topic} does not fit in an empty batch")

    async def send_full(self) -> None:
        """Hand the filled batches to the producer (none while held)."""
        if self.held or not self.full:
            return
        async with self._sending:
            while self.full and not self.held:
                where, builder = self.full.pop(0)
                await self._send_builder(where, builder)

    async def _send_builder(self, where: tuple[str, int], builder: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await self.producer.send_batch(
            builder, where[0], partition=where[1]
        )
        self.sent.append(fut)
        self.written.add(where)
        return fut

    async def flush(self) -> dict[tuple[str, int], asyncio.Future[Any]]:
        """Hand every batch to the producer; returns the last future by topic partition."""
        assert not self.held, "flushing an outbox whose transaction has not begun"
        await self.send_full()
        out = {}
        async with self._sending:
            for where, b in list(self.builders.items()):
                del self.builders[where]
                out[where] = await self._send_builder(where, b)
        return out

    def clear(self) -> None:
        self.builders.clear()
        self.full.clear()
        self.sent = []
        self.written = set()
        self.held = False
