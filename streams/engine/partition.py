"""One partition number at work: its three input lanes, its state and its Kafka transaction.

Everything the partition decides between two commits goes into one transaction of its own
transactional producer: the outputs, the changelog records of the state it wrote, and the
input offsets. The local store takes the writes only once that transaction has committed.

Commits are pipelined: `seal()` closes the open transaction between two batches (its state
writes, outputs and offsets are fixed); while `finish()` writes its changelog and commits it
(five round trips), the partition goes on deciding. What it decides meanwhile reads the
sealed writes, and its outputs wait in a held outbox; once the sealed transaction committed,
the next one begins and the held batches are sent. A producer holds one transaction at a
time, so nothing of the next transaction reaches Kafka before the previous one committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalOperation, KafkaError

from streams import metrics
from streams.engine.merge import Lane, merge_ready
from streams.engine.outbox import Outbox
from streams.engine.store import PartitionState
from streams.expiry import Expiry
from streams.names import FEES, INPUT_TOPICS, REJECTIONS
from streams.step import SEEN, RecordStep

log = logging.getLogger(__name__)

EXIT_TRANSACTION_FAILED = 3
MAX_HELD = 20_000
"""Records a partition decides while its previous transaction is still being committed."""


class TransactionFailed(RuntimeError):
    """A send or the commit of a partition's transaction failed: it was not committed."""


@dataclass
class Sealed:
    """A transaction closed for commit: its outputs, state writes and input offsets."""

    outbox: Outbox
    encoded: list[tuple[str, str, bytes | None]]
    offsets: dict[TopicPartition, int]
    early: asyncio.Future[None] | None = None
    """The offsets sent when the transaction began (see `PartitionTask._begin`)."""


def add_early(producer: AIOKafkaProducer, tps: list[TopicPartition]) -> None:
    """Add partitions to the producer's open transaction before anything is sent to them.

    aiokafka (0.14) has no public call for it; its transaction manager adds a partition when a
    batch for it is first sent, by the same method. Without that method, nothing is done: the
    partitions are then added at the first send, one round trip later in the commit.
    """
    manager = getattr(producer, "_txn_manager", None)
    add = getattr(manager, "maybe_add_partition_to_txn", None)
    if add is None:
        return
    for tp in tps:
        add(tp)


def _ts(record: Any) -> tuple[int, int]:
    return record.timestamp, record.offset


