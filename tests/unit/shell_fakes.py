"""Plain stand-ins for what the record step and a partition task talk to in the worker: a
dict state, a Kafka record as the consumer delivers it, and a transactional producer."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from streams.codec import INPUTS, Decoder, load_validators
from streams.engine.partition import PartitionTask
from streams.engine.store import MemoryBackend, PartitionState
from streams.expiry import Expiry
from streams.names import CHANGELOGS, OUTPUT_TOPICS
from streams.policy import Policy, load_policy
from streams.policy.versions import PolicyBook, book_of
from streams.step import STORES, InputRecord, RecordStep, StepResult, home_partition

POLICY = load_policy()
DECODERS = {t: Decoder(t, load_validators()) for t in INPUTS}
PARTITIONS = 4
GROUP = "test-app"
CHANGELOG_TOPICS = {store: f"{GROUP}-{name}-changelog" for store, name in CHANGELOGS.items()}


def make_step(
    prefix: str = "",
    partitions: int = PARTITIONS,
    policy: Policy = POLICY,
    book: PolicyBook | None = None,
) -> RecordStep:
    return RecordStep(book or book_of(policy), DECODERS, partitions, prefix)


class DictState:
    """The step's state as three dicts; `apply` does what the worker does with the writes."""

    def __init__(self) -> None:
        self.stores: dict[str, dict[str, Any]] = {s: {} for s in STORES}

    def get(self, store: str, key: str) -> Any:
        return self.stores[store].get(key)

    def apply(self, result: StepResult) -> StepResult:
        for store, key, value in result.writes:
            self.stores[store][key] = value
        return result


def home(anchor: str, partitions: int = PARTITIONS) -> int:
    return home_partition(anchor, partitions)


def input_record(
    topic: str,
    value: bytes | None,
    *,
    offset: int = 0,
    partition: int | None = None,
    key: bytes | None = None,
    ts_ms: int | None = None,
    anchor: str | None = None,
) -> InputRecord:
    """An unprefixed input record; with `anchor`, keyed and placed on that anchor's partition."""
    if anchor is not None:
        key = anchor.encode() if key is None else key
        partition = home(anchor) if partition is None else partition
    return InputRecord(topic, partition or 0, offset, ts_ms, key, value)


@dataclass
class FakeRecord:
    """What aiokafka's consumer hands a partition task (the fields it reads)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Metadata:
    topic: str
    partition: int
    offset: int


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: list[tuple[str, bytes]] | None
    txn: int


class FakeBatch:
    """aiokafka's BatchBuilder as the worker uses it: append, record_count."""

    def __init__(self, capacity: int = 1_000) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes | None, int | None, Any]] = []

    def append(
        self, *, timestamp: int | None, key: bytes | None, value: bytes | None, headers: Any = ()
    ) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value, timestamp, headers))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeTxnManager:
    """The one method of aiokafka's transaction manager the worker calls (`add_early`)."""

    def __init__(self) -> None:
        self.added: list[set[TopicPartition]] = []
        """Per transaction begun, the partitions added before anything was sent to them."""

    def maybe_add_partition_to_txn(self, tp: TopicPartition) -> None:
        self.added[-1].add(tp)


class FakeProducer:
    """A transactional producer that records everything; `fail_topics` make their sends fail
    (the future, not the call, as aiokafka reports a batch the broker rejected)."""

    def __init__(self, fail_topics: tuple[str, ...] = ()) -> None:
        self._txn_manager = FakeTxnManager()
        self.fail_topics = fail_topics
        self.sent: list[Sent] = []
        self.offsets: list[tuple[dict[TopicPartition, int], str]] = []
        self.txn = 0
        self.begun = 0
        self.committed: list[int] = []
        self.stopped = False
        self._next: dict[tuple[str, int], int] = defaultdict(int)

    async def begin_transaction(self) -> None:
        self._txn_manager.added.append(set())
        self.begun += 1
        self.txn += 1

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Metadata]:
        self.sent.append(Sent(topic, key, value, partition, headers, self.txn))
        fut: asyncio.Future[Metadata] = asyncio.get_running_loop().create_future()
        if topic in self.fail_topics:
            fut.set_exception(RuntimeError(f"broker rejected a batch of {topic}"))
        else:
            p = partition if partition is not None else 0
            offset = self._next[(topic, p)]
            self._next[(topic, p)] += 1
            fut.set_result(Metadata(topic, p, offset))
        return fut

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(
        self, batch: FakeBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Metadata]:
        """The batch API the worker uses: one future per batch, its base offset."""
        base = self._next[(topic, partition)]
        for key, value, ts, headers in batch.records:
            await self.send(topic, value, key, partition, ts, list(headers) or None)
        fut: asyncio.Future[Metadata] = asyncio.get_running_loop().create_future()
        if topic in self.fail_topics:
            fut.set_exception(RuntimeError(f"broker rejected a batch of {topic}"))
        else:
            fut.set_result(Metadata(topic, partition, base))
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        self.offsets.append((dict(offsets), group_id))

    async def commit_transaction(self) -> None:
        self.committed.append(self.txn)

    async def stop(self) -> None:
        self.stopped = True

    def to(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]


class RecordingStep(RecordStep):
    """The real step, remembering the order in which records were decided."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.decided: list[tuple[str, int, str]] = []

    def decide(self, topic: str, record: Any, state: Any, now_ms: int) -> StepResult:
        r = super().decide(topic, record, state, now_ms)
        self.decided.append((topic, record.offset, r.outcome))
        return r


def partition_task(
    partition: int,
    *,
    prefix: str = "p-",
    producer: FakeProducer | None = None,
    state: PartitionState | None = None,
    expiry: Expiry | None = None,
    max_idle: float = 0.0,
) -> PartitionTask:
    return PartitionTask(
        partition,
        prefix=prefix,
        group_id=GROUP,
        changelogs=CHANGELOG_TOPICS,
        state=state if state is not None else PartitionState(MemoryBackend),
        producer=producer if producer is not None else FakeProducer(),  # type: ignore[arg-type, unused-ignore]
        step=RecordingStep(book_of(POLICY), DECODERS, PARTITIONS, prefix),
        expiry=expiry if expiry is not None else Expiry(POLICY.dedup_retention_ms),
        max_idle=max_idle,
        partition_counts={f"{prefix}{t}": PARTITIONS for t in OUTPUT_TOPICS},
    )
