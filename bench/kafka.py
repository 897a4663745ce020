"""Broker plumbing shared by the measured systems: topics, the backlog, offsets, outputs.

Each measured run gets its own topic prefix (fresh inputs, outputs, consumer group, changelogs)
and the same planned records in two phases: the Xingtu tasks, then the cart-adds and orders,
released only after every task is decided (as the reference model assumes). See `Backlog` for
how a phase is held back and released.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from streams.loadgen.expected import Expected
from streams.loadgen.generate import Planned
from streams.names import DEAD_LETTERS, FEES, INPUT_TOPICS, OUTPUT_TOPICS, REJECTIONS

BROKER = os.environ.get("STREAMS_BENCH_BROKER") or os.environ.get(
    "STREAMS_TEST_BROKER", "kafka://127.0.0.1:9092"
)
BOOTSTRAP = BROKER.removeprefix("kafka://")

# The loader's transactions stay open while a system starts and decides phase 1 (the broker's
# transaction.max.timeout.ms defaults to 15 min).
TXN_TIMEOUT_MS = 600_000


def run_id() -> str:
    return uuid.uuid4().hex[:8]


def home_partition(key: bytes | None, partitions: int, i: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks; round robin without a key."""
    if key is None:
        return i % partitions
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def admin_client() -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=30_000)
    await admin.start()
    return admin


async def create_topics(names: Iterable[str], partitions: int) -> None:
    """Create topics that keep records forever (the events are stamped 2020)."""
    admin = await admin_client()
    try:
        new = [
            NewTopic(n, partitions, 1, topic_configs={"retention.ms": "-1"}) for n in names
        ]
        await admin.create_topics(new, timeout_ms=30_000)
    finally:
        await admin.close()


async def delete_topics_with_prefix(prefix: str) -> list[str]:
    """Delete this run's topics (inputs, outputs, changelogs): the broker is shared."""
    if len(prefix) < 8:  # never a broad prefix
        raise ValueError(f"refusing to delete topics by the short prefix {prefix!r}")
    admin = await admin_client()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names, timeout_ms=30_000)
        return names
    finally:
        await admin.close()


