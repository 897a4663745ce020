"""The raw loop: what the worker's job costs with nothing but aiokafka around the same core.

One consumer (getmany, manual commits), the worker's decoding (`streams.codec.Decoder`), the same
routing and dedup, `streams.policy.decide` over plain dicts (as the reference model keeps them),
orjson, one producer (acks=all, linger 5 ms). After each getmany batch it awaits every send and
commits the batch's offsets, so when it stops, every output is acked and every offset committed.
No metrics, no tables with changelogs, no transactions: the lean loop a person would write.
"""

from __future__ import annotations

import asyncio
import time
from functools import lru_cache
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

from bench.kafka import (
    BOOTSTRAP,
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    Backlog,
    create_topics,
    read_outputs,
)
from bench.model import Segment, SystemRun
from streams.codec import DecodeError, Decoder
from streams.loadgen.expected import Expected
from streams.policy import ChargeState, Policy, State, TaskState, decide, needed_keys

MAX_RECORDS = 2000


@lru_cache(maxsize=1 << 16)
def _murmur(anchor_id: str) -> int:
    return murmur2(anchor_id.encode()) & 0x7FFFFFFF


class RawLoop:
    """State and output topics of the baseline; `handle` is the per-record path."""

    def __init__(
        self,
        *,
        prefix: str,
        partitions: int,
        policy: Policy,
        validators: dict[str, Any],
        producer: AIOKafkaProducer,
    ) -> None:
        self.partitions = partitions
        self.policy = policy
        self.producer = producer
        self.decoders = {prefix + t: Decoder(t, validators) for t in INPUT_TOPICS}
        self.short = {prefix + t: t for t in INPUT_TOPICS}
        self.t_rejections = prefix + "rejections"
        self.t_fees = prefix + "fees"
        self.t_dead = prefix + "dead-letters"
        self.tasks: dict[str, TaskState] = {}
        self.charges: dict[str, ChargeState] = {}
        self.processed: dict[str, int] = {}
        self.rerouted = 0

    async def handle(self, msg: Any, futs: list[asyncio.Future[Any]]) -> None:
        send = self.producer.send
        try:
            event: Any = self.decoders[msg.topic](msg.value)
        except DecodeError as exc:
            futs.append(await self._dead_letter(msg, str(exc)))
            return
        anchor = event.anchor_id
        home = _murmur(anchor) % self.partitions
        if home != msg.partition:
            self.rerouted += 1
            origin = f"{msg.partition}:{msg.offset}".encode()
            headers = [*(msg.headers or ()), ("rerouted_from", origin)]
            futs.append(
                await send(
                    msg.topic, msg.value, key=anchor.encode(), partition=home,
                    timestamp_ms=msg.timestamp, headers=headers,
                )
            )
            return
        seen_key = f"{self.short[msg.topic]}/{event.event_id}"
        if seen_key in self.processed:
            return
        task_key, charge_key = needed_keys(event)
        state = State(
            task=self.tasks.get(task_key) if task_key else None,
            charge=self.charges.get(charge_key) if charge_key else None,
        )
        try:
            d = decide(
                event, state, self.policy, record_ms=msg.timestamp, now_ms=int(time.time() * 1000)
            )
        except Exception as exc:  # as the worker: a record the core cannot decide is kept
            error = f"internal error: {type(exc).__name__}: {exc}"
            futs.append(await self._dead_letter(msg, error))
            return
        if d.task is not None and task_key:
            self.tasks[task_key] = d.task
        if d.charge is not None and charge_key:
            self.charges[charge_key] = d.charge
        self.processed[seen_key] = d.t_ms
        if d.rejection is not None:
            r = d.rejection
            futs.append(await send(self.t_rejections, orjson.dumps(r), key=r["anchor_id"].encode()))
        if d.fee is not None:
            f = d.fee
            futs.append(await send(self.t_fees, orjson.dumps(f), key=f["order_id"].encode()))

    async def _dead_letter(self, msg: Any, error: str) -> asyncio.Future[Any]:
        headers = [
            ("error", error.encode("utf-8", "replace")),
            ("source_topic", msg.topic.encode()),
            ("source_partition", str(msg.partition).encode()),
            ("source_offset", str(msg.offset).encode()),
        ]
        fut: asyncio.Future[Any] = await self.producer.send(
            self.t_dead, msg.value, key=msg.key, headers=headers
        )
        return fut


async def _segment(
    consumer: AIOKafkaConsumer, loop: RawLoop, records: int, released_at: float
) -> Segment:
    """Consume until `records` (plus whatever was rerouted) are handled, acked and committed."""
    first: float | None = None
    cpu = time.process_time()
    consumed = 0
    rerouted_before = loop.rerouted
    while consumed < records + (loop.rerouted - rerouted_before):
        batch = await consumer.getmany(timeout_ms=100, max_records=MAX_RECORDS)
        if not batch:
            continue
        if first is None:
            first = time.time()
        futs: list[asyncio.Future[Any]] = []
        for msgs in batch.values():
            for msg in msgs:
                await loop.handle(msg, futs)
            consumed += len(msgs)
        if futs:
            await asyncio.gather(*futs)
        await consumer.commit()
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

    The backlog is held (each phase a committed transaction away), so the loop starts on a full
    queue and nothing else runs in this process while it works.
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
        # Sees each phase only once the bench releases it (as the worker's EOS consumer does).
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
        for k in range(len(backlog.phases)):
            released = await backlog.release(k)
            seg = await asyncio.wait_for(
                _segment(consumer, loop, backlog.records(k), released), timeout
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