class PartitionTask:
    """Decides one partition number's records in event-time order, in transactions."""

    def __init__(
        self,
        partition: int,
        *,
        prefix: str,
        group_id: str,
        changelogs: dict[str, str],
        state: PartitionState,
        producer: AIOKafkaProducer,
        step: RecordStep,
        expiry: Expiry,
        max_idle: float,
        partition_counts: dict[str, int],
        trace: bool = False,
    ) -> None:
        self.partition = partition
        self.prefix = prefix
        self.group_id = group_id
        self.changelogs = changelogs
        self.state = state
        self.producer = producer
        self.step = step
        self.expiry = expiry
        self.max_idle = max_idle
        self.trace = trace
        self.tps = {t: TopicPartition(prefix + t, partition) for t in INPUT_TOPICS}
        self.short = {tp.topic: t for t, tp in self.tps.items()}
        self.lanes = {t: Lane[Any](rank) for rank, t in enumerate(INPUT_TOPICS)}
        self._lanes = list(self.lanes.values())
        self.expected: dict[str, int] = {}
        """Per input topic (as named): the offset the next fetched record should have."""
        self.next_offsets: dict[TopicPartition, int] = {}
        """Input positions to commit: one past the last record decided."""
        self.partition_counts = partition_counts
        self.outbox = Outbox(producer, partition_counts)
        self.changelog_topics = frozenset(changelogs.values())
        self.early_partitions = {TopicPartition(t, partition) for t in self.changelog_topics}
        """Added to each transaction as it begins: the changelogs, and whatever the previous
        transaction wrote to (see `_begin`)."""
        self.store_of = {t: s for s, t in changelogs.items()}
        self.in_txn = False
        """The producer has begun the transaction `outbox` belongs to."""
        self.early: asyncio.Future[None] | None = None
        self.recent: set[TopicPartition] = set()
        """The partitions the last committed transaction wrote to."""
        self.txn_started = 0.0
        self.sealed: Sealed | None = None
        """The transaction being committed; decisions meanwhile belong to the next one."""
        self.decided_since_seal = 0
        self.committing: asyncio.Future[None] | None = None
        """The commit running in the background (the partition goes on deciding)."""
        self.stream_time = -1
        """The largest record timestamp decided so far (Kafka Streams' stream time)."""

    # -- input ----------------------------------------------------------------------------

    def expect(self, positions: dict[str, int]) -> None:
        """Where each input was sought to: records before it are stale (fetched before)."""
        self.expected.update(positions)

    def buffer(self, topic: str, records: list[Any], now: float = float("-inf")) -> None:
        """Records fetched for an input partition at `now` (monotonic; see merge's idle rule)."""
        expected = self.expected.get(topic)
        if expected is not None and records[0].offset != expected:
            if records[0].offset < expected:
                records = [r for r in records if r.offset >= expected]
                if not records:
                    return
            if records[0].offset > expected:
                log.warning("%s/%d: records %d..%d were not delivered (or are transaction "
                            "markers)", topic, self.partition, expected, records[0].offset - 1)
        self.expected[topic] = records[-1].offset + 1
        self.lanes[self.short[topic]].add(records, now)

    def buffered(self, topic: str) -> int:
        return len(self.lanes[self.short[topic]].records)

    def note_lag(self, topic: str, behind: bool, confirmed: float = float("inf")) -> None:
        """Whether the broker holds more for an input partition than was fetched, as its fetch
        response of `confirmed` (monotonic) said (see merge's idle rule)."""
        lane = self.lanes[self.short[topic]]
        lane.behind = behind
        lane.confirmed = confirmed

    # -- deciding -------------------------------------------------------------------------

    async def run(self, now: float, now_ms: int, limit: int | None = None) -> int:
        """Decide what the merge allows, at most `limit`; returns how many were decided."""
        if self.sealed is not None:
            # while a commit is slow (a broker outage), held outputs must not grow unbounded
            room = MAX_HELD - self.decided_since_seal
            if room <= 0:
                return 0
            limit = room if limit is None else min(limit, room)
        ready = merge_ready(self._lanes, _ts, now, self.max_idle, limit)
        if self.trace and ready:
            log.info(
                "trace partition %d: taking %d; lanes left %s", self.partition, len(ready),
                [(len(lane.records), lane.behind) for lane in self._lanes],
            )
        if not ready:
            return 0
        try:
            await self._decide(ready, now_ms)
        except Exception as exc:
            # a producer that was fenced, or whose transaction failed, refuses sends
            if isinstance(exc, KafkaError | IllegalOperation):
                raise TransactionFailed(f"partition {self.partition}: {exc!r}") from exc
            raise
        return len(ready)

    async def _decide(self, ready: list[Any], now_ms: int) -> None:
        if not self.in_txn and self.sealed is None:
            await self._begin()
            self.txn_started = time.monotonic()
        elif self.decided_since_seal == 0 and self.sealed is not None:
            self.txn_started = time.monotonic()  # the held transaction's age counts from here
        self.decided_since_seal += len(ready)
        if self.expiry.any_due(now_ms):
            due = self.expiry.due(now_ms, limit=len(ready) * 4)
            self.state.forget(SEEN, (k for k, v in due if self.state.get(SEEN, k) == v))
            metrics.DEDUP_FORGOTTEN.inc(len(due))
        decide, state, prefix, part = self.step.decide, self.state, self.prefix, self.partition
        add = self.outbox.add
        remember = self.expiry.remember
        started = time.perf_counter()
        tally = metrics.Tally()
        for rec in ready:
            topic = self.short[rec.topic]
            r = decide(topic, rec, state, now_ms)
            for store, key, value in r.writes:
                state.put(store, key, value)
                if store == SEEN:
                    remember(key, value)
            for o in r.outputs:
                add(
                    prefix + o.topic,
                    o.key,
                    o.value,
                    partition=o.partition,
                    timestamp_ms=o.timestamp_ms,
                    headers=o.headers,
                )
            if rec.timestamp < self.stream_time:
                metrics.child(metrics.LATE_RECORDS, topic).inc()
            else:
                self.stream_time = rec.timestamp
            self.next_offsets[self.tps[topic]] = rec.offset + 1
            tally.result(topic, r, now_ms)
            if self.trace:
                log.info(
                    "trace %s/%s@%s ts=%s %s", rec.topic, part, rec.offset, rec.timestamp,
                    r.outcome,
                )
        tally.flush()
        await self.outbox.send_full()
        per_record = (time.perf_counter() - started) / len(ready)
        per_topic: dict[str, int] = {}
        for rec in ready:
            per_topic[rec.topic] = per_topic.get(rec.topic, 0) + 1
        for topic, n in per_topic.items():
            metrics.observe_many(
                metrics.child(metrics.PROCESSING_SECONDS, self.short[topic]), per_record, n
            )

    # -- committing -----------------------------------------------------------------------

    async def _begin(self) -> None:
        """Begin a transaction and do at once what its commit would otherwise wait for.

        A commit is a chain of round trips, each one waiting for the event loop: add the
        partitions written to the transaction, add the group's offsets partition, commit the
        offsets, then end the transaction. The changelog partitions, and under load the
        partitions the previous transaction wrote to, are written by nearly every
        transaction, and the group's offsets partition by every one: they are added now,
        while the partition decides, and the offsets decided so far are sent now too (the
        commit sends the final ones, which replace them; nothing counts unless the
        transaction commits). That leaves the commit the last batches beside the final
        offsets, then the end. A partition added but not written costs its transaction
        marker only.
        """
        await self.producer.begin_transaction()
        self.in_txn = True
        add_early(self.producer, sorted(self.early_partitions | self.recent))
        if self.next_offsets:
            self.early = asyncio.ensure_future(
                self.producer.send_offsets_to_transaction(dict(self.next_offsets), self.group_id)
            )

    async def warm_up(self, positions: dict[TopicPartition, int]) -> None:
        """One empty transaction before the first decision: it finds the group's coordinator,
        adds the changelog and output partitions and commits the input positions the partition
        starts from (the committed offsets, or where an uncommitted input is read from), so
        the first transactions do not wait for lookups and connections (their decisions' p99
        was 3-4 times the rest's)."""
        outputs = [
            TopicPartition(topic, p)
            for topic in (self.prefix + REJECTIONS, self.prefix + FEES)
            for p in range(self.partition_counts.get(topic, 0))
        ]
        await self.producer.begin_transaction()
        add_early(self.producer, sorted(self.early_partitions | set(outputs)))
        if positions:
            await self.producer.send_offsets_to_transaction(positions, self.group_id)
        await self.producer.commit_transaction()

    async def _send_offsets(
        self, offsets: dict[TopicPartition, int], early: asyncio.Future[None] | None
    ) -> None:
        if early is not None:
            await early  # offsets are committed in the order they were sent
        if offsets:
            await self.producer.send_offsets_to_transaction(offsets, self.group_id)

    def commit_due(self, interval: float) -> bool:
        return self.in_txn and time.monotonic() - self.txn_started >= interval

    async def commit(self) -> dict[TopicPartition, int]:
        """`seal()` and `finish()`: what was decided so far, committed."""
        return await self.finish(self.seal())

    def seal(self) -> Sealed | None:
        """Close the open transaction for commit (call between batches, never while one is
        being decided); None if there is none."""
        if not self.in_txn or self.sealed is not None:
            return None
        sealed = Sealed(self.outbox, self.state.seal(), dict(self.next_offsets), self.early)
        self.early = None
        self.sealed = sealed
        self.outbox = Outbox(self.producer, self.partition_counts)
        self.outbox.hold()
        self.decided_since_seal = 0
        return sealed

    async def finish(self, sealed: Sealed | None) -> dict[TopicPartition, int]:
        """Changelog, check every send, offsets, commit; then the local store, and the next
        transaction begins if anything was decided meanwhile. Raises TransactionFailed
        (nothing of the transaction is kept locally) on any failure."""
        if sealed is None:
            return {}
        outbox, encoded, offsets = sealed.outbox, sealed.encoded, sealed.offsets
        try:
            add, changelogs, part = outbox.add, self.changelogs, self.partition
            for store, key, value in encoded:
                add(changelogs[store], key.encode(), value, partition=part)
            changelog_counts = {
                (t, p): b.record_count() for (t, p), b in outbox.builders.items()
                if t in self.changelog_topics
            }
            last = {
                where: fut for where, fut in (await outbox.flush()).items()
                if where in changelog_counts
            }
            # The offsets go to the transaction while its batches are still being acked (one
            # round trip less); they only count if the transaction commits, which it does only
            # once every batch is known to be written.
            sending = asyncio.ensure_future(self._send_offsets(offsets, sealed.early))
            results = await asyncio.gather(*outbox.sent, return_exceptions=True)
            offsets_sent = (await asyncio.gather(sending, return_exceptions=True))[0]
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise TransactionFailed(
                    f"partition {self.partition}: {len(failed)} of {len(results)} batches "
                    f"were not written ({failed[0]!r})"
                )
            if isinstance(offsets_sent, BaseException):
                raise offsets_sent
            await self.producer.commit_transaction()
            self.recent = {TopicPartition(t, p) for t, p in outbox.written}
        except TransactionFailed:
            raise
        except Exception as exc:
            raise TransactionFailed(f"partition {self.partition}: {exc!r}") from exc
        finally:
            outbox.clear()
            self.in_txn = False
        self.state.commit(
            encoded,
            {
                self.store_of[t]: f.result().offset + changelog_counts[(t, p)] - 1
                for (t, p), f in last.items()
            },
        )
        try:
            if self.decided_since_seal:
                await self._begin()
            self.sealed = None
            await self.outbox.release()
        except Exception as exc:
            raise TransactionFailed(f"partition {self.partition}: {exc!r}") from exc
        return offsets

    async def close(self) -> None:
        """Drop what was not committed (an open transaction is aborted by the next owner)."""
        if self.early is not None:
            self.early.cancel()
        self.state.discard()
        try:
            self.state.close()
        except Exception as exc:  # e.g. its directory was removed under it: nothing to keep
            log.warning("partition %d: closing its local store failed: %r", self.partition, exc)
        try:
            await self.producer.stop()
        except Exception as exc:  # a fenced or disconnected producer still closes
            log.debug("producer of partition %d stopped with %r", self.partition, exc)
