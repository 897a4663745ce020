"""The raw loop: what the worker's job costs with nothing but aiokafka around the same core.

One consumer (getmany, manual commits), the worker's record step (`streams.step.RecordStep`:
decoding, home partition, dedup, `streams.policy.decide`, the output records) over plain dicts,
one producer (acks=all, linger 5 ms). No metrics, no changelogs, no transactions: the lean loop a
person would write around the same core.

Order: the contract's. Fetched records are buffered per input partition; for each partition
number the loop repeatedly takes, of the three topics' buffered heads, the one with the smallest
(timestamp, topic rank, offset) (tasks, cart-adds, orders), but only while none of the three input
partitions is empty in the buffer and still short of its loaded end (`Backlog.targets`, known
from the loader's acks): the worker's idle rule for a backlog that is entirely on the broker. A
partition that has reached its end no longer blocks (a record rerouted into it later is taken when
it arrives). That gives the reference model's order exactly, whatever the fetch sizes. After each
getmany it awaits every send and commits the offsets after the records it decided (not merely
fetched), so when it stops, every output is acked and every offset committed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.kafka import (
    BOOTSTRAP,
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    Backlog,
    create_topics,
    read_outputs,
)
from bench.model import Segment, SystemRun
from streams.codec import Decoder
from streams.loadgen.expected import Expected
from streams.policy import Policy
from streams.policy.versions import book_of
from streams.step import STORES, RecordStep

MAX_RECORDS = 2000


class DictState:
    """The baseline's state: one plain dict per store, read by the step as the worker's is."""

    def __init__(self) -> None:
        self.stores: dict[str, dict[str, Any]] = {store: {} for store in STORES}

    def get(self, store: str, key: str) -> Any:
        return self.stores[store].get(key)

    def put(self, store: str, key: str, value: Any) -> None:
        self.stores[store][key] = value


class RawLoop:
    """State and producer of the baseline around the worker's record step; `handle` is the
    per-record path."""

    def __init__(
        self,
        *,
        prefix: str,
        partitions: int,
        policy: Policy,
        validators: dict[str, Any],
        producer: AIOKafkaProducer,
    ) -> None:
        self.prefix = prefix
        self.producer = producer
        self.step = RecordStep(
            book_of(policy), {t: Decoder(t, validators) for t in INPUT_TOPICS}, partitions, prefix
        )
        self.short = {prefix + t: t for t in INPUT_TOPICS}
        self.state = DictState()
        self.rerouted = 0

    async def handle(self, msg: Any, now_ms: int, futs: list[asyncio.Future[Any]]) -> None:
        r = self.step.decide(self.short[msg.topic], msg, self.state, now_ms)
        put = self.state.put
        for store, key, value in r.writes:
            put(store, key, value)
        if r.outcome == "rerouted":
            self.rerouted += 1
        send, prefix = self.producer.send, self.prefix
        for o in r.outputs:
            futs.append(
                await send(
                    prefix + o.topic, o.value, key=o.key, partition=o.partition,
                    timestamp_ms=o.timestamp_ms, headers=list(o.headers) or None,
                )
            )


class _Merge:
    """Per-input-partition buffers and the timestamp merge of each partition number's three."""

    def __init__(self, prefix: str, partitions: int, targets: dict[TopicPartition, int]) -> None:
        # groups[p]: the partition number's input partitions in topic rank order.
        self.groups = [
            [TopicPartition(prefix + t, p) for t in INPUT_TOPICS] for p in range(partitions)
        ]
        self.buffers: dict[TopicPartition, deque[Any]] = {
            tp: deque() for group in self.groups for tp in group
        }
        self.fetched: dict[TopicPartition, int] = dict.fromkeys(self.buffers, 0)
        self.targets = targets
        self.decided: dict[TopicPartition, int] = {}

    def add(self, tp: TopicPartition, msgs: list[Any]) -> None:
        if msgs:
            self.buffers[tp].extend(msgs)
            self.fetched[tp] = msgs[-1].offset + 1

    def ready(self) -> list[Any]:
        """Every record that may be decided now, in decision order (see the module doc)."""
        out: list[Any] = []
        for group in self.groups:
            bufs = [self.buffers[tp] for tp in group]
            # An input partition fetched short of its loaded end blocks the group while its
            # buffer is empty (nothing is fetched during this call, so this holds throughout).
            blocked = [self.fetched[tp] < self.targets.get(tp, 0) for tp in group]
            while True:
                best = -1
                best_key: tuple[int, int, int] | None = None
                stop = False
                for rank, buf in enumerate(bufs):
                    if not buf:
                        if blocked[rank]:
                            stop = True
                            break
                        continue
                    head = buf[0]
                    key = (head.timestamp, rank, head.offset)
                    if best_key is None or key < best_key:
                        best, best_key = rank, key
                if stop or best < 0:
                    break
                msg = bufs[best].popleft()
                out.append(msg)
                self.decided[group[best]] = msg.offset + 1
        return out


