"""The reference model: what the worker must emit for a planned list of records.

It replays the records in list order through the worker's own decoder and the pure policy core,
with dicts as tables. That equals the worker's result because the worker keeps each partition in
order, an anchor's orders share one partition, cart-adds read only task state, and the tests let
phase 1 (all tasks) settle before phase 2 is produced.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from streams.codec import DecodeError, Decoder, load_validators
from streams.config import REPO_ROOT
from streams.loadgen.generate import Planned
from streams.policy import ChargeState, Policy, State, TaskState, decide, load_policy, needed_keys

NOW_MS = 1_606_665_600_000
"""`decided_at` is not compared, so any fixed instant keeps the model pure (2020-11-30Z)."""


@dataclass
class Expected:
    """Outputs and counters the worker should end with; topics are unprefixed."""

    rejection_ids: set[str] = field(default_factory=set)
    fee_ids: set[str] = field(default_factory=set)
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
    validators = load_validators(REPO_ROOT / "schemas")
    return {t: Decoder(t, validators) for t in ("cart-adds", "orders", "xingtu-tasks")}


def expected_outputs(planned: list[Planned], policy: Policy | None = None) -> Expected:
    """Replay `planned` in order through the worker's decoding and `decide` (see module doc)."""
    policy = policy if policy is not None else load_policy()
    decoders = _decoders()
    tasks: dict[str, TaskState] = {}
    charges: dict[str, ChargeState] = {}
    seen: set[str] = set()
    outcomes: Counter[tuple[str, str]] = Counter()
    fees: Counter[tuple[str, str]] = Counter()
    rejections: Counter[tuple[str, str]] = Counter()
    out = Expected()
    for p in planned:
        try:
            event: Any = decoders[p.topic](p.value)
        except DecodeError:
            outcomes[(p.topic, "dead_letter")] += 1
            out.dead_letters += 1
            continue
        seen_key = f"{p.topic}/{event.event_id}"
        if seen_key in seen:
            outcomes[(p.topic, "duplicate")] += 1
            continue
        task_key, charge_key = needed_keys(event)
        state = State(
            task=tasks.get(task_key) if task_key else None,
            charge=charges.get(charge_key) if charge_key else None,
        )
        try:
            d = decide(event, state, policy, record_ms=p.timestamp_ms, now_ms=NOW_MS)
        except Exception:  # the worker dead-letters a record the core cannot decide
            outcomes[(p.topic, "dead_letter")] += 1
            out.dead_letters += 1
            continue
        if d.task is not None and task_key:
            tasks[task_key] = d.task
        if d.charge is not None and charge_key:
            charges[charge_key] = d.charge
        seen.add(seen_key)
        outcomes[(p.topic, d.outcome)] += 1
        if d.rejection is not None:
            out.rejection_ids.add(d.rejection["rejection_id"])
            rejections[(d.rejection["subject"], d.rejection["reason"])] += 1
        if d.fee is not None:
            out.fee_ids.add(d.fee["fee_id"])
            fees[(d.fee["source_class"], d.fee["kind"])] += d.fee["fee_fen"]
    out.events_by_topic_outcome = dict(outcomes)
    out.fee_fen_by_class_kind = dict(fees)
    out.rejections_by_subject_reason = dict(rejections)
    return out
