"""Typed input events, built from schema-valid dicts.

The constructors trust the topic schemas (validated by the shell) and only parse what the
schemas cannot: `occurred_at` becomes epoch ms once, so the rules compare plain ints.

Values, never changed after they are built, but not `frozen`: a frozen dataclass sets each
field through `object.__setattr__`, which made building the event, its Decision and the step's
outputs (several per record) about a tenth of the record step's time (`unsafe_hash` keeps them
hashable as before). The same holds for `Decision`, `Verdict` and `step.Output`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.policy.clock import parse_instant


@dataclass(slots=True, unsafe_hash=True)
class CartAdd:
    """A streamer adding a product to a live room's or a short video's cart."""

    event_id: str
    occurred_at: str
    occurred_ms: int
    anchor_id: str
    room_id: str | None
    channel: str
    product_id: str
    product_source: str
    xingtu_task_id: str | None


@dataclass(slots=True, unsafe_hash=True)
class Order:
    """A paid or refunded order; for refunds `amount_fen` is the amount refunded."""

    event_id: str
    occurred_at: str
    occurred_ms: int
    order_id: str
    status: str
    anchor_id: str
    room_id: str | None
    channel: str
    product_id: str
    product_source: str
    amount_fen: int
    xingtu_task_id: str | None


@dataclass(slots=True, unsafe_hash=True)
class XingtuTask:
    """A Xingtu (星图) task being matched to, or cancelled for, an anchor and a product."""

    event_id: str
    occurred_at: str
    occurred_ms: int
    task_id: str
    anchor_id: str
    product_id: str
    status: str


Event = CartAdd | Order | XingtuTask


def _amount(value: Any) -> int:
    """JSON Schema counts 1.0 as an integer, so a schema-valid amount may arrive as a float."""
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"amount_fen is not an integer: {value!r}")


def cart_add_from_dict(d: dict[str, Any]) -> CartAdd:
    """Build a CartAdd from a schema-valid dict; extra keys are ignored."""
    occurred_at = d["occurred_at"]
    return CartAdd(
        event_id=d["event_id"],
        occurred_at=occurred_at,
        occurred_ms=parse_instant(occurred_at),
        anchor_id=d["anchor_id"],
        room_id=d.get("room_id"),
        channel=d["channel"],
        product_id=d["product_id"],
        product_source=d["product_source"],
        xingtu_task_id=d.get("xingtu_task_id"),
    )


def order_from_dict(d: dict[str, Any]) -> Order:
    """Build an Order from a schema-valid dict; extra keys are ignored."""
    occurred_at = d["occurred_at"]
    return Order(
        event_id=d["event_id"],
        occurred_at=occurred_at,
        occurred_ms=parse_instant(occurred_at),
        order_id=d["order_id"],
        status=d["status"],
        anchor_id=d["anchor_id"],
        room_id=d.get("room_id"),
        channel=d["channel"],
        product_id=d["product_id"],
        product_source=d["product_source"],
        amount_fen=_amount(d["amount_fen"]),
        xingtu_task_id=d.get("xingtu_task_id"),
    )


def xingtu_task_from_dict(d: dict[str, Any]) -> XingtuTask:
    """Build a XingtuTask from a schema-valid dict; extra keys are ignored."""
    occurred_at = d["occurred_at"]
    return XingtuTask(
        event_id=d["event_id"],
        occurred_at=occurred_at,
        occurred_ms=parse_instant(occurred_at),
        task_id=d["task_id"],
        anchor_id=d["anchor_id"],
        product_id=d["product_id"],
        status=d["status"],
    )