async def _segment(
    consumer: AIOKafkaConsumer,
    loop: RawLoop,
    merge: _Merge,
    records: int,
    released_at: float,
) -> Segment:
    """Consume until `records` (plus whatever was rerouted) are decided, acked and committed."""
    first: float | None = None
    cpu = time.process_time()
    consumed = 0
    rerouted_before = loop.rerouted
    committed: dict[TopicPartition, int] = {}
    while consumed < records + (loop.rerouted - rerouted_before):
        batch = await consumer.getmany(timeout_ms=100, max_records=MAX_RECORDS)
        if not batch:
            continue
        if first is None:
            first = time.time()
        for tp, msgs in batch.items():
            merge.add(tp, msgs)
        futs: list[asyncio.Future[Any]] = []
        now_ms = int(time.time() * 1000)
        for msg in merge.ready():
            await loop.handle(msg, now_ms, futs)
            consumed += 1
        if futs:
            await asyncio.gather(*futs)
        if merge.decided != committed:
            await consumer.commit(dict(merge.decided))
            committed = dict(merge.decided)
    done = time.time()
    cpu = time.process_time() - cpu
    return Segment(records, released_at, first if first is not None else done, done, cpu)


async def run_baseline(
    backlog: Backlog,
    expected: Expected,
    *,
    repetition: int,
    policy: Policy,
    validators: dict[str, Any],
    timeout: float = 1800.0,
) -> SystemRun:
    """Measure the raw loop over a held `backlog`; outputs go to `<prefix><output>`.

    The backlog (one phase: tasks, cart-adds and orders) is held, one committed transaction away,
    so the loop starts on a full queue and nothing else runs in this process while it works.
    """
    if not backlog.held:
        raise ValueError("the baseline runs in the bench's process: give it a held backlog")
    prefix = backlog.prefix
    run = SystemRun("baseline", repetition, prefix, backlog.events)
    await create_topics([prefix + t for t in OUTPUT_TOPICS], backlog.partitions)
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    consumer = AIOKafkaConsumer(
        *backlog.input_topics,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"{prefix}baseline",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Sees the backlog only once the bench releases it (as the worker's EOS consumer does).
        isolation_level="read_committed",
    )
    started = time.time()
    await producer.start()
    await consumer.start()
    try:
        loop = RawLoop(
            prefix=prefix,
            partitions=backlog.partitions,
            policy=policy,
            validators=validators,
            producer=producer,
        )
        wanted = set(backlog.input_partitions())
        while set(consumer.assignment()) != wanted:
            await consumer.getmany(timeout_ms=100)
            if time.time() - started > 60:
                raise TimeoutError("the baseline consumer got no full assignment within 60 s")
        run.startup_seconds = time.time() - started
        merge = _Merge(prefix, backlog.partitions, dict(backlog.targets))
        for k in range(len(backlog.phases)):  # one phase
            released = await backlog.release(k)
            seg = await asyncio.wait_for(
                _segment(consumer, loop, merge, backlog.records(k), released), timeout
            )
            run.segments.append(seg)
        run.load_seconds = dict(backlog.load_seconds)
        if loop.rerouted:
            run.notes.append(f"{loop.rerouted} records rerouted to their anchor's partition")
    finally:
        await consumer.stop()
        await producer.stop()
    _, run.completeness = await read_outputs(prefix, expected)
    return run