async def committed_offsets(admin: AIOKafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    offsets = await admin.list_consumer_group_offsets(group)
    return {tp: om.offset for tp, om in offsets.items() if om is not None and om.offset >= 0}


def _by_partition(
    records: Sequence[Planned], topic_prefix: str, partitions: int
) -> list[tuple[TopicPartition, list[Planned]]]:
    by_tp: dict[TopicPartition, list[Planned]] = {}
    for i, p in enumerate(records):
        tp = TopicPartition(topic_prefix + p.topic, home_partition(p.key, partitions, i))
        by_tp.setdefault(tp, []).append(p)
    return list(by_tp.items())


@dataclass
class Backlog:
    """The input topics of one measured run and the two phases to put into them.

    `held`: both phases are produced up front, each inside a Kafka transaction left open, and
    `release(k)` commits phase k: a read_committed consumer then finds all of it at once (a
    pure backlog, and no loader running during the measurement). Otherwise `release(k)`
    produces phase k there and then, as fast as the producer goes (~100k records/s here), for
    consumers that read uncommitted records and would see a held-back phase early.
    """

    prefix: str
    partitions: int
    held: bool
    phases: list[Sequence[Planned]]
    producers: dict[int, AIOKafkaProducer] = field(default_factory=dict)
    released_at: dict[int, float] = field(default_factory=dict)
    load_seconds: dict[int, float] = field(default_factory=dict)
    # Offset after the last loaded record, per input partition: where a finished consumer's
    # committed offset must be (a transaction marker after it takes one more offset).
    targets: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def input_topics(self) -> list[str]:
        return [self.prefix + t for t in INPUT_TOPICS]

    def input_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in self.input_topics for p in range(self.partitions)]

    def records(self, phase: int) -> int:
        return len(self.phases[phase])

    @property
    def events(self) -> int:
        return sum(len(p) for p in self.phases)

    async def hold(self) -> None:
        """Produce every phase inside its own transaction, left open until `release`."""
        for k in range(len(self.phases)):
            producer = _producer(transactional_id=f"{self.prefix}loader-{k}")
            await producer.start()
            await producer.begin_transaction()
            self.producers[k] = producer
            self.load_seconds[k] = await self._produce(self.phases[k], producer)

    async def release(self, phase: int) -> float:
        """Make phase `phase` visible; returns the wall time at which that began."""
        self.released_at[phase] = t = time.time()
        if self.held:
            producer = self.producers.pop(phase)
            await producer.commit_transaction()
            await producer.stop()
        else:
            producer = _producer()
            await producer.start()
            try:
                self.load_seconds[phase] = await self._produce(self.phases[phase], producer)
            finally:
                await producer.stop()
        return t

    async def close(self) -> None:
        """Abort whatever is still held back (a failed run) and stop the producers."""
        for producer in self.producers.values():
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            with contextlib.suppress(Exception):
                await producer.stop()
        self.producers.clear()

    async def _produce(self, records: Sequence[Planned], producer: AIOKafkaProducer) -> float:
        """Send `records` with their planned keys and CreateTimes to the partitions the default
        partitioner picks, in list order per partition, one batch per partition in turn."""
        started = time.perf_counter()
        queues = {
            tp: iter(recs) for tp, recs in _by_partition(records, self.prefix, self.partitions)
        }
        pending: list[tuple[TopicPartition, int, asyncio.Future[Any]]] = []
        carry: dict[TopicPartition, Planned] = {}
        while queues:
            for tp in list(queues):
                batch, count = producer.create_batch(), 0
                first = carry.pop(tp, None)
                if first is not None:
                    if batch.append(
                        key=first.key, value=first.value, timestamp=first.timestamp_ms
                    ) is None:
                        raise ValueError(f"record too large for a batch: {len(first.value)} bytes")
                    count = 1
                for p in queues[tp]:
                    if batch.append(key=p.key, value=p.value, timestamp=p.timestamp_ms) is None:
                        carry[tp] = p
                        break
                    count += 1
                else:
                    del queues[tp]
                if count:
                    fut = await producer.send_batch(batch, tp.topic, partition=tp.partition)
                    pending.append((tp, count, fut))
        for tp, count, fut in pending:
            meta = await fut
            # The batch's base offset plus its record count is where the next record goes.
            self.targets[tp] = max(self.targets.get(tp, 0), meta.offset + count)
        return time.perf_counter() - started


def _producer(transactional_id: str | None = None) -> AIOKafkaProducer:
    extra: dict[str, Any] = {}
    if transactional_id is not None:
        extra = {"transactional_id": transactional_id, "transaction_timeout_ms": TXN_TIMEOUT_MS}
    return AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks="all",
        max_batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
        # a sparse partition's batch waits up to linger_ms behind full ones of dense partitions:
        # Kafka 4's default, below the worker's STREAMS_MAX_IDLE_MS (20)
        linger_ms=5,
        **extra,
    )


async def prepare_backlog(
    prefix: str, partitions: int, phases: Sequence[Sequence[Planned]], *, held: bool
) -> Backlog:
    """Create the input topics of `prefix`; with `held`, produce the phases now (see Backlog)."""
    await create_topics([prefix + t for t in INPUT_TOPICS], partitions)
    backlog = Backlog(prefix, partitions, held, list(phases))
    if held:
        await backlog.hold()
    return backlog


async def end_offsets(tps: Sequence[TopicPartition], *, committed: bool = True) -> dict[Any, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        isolation_level="read_committed" if committed else "read_uncommitted",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(list(tps)))
    finally:
        await consumer.stop()


@dataclass
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def committed_reader(*topics: str, bootstrap: str, **config: Any) -> AIOKafkaConsumer:
    """A consumer outside any group that reads committed records (read_committed) from the start
    of `topics` (subscribed) or of what it is assigned later; up to 4 MiB per partition per fetch
    (records of a few MiB; fetch_max_bytes stays aiokafka's 50 MiB). `config` adds or overrides
    aiokafka options (e.g. security)."""
    options: dict[str, Any] = {
        "isolation_level": "read_committed",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "group_id": None,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        **config,
    }
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, **options)


