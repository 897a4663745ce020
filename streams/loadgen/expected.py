"""The reference model: what the worker must emit for a planned list of records.

The contract it encodes (issue 12, part 1): for each partition number p, the worker decides the
records of `xingtu-tasks`, `cart-adds` and `orders` whose partition is p in record-timestamp
order, ties broken by topic (tasks, cart-adds, orders) and then offset, while keeping each input
partition's log order: it merges the three partition logs by always taking, of the three heads,
the one with the smallest (timestamp, topic rank, offset), as Kafka Streams' PartitionGroup does.
A record stamped earlier than one before it in the same log is therefore still taken after it.

The model replays exactly that, over the whole logs at once (a backlog: every record is in the
log before the worker reads):

1. Every planned record goes to partition `murmur2(key) & 0x7fffffff % partitions` of its topic
   (Kafka's default partitioner; `home_partition`); the planned list is the produce order, one
   producer per topic-partition, so each topic-partition's log is the planned list's
   sub-sequence for it (what `send_planned` and the bench's loader do).
2. Per partition number, the three logs are merged with `heapq.merge` on
   (timestamp, topic rank, offset) and decided in that order, with the worker's decoder and the
   pure policy core over dicts (one set of state per partition number, as the worker's tables
   are partitioned).
3. A decodable record whose `anchor_id` belongs to another partition than its key's is not
   decided where it is: the worker re-appends it, unchanged, at the end of the same topic's log
   in the anchor's partition. The model does the same: it appends such records to the end of the
   home topic-partition's log (in the order the source partitions' merges reach them, source
   partitions in ascending order) before that partition number is merged (the merge order
   depends on the logs only, not on decisions, so a first pass finds them). The generator
   never produces such records (key and `anchor_id` always agree; a record whose value is
   broken is dead-lettered where it is), so this path only matters to hand-made plans.

Why the model is independent of the worker: it imports the decoder and `streams.policy` (the
rules themselves, tested on their own), but neither the worker's processor nor its merge. A model
that called the code under test would agree with it by construction, bugs included; the point of
this one is to be a second, simple implementation (whole logs in memory, `heapq.merge`, dicts)
that the worker's batching, buffering and idle rules must agree with, id by id.

What it does not model: live traffic. With records still arriving, a worker that finds an input
partition caught up waits at most its idle time and then goes on; a record produced after that
(e.g. a task produced after the sales that use it: `arrival="tasks-last"` sent live) is decided
late, and the outputs can then legitimately differ. With `arrival="interleaved"` (produce order
= timestamp order) nothing produced later is older than what came before, so a correct worker
gives the model's outputs live too. For a backlog the three arrival orders give identical logs
per topic-partition, hence identical expected outputs.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from aiokafka.partitioner import murmur2

from streams.codec import Decoder, load_validators
from streams.loadgen.generate import TOPIC_RANK, TOPICS, Planned
from streams.policy import ChargeState, Policy, State, TaskState, load_policy, needed_keys
from streams.policy.notices import advisory_id
from streams.policy.shadow import shadow_record
from streams.policy.versioned import judge
from streams.policy.versions import PolicyBook, book_of

NOW_MS = 1_606_665_600_000
"""`decided_at` is not compared, so any fixed instant keeps the model pure (2020-11-30Z)."""

DEFAULT_PARTITIONS = 4
"""The worker's default `STREAMS_TOPIC_PARTITIONS`."""


@dataclass
class Expected:
    """Outputs and counters the worker should end with; topics are unprefixed."""

    rejection_ids: set[str] = field(default_factory=set)
    fee_ids: set[str] = field(default_factory=set)
    advisory_ids: set[str] = field(default_factory=set)
    shadow_ids: set[str] = field(default_factory=set)
    fee_fen_by_class_kind: dict[tuple[str, str], int] = field(default_factory=dict)
    events_by_topic_outcome: dict[tuple[str, str], int] = field(default_factory=dict)
    rejections_by_subject_reason: dict[tuple[str, str], int] = field(default_factory=dict)
    dead_letters: int = 0

    @property
    def fee_fen_net(self) -> int:
        """Charges minus reversals, over both source classes."""
        return sum(
            fen if kind == "charge" else -fen
            for (_, kind), fen in self.fee_fen_by_class_kind.items()
        )


@lru_cache(maxsize=1)
def _decoders() -> dict[str, Decoder]:
    validators = load_validators()
    return {t: Decoder(t, validators) for t in TOPICS}


def home_partition(key: bytes | None, partitions: int, index: int = 0) -> int:
    """Kafka's default partitioner for a keyed record (murmur2, positive); a record without a
    key goes round robin by its index in the plan (as bench/kafka.py's loader sends it)."""
    if key is None:
        return index % partitions
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# A log entry: (timestamp, topic rank, offset, record, decoded event or None if unreadable).
_Entry = tuple[int, int, int, Planned, Any]


