"""The rules themselves: one pure function from (event, state, policy) to a Decision.

No I/O and no datetime objects: the shell looks up state with `needed_keys`, calls `decide`, then
stores `Decision.task` / `Decision.charge` and emits `Decision.rejection` / `Decision.fee`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from streams.policy.clock import Clock, decision_time, format_instant
from streams.policy.events import CartAdd, Event, Order, XingtuTask
from streams.policy.fees import fee_fen, reversal_fen
from streams.policy.policy_file import (
    RULE_THIRD_PARTY_CART_BANNED,
    RULE_XINGTU_MATCH_REQUIRED,
    RULE_XINGTU_SERVICE_FEE,
    Policy,
)
from streams.policy.state import ChargeState, State, TaskState, task_key

Outcome = Literal["accepted", "rejected", "applied"]

# Decisions no policy table configures still name why they went the way they did.
RULE_SHORT_VIDEO_EXEMPT = "short-video-exempt"
RULE_OWN_SHOP_UNAFFECTED = "own-shop-unaffected"
RULE_NO_RULE_IN_FORCE = "no-rule-in-force"
RULE_ALREADY_CHARGED = "already-charged"
RULE_REFUND_NO_CHARGE = "refund-no-charge"
RULE_XINGTU_TASK_APPLIED = "xingtu-task-applied"

_SHORT_VIDEO = "short_video"


@dataclass(slots=True, unsafe_hash=True)
class Decision:
    """What to do with one event, and what state to store because of it.

    `task` / `charge` are None when the stored value should stay as it is.
    """

    outcome: Outcome
    rule_id: str
    policy_version: str
    t_ms: int
    clock: Clock
    reason: str | None = None
    rejection: dict[str, Any] | None = None
    fee: dict[str, Any] | None = None
    task: TaskState | None = None
    charge: ChargeState | None = None


def needed_keys(event: Event) -> tuple[str | None, str | None]:
    """(task table key, charge table key) this event's decision reads; None = not needed.

    Short-video events never need a task (they are exempt and never charged), nor do refunds
    (they reverse at the charged rate).
    """
    if isinstance(event, XingtuTask):
        return task_key(event.task_id, event.anchor_id, event.product_id), None
    tid = event.xingtu_task_id
    if isinstance(event, Order):
        if tid and event.channel != _SHORT_VIDEO and event.status == "paid":
            return task_key(tid, event.anchor_id, event.product_id), event.order_id
        return None, event.order_id
    if tid and event.channel != _SHORT_VIDEO:
        return task_key(tid, event.anchor_id, event.product_id), None
    return None, None


def decide(
    event: Event,
    state: State,
    policy: Policy,
    *,
    record_ms: int | None,
    now_ms: int,
    at_ms: int | None = None,
) -> Decision:
    """Judge one event at its decision time (see `clock.decision_time`).

    `record_ms` is the Kafka record timestamp (None: trust occurred_at); `now_ms` only stamps
    `decided_at` on rejection records. A paid event for an order that already has a charge is
    accepted with no fee (orders are charged at most once). Raises ValueError for an order or task
    status the schemas do not allow. `at_ms`: judge at this instant instead, as if the event had
    occurred then (what an advance notice asks: would it be rejected on that date?).
    """
    if at_ms is None:
        t, clock = decision_time(event.occurred_ms, record_ms, policy.max_backdate_ms)
    else:
        t, clock = at_ms, "event"
    if isinstance(event, CartAdd):
        rule_id, reason = _gate(event, t, state.task, policy)
        if reason is None:
            return Decision("accepted", rule_id, policy.version, t, clock)
        rejection = _rejection(event, "cart_add", reason, rule_id, policy, clock, now_ms)
        return Decision("rejected", rule_id, policy.version, t, clock, reason, rejection)
    if isinstance(event, Order):
        if event.status == "paid":
            return _decide_paid(event, t, clock, state, policy, now_ms)
        if event.status == "refunded":
            return _decide_refund(event, t, clock, state, policy)
        raise ValueError(f"unknown order status: {event.status!r}")
    return _decide_task(event, t, clock, state, policy)


def _task_valid(event: CartAdd | Order, t: int, task: TaskState | None) -> bool:
    # The identity check repeats what task_key guarantees, so a wrongly looked-up state fails
    # closed instead of validating another anchor's or product's task.
    tid = event.xingtu_task_id
    return (
        bool(tid)
        and task is not None
        and task.task_id == tid
        and task.anchor_id == event.anchor_id
        and task.product_id == event.product_id
        and task.valid_at(t)
    )


def _gate(
    event: CartAdd | Order, t: int, task: TaskState | None, policy: Policy
) -> tuple[str, str | None]:
    """The cart gate shared by cart-adds and paid orders: (rule_id, rejection reason or None)."""
    # Any channel other than short video is judged as live: unknown channels fail closed.
    if event.channel == _SHORT_VIDEO:
        return RULE_SHORT_VIDEO_EXEMPT, None
    if event.product_source in policy.own_shop_sources:
        return RULE_OWN_SHOP_UNAFFECTED, None
    if t >= policy.third_party_cart_banned_from_ms:
        return RULE_THIRD_PARTY_CART_BANNED, policy.third_party_cart_banned_reason
    if t >= policy.xingtu_match_required_from_ms:
        if _task_valid(event, t, task):
            return RULE_XINGTU_MATCH_REQUIRED, None
        return RULE_XINGTU_MATCH_REQUIRED, policy.xingtu_match_required_reason
    return RULE_NO_RULE_IN_FORCE, None


def _decide_paid(
    event: Order, t: int, clock: Clock, state: State, policy: Policy, now_ms: int
) -> Decision:
    """Gate a paid order, then charge it if it carries a valid task and the fee is in force.

    A paid event for an order that already has a charge (a redelivery or a duplicate "paid") is
    accepted with no fee and no state change, so an order is charged at most once.
    """
    version = policy.version
    charge = state.charge
    if charge is not None and charge.order_id == event.order_id:
        return Decision("accepted", RULE_ALREADY_CHARGED, version, t, clock)
    rule_id, reason = _gate(event, t, state.task, policy)
    if reason is not None:
        rejection = _rejection(event, "order", reason, rule_id, policy, clock, now_ms)
        return Decision("rejected", rule_id, version, t, clock, reason, rejection)
    tid = event.xingtu_task_id
    if (
        tid is None
        or event.channel == _SHORT_VIDEO
        or t < policy.service_fee_from_ms
        or not _task_valid(event, t, state.task)
    ):
        return Decision("accepted", rule_id, version, t, clock)
    if event.product_source in policy.own_shop_sources:
        source_class: Literal["third_party", "douyin_shop"] = "douyin_shop"
        rate = policy.own_shop_rate_bps
    else:
        source_class = "third_party"
        rate = policy.third_party_rate_bps
    amount = event.amount_fen
    fen = fee_fen(amount, rate)
    fee = _fee_record(event, "charge", tid, source_class, amount, rate, fen, version)
    new_charge = ChargeState(event.order_id, event.event_id, source_class, rate, fen, 0, tid)
    return Decision(
        "accepted", RULE_XINGTU_SERVICE_FEE, version, t, clock, fee=fee, charge=new_charge
    )


def _decide_refund(event: Order, t: int, clock: Clock, state: State, policy: Policy) -> Decision:
    """Refunds are never rejected; they give back fee at the charged rate, up to the charge."""
    version = policy.version
    charge = state.charge
    if charge is None or charge.order_id != event.order_id:
        return Decision("accepted", RULE_REFUND_NO_CHARGE, version, t, clock)
    rate = charge.rate_bps
    fen = reversal_fen(event.amount_fen, rate, charge.charged_fen, charge.reversed_fen)
    if fen == 0:
        return Decision("accepted", RULE_REFUND_NO_CHARGE, version, t, clock)
    fee = _fee_record(
        event,
        "reversal",
        charge.xingtu_task_id,
        charge.source_class,
        event.amount_fen,
        rate,
        fen,
        version,
    )
    return Decision(
        "accepted",
        RULE_XINGTU_SERVICE_FEE,
        version,
        t,
        clock,
        fee=fee,
        charge=charge.with_reversal(fen),
    )


def _decide_task(event: XingtuTask, t: int, clock: Clock, state: State, policy: Policy) -> Decision:
    """Add the event's transition to the task's history.

    A match counts from the decision time `t` (its occurred_at unless backdated past the
    tolerance), so a backdated match cannot validate earlier sales; a cancel counts from its
    occurred_at, since backdating a cancel can only make rules stricter.
    """
    task = state.task
    if (
        task is None
        or task.task_id != event.task_id
        or task.anchor_id != event.anchor_id
        or task.product_id != event.product_id
    ):
        task = TaskState(event.task_id, event.anchor_id, event.product_id)
    ms = t if event.status == "matched" else event.occurred_ms
    new_task = task.with_transition(ms, event.status)
    return Decision("applied", RULE_XINGTU_TASK_APPLIED, policy.version, t, clock, task=new_task)


def _rejection(
    event: CartAdd | Order,
    subject: Literal["cart_add", "order"],
    reason: str,
    rule_id: str,
    policy: Policy,
    clock: Clock,
    now_ms: int,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "rejection_id": "rej:" + event.event_id,
        "event_id": event.event_id,
        "subject": subject,
    }
    if isinstance(event, Order):
        rec["order_id"] = event.order_id
    rec.update(
        reason=reason,
        rule_id=rule_id,
        policy_version=policy.version,
        anchor_id=event.anchor_id,
        room_id=event.room_id,
        product_id=event.product_id,
        product_source=event.product_source,
        xingtu_task_id=event.xingtu_task_id,
        occurred_at=event.occurred_at,
        decided_at=format_instant(now_ms),
        clock=clock,
    )
    return rec


def _fee_record(
    event: Order,
    kind: Literal["charge", "reversal"],
    xingtu_task_id: str,
    source_class: str,
    base_fen: int,
    rate_bps: int,
    fen: int,
    version: str,
) -> dict[str, Any]:
    return {
        "fee_id": "fee:" + event.event_id,
        "event_id": event.event_id,
        "order_id": event.order_id,
        "kind": kind,
        "xingtu_task_id": xingtu_task_id,
        "anchor_id": event.anchor_id,
        "product_source": event.product_source,
        "source_class": source_class,
        "base_fen": base_fen,
        "rate_bps": rate_bps,
        "fee_fen": fen,
        "rule_id": RULE_XINGTU_SERVICE_FEE,
        "policy_version": version,
        "occurred_at": event.occurred_at,
    }