async def topic_partitions(
    consumer: AIOKafkaConsumer, topics: Sequence[str]
) -> list[TopicPartition]:
    """Every partition of `topics`, waiting up to ~10 s for a brand-new topic's metadata."""
    tps: list[TopicPartition] = []
    for t in topics:
        parts = consumer.partitions_for_topic(t)
        for _ in range(100):
            if parts:
                break
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(t)
            await asyncio.sleep(0.1)
        tps += [TopicPartition(t, p) for p in sorted(parts or [])]
    return tps


async def read_topics(topics: Sequence[str], *, timeout: float = 120.0) -> list[OutRecord]:
    """Every committed record of `topics` (read_committed), up to the end offsets of now."""
    consumer = committed_reader(bootstrap=BOOTSTRAP)
    await consumer.start()
    out: list[OutRecord] = []
    try:
        tps = await topic_partitions(consumer, topics)
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for tp, msgs in batch.items():
                for m in msgs:
                    out.append(OutRecord(tp.topic, m.key, m.value, m.timestamp))
            for tp in list(pending):
                # aiokafka moves the position past transaction markers, so this is exact.
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        if pending:
            raise TimeoutError(f"outputs not read to their end within {timeout:g}s: {pending}")
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return out


@dataclass
class Completeness:
    """The outputs compared with the reference model, by id; `ok` only if exactly equal."""

    ok: bool
    rejections: int
    fees: int
    dead_letters: int
    expected_rejections: int
    expected_fees: int
    expected_dead_letters: int
    missing: int
    unexpected: int
    duplicated: int
    examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            return (
                f"OK ({self.rejections} rejections, {self.fees} fees, "
                f"{self.dead_letters} dead letters)"
            )
        return (
            f"FAILED: {self.missing} missing, {self.unexpected} unexpected, "
            f"{self.duplicated} duplicated ids; dead letters {self.dead_letters}/"
            f"{self.expected_dead_letters}; e.g. {', '.join(self.examples[:3])}"
        )


def check_outputs(
    records: Sequence[OutRecord], expected: Expected, *, rejections: str, fees: str, dead: str
) -> Completeness:
    ids: Counter[str] = Counter()
    n_rej = n_fee = n_dead = 0
    for r in records:
        if r.topic == dead:
            n_dead += 1
        elif r.topic == rejections:
            n_rej += 1
            ids[orjson.loads(r.value or b"{}").get("rejection_id", "?")] += 1
        elif r.topic == fees:
            n_fee += 1
            ids[orjson.loads(r.value or b"{}").get("fee_id", "?")] += 1
    want = expected.rejection_ids | expected.fee_ids
    got = set(ids)
    missing = want - got
    unexpected = got - want
    duplicated = [i for i, c in ids.items() if c > 1]
    ok = not missing and not unexpected and not duplicated and n_dead == expected.dead_letters
    examples = [f"missing {i}" for i in sorted(missing)[:2]]
    examples += [f"unexpected {i}" for i in sorted(unexpected)[:2]]
    examples += [f"duplicated {i}" for i in duplicated[:2]]
    return Completeness(
        ok=ok,
        rejections=n_rej,
        fees=n_fee,
        dead_letters=n_dead,
        expected_rejections=len(expected.rejection_ids),
        expected_fees=len(expected.fee_ids),
        expected_dead_letters=expected.dead_letters,
        missing=len(missing),
        unexpected=len(unexpected),
        duplicated=len(duplicated),
        examples=examples,
    )


async def read_outputs(prefix: str, expected: Expected) -> tuple[list[OutRecord], Completeness]:
    """Every committed output of the run `prefix`, and their comparison with the model."""
    outputs = await read_topics([prefix + t for t in OUTPUT_TOPICS])
    completeness = check_outputs(
        outputs,
        expected,
        rejections=prefix + REJECTIONS,
        fees=prefix + FEES,
        dead=prefix + DEAD_LETTERS,
    )
    return outputs, completeness