def merged_order(
    planned: list[Planned], partitions: int = DEFAULT_PARTITIONS
) -> Iterator[tuple[int, Planned, Any]]:
    """(partition number, record, decoded event or None if unreadable) in the order the contract
    says the worker decides them: partition numbers one after another (they are independent),
    each one's three logs merged by (timestamp, topic rank, offset). A rerouted record appears
    once, at the end of its home topic-partition's log."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    decoders = _decoders()
    # logs[p][rank]: the topic-partition's log in produce order, with decoded values.
    logs: list[list[list[_Entry]]] = [[[], [], []] for _ in range(partitions)]
    misplaced = False
    for i, p in enumerate(planned):
        rank = TOPIC_RANK[p.topic]
        part = home_partition(p.key, partitions, i)
        log = logs[part][rank]
        event = _decode(decoders[p.topic], p.value)
        log.append((p.timestamp_ms, rank, len(log), p, event))
        if event is not None and home_partition(event.anchor_id.encode(), partitions) != part:
            misplaced = True
    if not misplaced:  # the generator's plans: no record is rerouted
        for part in range(partitions):
            for _, _, _, p, event in heapq.merge(*logs[part]):
                yield part, p, event
        return
    # The merge order does not depend on decisions, only on the logs: find the rerouted records
    # in the order each source partition's merge reaches them, then re-append them at home.
    away: list[set[int]] = [set() for _ in range(partitions)]  # (rank, offset) keys, packed
    rerouted: list[tuple[int, int, Planned, Any]] = []
    for part in range(partitions):
        for _, rank, offset, p, event in heapq.merge(*logs[part]):
            if event is None:
                continue
            home = home_partition(event.anchor_id.encode(), partitions)
            if home != part:
                away[part].add(offset * 3 + rank)
                rerouted.append((home, rank, p, event))
    for home, rank, p, event in rerouted:
        log = logs[home][rank]
        log.append((p.timestamp_ms, rank, len(log), p, event))
    for part in range(partitions):
        gone = away[part]
        for _, rank, offset, p, event in heapq.merge(*logs[part]):
            if offset * 3 + rank not in gone:
                yield part, p, event


def _decode(decoder: Decoder, value: bytes) -> Any:
    """The event, or None where the worker dead-letters the record (DecodeError, or anything
    else the decoder raises: the worker catches both)."""
    try:
        return decoder(value)
    except Exception:
        return None


def expected_outputs(
    planned: list[Planned],
    policy: Policy | None = None,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    book: PolicyBook | None = None,
) -> Expected:
    """Replay `planned` (produce order) partition by partition in the merged order (module doc)
    through the worker's decoding and the pure core's `judge`, with the worker's topics at
    `partitions`. `book`: the policy versions (default: `policy` alone, as a fresh worker's
    topic is seeded). Advance notices are sent once per `Notice.dedup_key` and partition."""
    if book is None:
        book = book_of(policy if policy is not None else load_policy())
    outcomes: Counter[tuple[str, str]] = Counter()
    fees: Counter[tuple[str, str]] = Counter()
    rejections: Counter[tuple[str, str]] = Counter()
    out = Expected()
    # Per partition number, as the worker's tables are partitioned.
    tasks: dict[int, dict[str, TaskState]] = {}
    charges: dict[int, dict[str, ChargeState]] = {}
    seen: dict[int, set[str]] = {}
    noticed: dict[int, set[str]] = {}
    for part, p, event in merged_order(planned, partitions):
        if event is None:
            outcomes[(p.topic, "dead_letter")] += 1
            out.dead_letters += 1
            continue
        p_tasks = tasks.setdefault(part, {})
        p_charges = charges.setdefault(part, {})
        p_seen = seen.setdefault(part, set())
        seen_key = f"{p.topic}/{event.event_id}"
        if seen_key in p_seen:
            outcomes[(p.topic, "duplicate")] += 1
            continue
        task_key, charge_key = needed_keys(event)
        state = State(
            task=p_tasks.get(task_key) if task_key else None,
            charge=p_charges.get(charge_key) if charge_key else None,
        )
        try:
            v = judge(event, state, book, record_ms=p.timestamp_ms, now_ms=NOW_MS)
            d = v.decision
        except Exception:  # the worker dead-letters a record the core cannot decide
            outcomes[(p.topic, "dead_letter")] += 1
            out.dead_letters += 1
            continue
        if d.task is not None and task_key:
            p_tasks[task_key] = d.task
        if d.charge is not None and charge_key:
            p_charges[charge_key] = d.charge
        p_seen.add(seen_key)
        outcomes[(p.topic, d.outcome)] += 1
        if d.rejection is not None:
            out.rejection_ids.add(d.rejection["rejection_id"])
            rejections[(d.rejection["subject"], d.rejection["reason"])] += 1
        if d.fee is not None:
            out.fee_ids.add(d.fee["fee_id"])
            fees[(d.fee["source_class"], d.fee["kind"])] += d.fee["fee_fen"]
        for shadow in v.shadows:
            diff = shadow_record(event, d, shadow)
            if diff is not None:
                out.shadow_ids.add(diff["shadow_id"])
        p_noticed = noticed.setdefault(part, set())
        for notice in v.notices:
            if notice.dedup_key not in p_noticed:
                p_noticed.add(notice.dedup_key)
                out.advisory_ids.add(advisory_id(notice))
    out.events_by_topic_outcome = dict(outcomes)
    out.fee_fen_by_class_kind = dict(fees)
    out.rejections_by_subject_reason = dict(rejections)
    return out
