"""One record step: a Kafka record in, its outcome, state writes and output records out.

The glue between bytes and the pure policy core (decode, home partition, dedup, look up,
decide, build outputs), written once and used by the worker's runtime, the benchmark's raw
baseline and the unit tests. No Faust, no Kafka client, no I/O: state is read through a
`StateReader` and changes come back as writes for the caller to apply and changelog.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from aiokafka.partitioner import murmur2

from streams.codec import DecodeError, Decoder, encode
from streams.names import ADVISORIES, DEAD_LETTERS, FEES, POLICY_SHADOW, REJECTIONS
from streams.policy import ChargeState, Decision, State, TaskState, needed_keys
from streams.policy.notices import advisory_record
from streams.policy.shadow import shadow_record
from streams.policy.versioned import judge
from streams.policy.versions import PolicyBook

log = logging.getLogger(__name__)

TASKS = "tasks"
CHARGES = "charges"
SEEN = "seen"
NOTICES = "notices"
STORES = (TASKS, CHARGES, SEEN, NOTICES)
"""The state a partition keeps: Xingtu task histories, order charges, event ids decided,
advance notices sent (`Notice.dedup_key` -> the instant its rule takes effect)."""


class StateReader(Protocol):
    def get(self, store: str, key: str) -> Any: ...


@dataclass(slots=True)
class InputRecord:
    """What the step reads of a Kafka record; `topic` is the unprefixed input topic."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    """The record timestamp, ms (aiokafka's ConsumerRecord calls it so too)."""
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(slots=True, unsafe_hash=True)
class Output:
    """A record to produce; `topic` is unprefixed, `partition` None lets the key decide."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    partition: int | None = None
    timestamp_ms: int | None = None


@dataclass(slots=True)
class StepResult:
    """`outcome` is a Decision outcome, or duplicate / dead_letter / rerouted."""

    outcome: str
    outputs: list[Output] = field(default_factory=list)
    writes: list[tuple[str, str, Any]] = field(default_factory=list)
    decision: Decision | None = None
    key_mismatch: bool = False
    error: str | None = None
    shadow_rules: list[str] = field(default_factory=list)
    """The rule of each shadow disagreement emitted (for the metric)."""
    advisory_rules: list[str] = field(default_factory=list)


@lru_cache(maxsize=1 << 16)
def home_partition(anchor_id: str, partitions: int) -> int:
    """Kafka's default partitioner on the anchor_id key (what co-partitioning relies on)."""
    return (murmur2(anchor_id.encode()) & 0x7FFFFFFF) % partitions


def dead_letter_key(record: InputRecord, topic: str | None = None) -> str:
    """Dead letters have no event id; they are deduplicated by position."""
    return f"dead/{topic or record.topic}/{record.partition}/{record.offset}"


class RecordStep:
    """Decides one record against the state it reads; every record ends in exactly one outcome."""

    def __init__(
        self, book: PolicyBook, decoders: Mapping[str, Decoder], partitions: int, prefix: str = ""
    ) -> None:
        self.book = book
        """Shared with the policy reader, which adds versions between batches."""
        self.decoders = dict(decoders)
        self.partitions = partitions
        self.prefix = prefix
        """Topic prefix, for the dead letters' `source_topic` header (the topic as named)."""

    def __call__(self, record: InputRecord, state: StateReader, now_ms: int) -> StepResult:
        return self.decide(record.topic, record, state, now_ms)

    def decide(self, topic: str, record: Any, state: StateReader, now_ms: int) -> StepResult:
        """`record` is anything with InputRecord's fields (a consumer record: its `topic` is
        then the prefixed name, so the unprefixed one comes separately)."""
        try:
            event: Any = self.decoders[topic](record.value)
        except DecodeError as exc:
            return self._dead_letter(topic, record, state, str(exc), now_ms)
        except Exception as exc:  # e.g. jsonschema-rs failing on a deeply nested value
            return self._dead_letter(
                topic, record, state, f"undecodable: {type(exc).__name__}: {exc}", now_ms
            )
        anchor = event.anchor_id
        key = anchor.encode()
        mismatch = record.key is None or record.key != key
        home = home_partition(anchor, self.partitions)
        if home != record.partition:
            return StepResult(
                "rerouted", [_reroute(topic, record, anchor, home)], key_mismatch=mismatch
            )
        seen_key = f"{topic}/{event.event_id}"
        if state.get(SEEN, seen_key) is not None:
            return StepResult("duplicate", key_mismatch=mismatch)
        task_key, charge_key = needed_keys(event)
        try:
            task = state.get(TASKS, task_key) if task_key else None
            charge = state.get(CHARGES, charge_key) if charge_key else None
            current = State(
                task=TaskState.from_json(task) if task else None,
                charge=ChargeState.from_json(charge) if charge else None,
            )
            v = judge(event, current, self.book, record_ms=record.timestamp, now_ms=now_ms)
        except Exception as exc:  # a bug must not stall the partition; the record is kept
            log.exception("decision failed for %s/%s@%s", topic, record.partition, record.offset)
            return self._dead_letter(
                topic, record, state, f"internal error: {type(exc).__name__}: {exc}", now_ms
            )
        d = v.decision
        result = StepResult(d.outcome, decision=d, key_mismatch=mismatch)
        if d.task is not None and task_key:
            result.writes.append((TASKS, task_key, d.task.to_json()))
        if d.charge is not None and charge_key:
            result.writes.append((CHARGES, charge_key, d.charge.to_json()))
        # the value is when the id was first decided (wall clock): see streams.expiry
        result.writes.append((SEEN, seen_key, now_ms))
        if d.rejection is not None:
            r = d.rejection
            result.outputs.append(Output(REJECTIONS, key, encode(r)))
        if d.fee is not None:
            f = d.fee
            result.outputs.append(Output(FEES, f["order_id"].encode(), encode(f)))
        for shadow in v.shadows:
            diff = shadow_record(event, d, shadow)
            if diff is not None:
                result.outputs.append(Output(POLICY_SHADOW, key, encode(diff)))
                result.shadow_rules.append(diff["rule"])
        for notice in v.notices:
            # one advisory per anchor, product, rule and date, whichever event earned it first
            if state.get(NOTICES, notice.dedup_key) is None:
                result.writes.append((NOTICES, notice.dedup_key, notice.effective_from_ms))
                advisory = encode(advisory_record(event, notice))
                result.outputs.append(Output(ADVISORIES, key, advisory))
                result.advisory_rules.append(notice.rule_id)
        return result

    def _dead_letter(
        self, topic: str, record: Any, state: StateReader, error: str, now_ms: int
    ) -> StepResult:
        # A record read again before its offset is committed must not be dead-lettered twice.
        seen_key = dead_letter_key(record, topic)
        if state.get(SEEN, seen_key) is not None:
            return StepResult("duplicate")
        headers = (
            ("error", error.encode("utf-8", "replace")),
            ("source_topic", (self.prefix + topic).encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
        )
        return StepResult(
            "dead_letter",
            [Output(DEAD_LETTERS, record.key, record.value, headers)],
            [(SEEN, seen_key, now_ms)],
            error=error,
        )


def _reroute(topic: str, record: Any, anchor: str, home: int) -> Output:
    """The original bytes, keyed by anchor, to the anchor's partition; that copy is decided."""
    headers = [(k, v) for k, v in (record.headers or ()) if k != "rerouted_from"]
    headers.append(("rerouted_from", f"{record.partition}:{record.offset}".encode()))
    return Output(topic, anchor.encode(), record.value, tuple(headers), home, record.timestamp)

