"""Builders of input events for integration tests (each call gets a fresh event_id)."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from streams.policy import parse_instant

_seq = itertools.count()


def _id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}-{next(_seq)}"


def task(anchor: str, product: str, task_id: str, at: str, status: str = "matched") -> dict:
    return {
        "event_id": _id("xt"),
        "occurred_at": at,
        "task_id": task_id,
        "anchor_id": anchor,
        "product_id": product,
        "status": status,
    }


def cart_add(
    anchor: str,
    product: str,
    source: str,
    at: str,
    *,
    task_id: str | None = None,
    channel: str = "live",
    room: str = "room-1",
) -> dict:
    e: dict[str, Any] = {
        "event_id": _id("ca"),
        "occurred_at": at,
        "anchor_id": anchor,
        "channel": channel,
        "product_id": product,
        "product_source": source,
        "xingtu_task_id": task_id,
    }
    if channel == "live":
        e["room_id"] = room
    return e


def order(
    anchor: str,
    product: str,
    source: str,
    at: str,
    amount_fen: int,
    *,
    order_id: str | None = None,
    status: str = "paid",
    task_id: str | None = None,
    channel: str = "live",
    room: str = "room-1",
) -> dict:
    return {
        "event_id": _id("or"),
        "occurred_at": at,
        "order_id": order_id or _id("ord"),
        "status": status,
        "anchor_id": anchor,
        "room_id": room,
        "channel": channel,
        "product_id": product,
        "product_source": source,
        "amount_fen": amount_fen,
        "xingtu_task_id": task_id,
    }


def ts(event: dict) -> int:
    """The record timestamp a faithful producer uses: the event's own time."""
    return parse_instant(event["occurred_at"])
