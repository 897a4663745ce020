"""The per-record shell around the policy core: decode, route, dedup, look up, decide, emit.

Kept apart from the Faust agent so that it can be driven with plain dicts as tables.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from aiokafka.partitioner import murmur2

from streams import metrics
from streams.codec import DecodeError, Decoder, encode
from streams.emit import Emitter
from streams.expiry import Expiry
from streams.policy import (
    ChargeState,
    Decision,
    Policy,
    State,
    TaskState,
    decide,
    needed_keys,
)

log = logging.getLogger(__name__)


class Message(Protocol):
    """What the processor reads of a Kafka record (Faust's Message has these)."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes | None
    headers: Any
    tp: Any
    acked: bool


@dataclass
class Tables:
    """The worker's state; Faust tables in the worker, dicts in tests."""

    tasks: MutableMapping[str, Any]
    charges: MutableMapping[str, Any]
    processed: MutableMapping[str, Any]


class CommitGate:
    """Keeps offset commits (Kafka transaction commits) between records, never inside one, and
    stops processing across a rebalance.

    Faust commits from a timer task while the agent may be suspended half-way through a record,
    its outputs or table updates already in the open transaction but its offset not yet acked:
    a crash after such a commit replays the record against state that already holds it (a lost
    output) or re-emits what was committed (a doubled one). `faust_app` wraps the consumer's
    commit in `lock`; each record is processed holding it.

    `fenced` is set, under the lock, by the commit that precedes a revocation and cleared once
    the new assignment has been sought to its committed offsets. A record taken off a queue in
    between (or fetched in an older consumer generation) would have its outputs in a
    transaction that the rebalance aborts while its table updates stay in the local store, so a
    re-read would find it "already processed" and emit nothing: such records are left
    unprocessed and unacknowledged, and are read again from the committed offset.

    `closed` is set by the final commit at shutdown: later records are likewise left alone.
    """

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.closed = False
        self.fenced = False
        self.generation: int | None = None

    def admits(self, msg: Any) -> bool:
        if self.closed or self.fenced:
            return False
        generation = getattr(msg, "generation_id", None)
        return generation is None or self.generation is None or generation == self.generation

    def fence(self) -> None:
        self.fenced = True

    def open(self, generation: int | None) -> None:
        self.generation = generation
        self.fenced = False


COMMIT_GATE = CommitGate()


@lru_cache(maxsize=1 << 16)
def _murmur(anchor_id: str) -> int:
    return murmur2(anchor_id.encode()) & 0x7FFFFFFF


class Processor:
    """Decides one record at a time; every path ends in exactly one counted outcome."""

    def __init__(
        self,
        *,
        prefix: str,
        partitions: int,
        policy: Policy,
        decoders: dict[str, Decoder],
        tables: Tables,
        emitter: Emitter,
        trace: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.trace = trace
        """One INFO line per record (position, generation, event id, outcome): debugging."""
        self.prefix = prefix
        self.partitions = partitions
        self.policy = policy
        self.decoders = {prefix + t: d for t, d in decoders.items()}
        self.short = {prefix + t: t for t in decoders}
        self.tables = tables
        self.emitter = emitter
        self.t_rejections = prefix + "rejections"
        self.t_fees = prefix + "fees"
        self.t_dead = prefix + "dead-letters"
        self.clock = clock
        self.expiry = Expiry(policy.dedup_retention_ms)
        self._expiry_stale = True

    def state_recovered(self) -> None:
        """The tables were (re)loaded, e.g. after a rebalance: rebuild the dedup expiry from them
        before the next record."""
        self._expiry_stale = True

    async def process(self, msg: Message) -> None:
        # Shielded: a stop that cancels the agent mid-record lets the record finish, so the final
        # commit never holds half of a record's outputs and state.
        await asyncio.shield(self._gated(msg))

    async def _gated(self, msg: Message) -> None:
        async with COMMIT_GATE.lock:
            if COMMIT_GATE.admits(msg):
                await self._process(msg)
            else:
                if self.trace:
                    _trace(msg, "held back")
                # Never acknowledged: Faust's ack is a no-op for a message marked acked, so the
                # offset stays uncommitted and the record is read again.
                msg.acked = True

    async def _process(self, msg: Message) -> None:
        started = time.perf_counter()
        now_ms = int(self.clock() * 1000)
        if self._expiry_stale:
            self._rebuild_expiry(now_ms)
        if self.expiry.any_due(now_ms):
            self._forget_due(now_ms)
        topic = self.short[msg.topic]
        try:
            event = self.decoders[msg.topic](msg.value)
        except DecodeError as exc:
            await self._dead_letter(msg, topic, str(exc), now_ms)
            return
        except Exception as exc:  # e.g. jsonschema-rs failing to describe a deeply nested value:
            # a record the decoder chokes on is unreadable too; crashing the agent would drop it
            await self._dead_letter(
                msg, topic, f"undecodable: {type(exc).__name__}: {exc}", now_ms
            )
            return
        anchor = event.anchor_id
        if msg.key is None or msg.key != anchor.encode():
            metrics.child(metrics.KEY_MISMATCH, topic).inc()
        home = _murmur(anchor) % self.partitions
        if home != msg.partition:
            await self._reroute(msg, topic, anchor, home)
            return
        seen_key = f"{topic}/{event.event_id}"
        if seen_key in self.tables.processed:
            metrics.child(metrics.EVENTS, topic, "duplicate").inc()
            if self.trace:
                _trace(msg, f"{event.event_id} duplicate")
            return
        try:
            decision = self._decide(event, msg, now_ms)
        except Exception as exc:  # a bug must not stall the partition; the record is kept
            log.exception("decision failed for %s/%s@%s", msg.topic, msg.partition, msg.offset)
            await self._dead_letter(
                msg, topic, f"internal error: {type(exc).__name__}: {exc}", now_ms
            )
            return
        self._store(event, decision)
        self._remember(seen_key, now_ms)
        await self._emit(msg, topic, decision)
        if self.trace:
            _trace(msg, f"{event.event_id} {decision.outcome}")
        metrics.child(metrics.EVENT_AGE_SECONDS, topic).observe(
            max(0.0, (now_ms - decision.t_ms) / 1000)
        )
        metrics.child(metrics.PROCESSING_SECONDS, topic).observe(time.perf_counter() - started)

    def _decide(self, event: Any, msg: Message, now_ms: int) -> Decision:
        task_key, charge_key = needed_keys(event)
        task = self.tables.tasks.get(task_key) if task_key else None
        charge = self.tables.charges.get(charge_key) if charge_key else None
        state = State(
            task=TaskState.from_json(task) if task else None,
            charge=ChargeState.from_json(charge) if charge else None,
        )
        record_ms = int(msg.timestamp * 1000) if msg.timestamp else None
        return decide(
            event, state, self.policy, record_ms=record_ms, now_ms=now_ms
        )

    def _store(self, event: Any, decision: Decision) -> None:
        task_key, charge_key = needed_keys(event)
        if decision.task is not None and task_key:
            self.tables.tasks[task_key] = decision.task.to_json()
        if decision.charge is not None and charge_key:
            self.tables.charges[charge_key] = decision.charge.to_json()

    async def _emit(self, msg: Message, topic: str, d: Decision) -> None:
        metrics.child(metrics.EVENTS, topic, d.outcome).inc()
        if d.rejection is not None:
            r = d.rejection
            await self.emitter.send(
                self.t_rejections, r["anchor_id"].encode(), encode(r), source=msg.tp
            )
            metrics.child(metrics.REJECTIONS, r["subject"], r["reason"]).inc()
        if d.fee is not None:
            f = d.fee
            await self.emitter.send(self.t_fees, f["order_id"].encode(), encode(f), source=msg.tp)
            metrics.child(metrics.FEE_FEN, f["source_class"], f["kind"]).inc(f["fee_fen"])

    async def _dead_letter(self, msg: Message, topic: str, error: str, now_ms: int) -> None:
        # A record read again before its offset is committed (after a rebalance) must not be
        # dead-lettered twice; valid events are deduplicated by event_id, this by position.
        seen_key = f"dead/{msg.topic}/{msg.partition}/{msg.offset}"
        if seen_key in self.tables.processed:
            metrics.child(metrics.EVENTS, topic, "duplicate").inc()
            return
        self._remember(seen_key, now_ms)
        log.warning("dead letter %s/%s@%s: %s", msg.topic, msg.partition, msg.offset, error[:200])
        headers = [
            ("error", error.encode("utf-8", "replace")),
            ("source_topic", msg.topic.encode()),
            ("source_partition", str(msg.partition).encode()),
            ("source_offset", str(msg.offset).encode()),
        ]
        await self.emitter.send(self.t_dead, msg.key, msg.value, headers=headers, source=msg.tp)
        metrics.child(metrics.EVENTS, topic, "dead_letter").inc()

    def _remember(self, seen_key: str, now_ms: int) -> None:
        # the value is when the id was first decided (wall clock): see streams.expiry
        self.tables.processed[seen_key] = now_ms
        self.expiry.remember(seen_key, now_ms)

    def _dedup_store(self) -> MutableMapping[str, Any]:
        """The processed table's local store (Faust's `Table.data`; the dict itself in tests):
        forgetting an id there writes nothing to the changelog, whose own retention forgets it."""
        return getattr(self.tables.processed, "data", self.tables.processed)

    def _forget_due(self, now_ms: int) -> None:
        due = self.expiry.due(now_ms)
        store = self._dedup_store()
        for key, seen_ms in due:
            if store.get(key) == seen_ms:
                del store[key]
        metrics.DEDUP_FORGOTTEN.inc(len(due))

    def _rebuild_expiry(self, now_ms: int) -> None:
        # One pass without awaiting: nothing else may change the store half-way (a standby's
        # recovery writes to the same memory store).
        self._expiry_stale = False
        store = self._dedup_store()
        started = time.perf_counter()
        drop = self.expiry.rebuild(list(store.items()), now_ms)
        for key in drop:
            store.pop(key, None)
        metrics.DEDUP_FORGOTTEN.inc(len(drop))
        log.info(
            "dedup: remembering %d event ids for %d days, forgot %d due ones (%.3fs)",
            len(self.expiry), self.policy.dedup_retention_days, len(drop),
            time.perf_counter() - started,
        )

    async def _reroute(self, msg: Message, topic: str, anchor: str, home: int) -> None:
        """Re-send the original bytes to the anchor's partition; that copy is then decided."""
        metrics.child(metrics.REROUTED, topic).inc()
        headers = [*(_headers(msg)), ("rerouted_from", f"{msg.partition}:{msg.offset}".encode())]
        await self.emitter.send(
            msg.topic,
            anchor.encode(),
            msg.value,
            headers=headers,
            partition=home,
            timestamp=msg.timestamp or None,
            source=msg.tp,
        )


def _trace(msg: Message, what: str) -> None:
    gen = getattr(msg, "generation_id", None)
    log.info("trace %s/%s@%s gen=%s %s", msg.topic, msg.partition, msg.offset, gen, what)


def _headers(msg: Message) -> list[tuple[str, bytes]]:
    h = msg.headers
    if not h:
        return []
    items = h.items() if isinstance(h, dict) else h
    return [(str(k), bytes(v)) for k, v in items if k != "rerouted_from"]
