"""Per-key state the rules need: Xingtu task histories and order charges.

States are immutable; the shell stores whatever a Decision hands back, as `to_json()` dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

MAX_TRANSITIONS = 64
"""Bound on a task's history so a noisy producer cannot grow a table value without limit."""

TASK_STATUSES = frozenset({"matched", "cancelled"})
SourceClass = Literal["third_party", "douyin_shop"]
_SOURCE_CLASSES = frozenset({"third_party", "douyin_shop"})


def _transition_order(tr: tuple[int, str]) -> tuple[int, int]:
    # Within one millisecond "cancelled" sorts last, so the last transition at or before t
    # decides validity and a cancel wins a tie.
    return tr[0], 1 if tr[1] == "cancelled" else 0


def task_key(task_id: str, anchor_id: str, product_id: str) -> str:
    """Table key for one task *as matched to one anchor and product*.

    Length prefixes make the key unambiguous whatever characters the ids hold, and because anchor
    and product are part of it, a task event naming another anchor or product writes elsewhere
    and can never validate this pairing.
    """
    return f"{len(task_id)}:{task_id}|{len(anchor_id)}:{anchor_id}|{product_id}"


@dataclass(frozen=True, slots=True)
class TaskState:
    """A task's match/cancel history, kept as transitions because events arrive out of order.

    `transitions` is sorted by (ms, cancelled-after-matched), holds no duplicates, and is capped
    at MAX_TRANSITIONS (the oldest are dropped, which can only make earlier instants invalid).
    """

    task_id: str
    anchor_id: str
    product_id: str
    transitions: tuple[tuple[int, str], ...] = ()

    def valid_at(self, t_ms: int) -> bool:
        """True iff the latest transition at or before t is a match (a same-ms cancel wins)."""
        for ms, status in reversed(self.transitions):
            if ms <= t_ms:
                return status == "matched"
        return False

    def with_transition(self, ms: int, status: str) -> TaskState:
        """Return the state with one more transition; identical repeats return self."""
        if status not in TASK_STATUSES:
            raise ValueError(f"unknown task status: {status!r}")
        if type(ms) is not int:
            raise TypeError(f"transition ms must be an int, got {type(ms).__name__}")
        tr = (ms, status)
        if tr in self.transitions:
            return self
        merged = sorted((*self.transitions, tr), key=_transition_order)
        if len(merged) > MAX_TRANSITIONS:
            merged = merged[-MAX_TRANSITIONS:]
        return TaskState(self.task_id, self.anchor_id, self.product_id, tuple(merged))

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "anchor_id": self.anchor_id,
            "product_id": self.product_id,
            "transitions": [[ms, status] for ms, status in self.transitions],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TaskState:
        """Rebuild from `to_json()` output; normalises order and bounds, rejects corrupt data."""
        if not isinstance(d, dict):
            raise ValueError("task state must be an object")
        ids = _str_field(d, "task_id"), _str_field(d, "anchor_id"), _str_field(d, "product_id")
        raw = d.get("transitions")
        if not isinstance(raw, list):
            raise ValueError("task state: transitions must be a list")
        transitions: set[tuple[int, str]] = set()
        for item in raw:
            if (
                not isinstance(item, list | tuple)
                or len(item) != 2
                or type(item[0]) is not int
                or item[1] not in TASK_STATUSES
            ):
                raise ValueError(f"task state: bad transition {item!r}")
            transitions.add((item[0], item[1]))
        ordered = sorted(transitions, key=_transition_order)[-MAX_TRANSITIONS:]
        return cls(*ids, tuple(ordered))


@dataclass(frozen=True, slots=True)
class ChargeState:
    """What an order was charged, so refunds reverse at the charged rate and never exceed it."""

    order_id: str
    charge_event_id: str
    source_class: SourceClass
    rate_bps: int
    charged_fen: int
    reversed_fen: int
    xingtu_task_id: str

    @property
    def remaining_fen(self) -> int:
        return self.charged_fen - self.reversed_fen

    def with_reversal(self, fen: int) -> ChargeState:
        """Record a reversal; refuses to go past the charge."""
        if type(fen) is not int or fen < 0 or fen > self.remaining_fen:
            raise ValueError(f"reversal {fen!r} outside 0..{self.remaining_fen}")
        return replace(self, reversed_fen=self.reversed_fen + fen)

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "charge_event_id": self.charge_event_id,
            "source_class": self.source_class,
            "rate_bps": self.rate_bps,
            "charged_fen": self.charged_fen,
            "reversed_fen": self.reversed_fen,
            "xingtu_task_id": self.xingtu_task_id,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ChargeState:
        """Rebuild from `to_json()` output; rejects corrupt data rather than mis-reversing."""
        if not isinstance(d, dict):
            raise ValueError("charge state must be an object")
        source_class = d.get("source_class")
        if source_class not in _SOURCE_CLASSES:
            raise ValueError(f"charge state: bad source_class {source_class!r}")
        rate_bps = _int_field(d, "rate_bps")
        charged_fen = _int_field(d, "charged_fen")
        reversed_fen = _int_field(d, "reversed_fen")
        if rate_bps > 10_000 or reversed_fen > charged_fen:
            raise ValueError("charge state: rate_bps > 10000 or reversed_fen > charged_fen")
        return cls(
            order_id=_str_field(d, "order_id"),
            charge_event_id=_str_field(d, "charge_event_id"),
            source_class=source_class,
            rate_bps=rate_bps,
            charged_fen=charged_fen,
            reversed_fen=reversed_fen,
            xingtu_task_id=_str_field(d, "xingtu_task_id"),
        )


@dataclass(frozen=True, slots=True)
class State:
    """The state looked up for one event (see `decide.needed_keys`)."""

    task: TaskState | None = None
    charge: ChargeState | None = None


def _str_field(d: dict[str, Any], name: str) -> str:
    value = d.get(name)
    if not isinstance(value, str):
        raise ValueError(f"state field {name!r} must be a string, got {value!r}")
    return value


def _int_field(d: dict[str, Any], name: str) -> int:
    value = d.get(name)
    if type(value) is not int or value < 0:
        raise ValueError(f"state field {name!r} must be a non-negative int, got {value!r}")
    return value
