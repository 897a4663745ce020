"""Every rule on both sides of every boundary, for every source class and channel."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import orjson
import pytest

from streams.policy import (
    CartAdd,
    ChargeState,
    Decision,
    Order,
    State,
    TaskState,
    XingtuTask,
    cart_add_from_dict,
    decide,
    load_policy,
    needed_keys,
    order_from_dict,
    parse_instant,
    task_key,
    xingtu_task_from_dict,
)
from streams.step import CHARGES, TASKS
from tests.unit.shell_fakes import DictState, input_record, make_step

POLICY = load_policy()
NOW = parse_instant("2020-11-11T00:00:00Z")
ANCHOR, PRODUCT, TASK = "anchor-1", "sku-1", "xt-1"

# A task matched well before every boundary, and never cancelled.
MATCHED = (("2020-08-01T00:00:00+08:00", "matched"),)


def ms(s: str) -> int:
    return parse_instant(s)


def task_state(
    *transitions: tuple[str, str], task: str = TASK, anchor: str = ANCHOR, product: str = PRODUCT
) -> TaskState:
    st = TaskState(task, anchor, product)
    for at, status in transitions:
        st = st.with_transition(ms(at), status)
    return st


def cart(
    at: str,
    *,
    channel: str = "live",
    source: str = "taobao",
    task: str | None = TASK,
    anchor: str = ANCHOR,
    product: str = PRODUCT,
) -> CartAdd:
    d: dict[str, Any] = {
        "event_id": "ca-1",
        "occurred_at": at,
        "anchor_id": anchor,
        "channel": channel,
        "product_id": product,
        "product_source": source,
        "xingtu_task_id": task,
    }
    if channel == "live":
        d["room_id"] = "room-1"
    return cart_add_from_dict(d)


def order(
    at: str,
    *,
    status: str = "paid",
    amount: int = 19_900,
    channel: str = "live",
    source: str = "taobao",
    task: str | None = TASK,
    anchor: str = ANCHOR,
    product: str = PRODUCT,
    event_id: str = "or-1",
) -> Order:
    d: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": at,
        "order_id": "ord-1",
        "status": status,
        "anchor_id": anchor,
        "room_id": "room-1" if channel == "live" else None,
        "channel": channel,
        "product_id": product,
        "product_source": source,
        "amount_fen": amount,
        "xingtu_task_id": task,
    }
    return order_from_dict(d)


def run(event: CartAdd | Order, task: TaskState | None = None, **kw: Any) -> Decision:
    return decide(
        event,
        State(task=task, charge=kw.pop("charge", None)),
        POLICY,
        now_ms=NOW,
        **{
            "record_ms": None,
            **kw,
        },
    )


# --------------------------------------------------------------------------- cart-add gate


@dataclass(frozen=True)
class GateCase:
    name: str
    at: str
    outcome: str
    rule_id: str
    reason: str | None = None
    channel: str = "live"
    source: str = "taobao"
    transitions: tuple[tuple[str, str], ...] | None = MATCHED
    task_anchor: str = ANCHOR
    task_product: str = PRODUCT
    task_id_in_state: str = TASK
    event_task: str | None = TASK
    record_at: str | None = None
    clock: str = "event"


MR, BAN = "XINGTU_MATCH_REQUIRED", "THIRD_PARTY_CART_BANNED"
THIRD_PARTY = ("taobao", "jd", "zzz_new")

GATE_CASES: list[GateCase] = []
for src in THIRD_PARTY:
    GATE_CASES += [
        # 09-06 boundary, Beijing and UTC spellings of the same instants.
        GateCase(
            f"{src}-0905-235959-no-task",
            "2020-09-05T23:59:59+08:00",
            "accepted",
            "no-rule-in-force",
            source=src,
            transitions=None,
            event_task=None,
        ),
        GateCase(
            f"{src}-0905-155959Z-no-task",
            "2020-09-05T15:59:59Z",
            "accepted",
            "no-rule-in-force",
            source=src,
            transitions=None,
            event_task=None,
        ),
        GateCase(
            f"{src}-0906-000000-no-task",
            "2020-09-06T00:00:00+08:00",
            "rejected",
            "xingtu-match-required",
            MR,
            source=src,
            transitions=None,
            event_task=None,
        ),
        GateCase(
            f"{src}-0905-160000Z-no-task",
            "2020-09-05T16:00:00Z",
            "rejected",
            "xingtu-match-required",
            MR,
            source=src,
            transitions=None,
            event_task=None,
        ),
        GateCase(
            f"{src}-0906-000000-task",
            "2020-09-06T00:00:00+08:00",
            "accepted",
            "xingtu-match-required",
            source=src,
        ),
        GateCase(
            f"{src}-0905-160000Z-task",
            "2020-09-05T16:00:00Z",
            "accepted",
            "xingtu-match-required",
            source=src,
        ),
        # Task id given but no task state known: not matched.
        GateCase(
            f"{src}-0910-unknown-task",
            "2020-09-10T12:00:00+08:00",
            "rejected",
            "xingtu-match-required",
            MR,
            source=src,
            transitions=None,
        ),
        # 10-09 boundary.
        GateCase(
            f"{src}-1008-235959-task",
            "2020-10-08T23:59:59+08:00",
            "accepted",
            "xingtu-match-required",
            source=src,
        ),
        GateCase(
            f"{src}-1008-155959Z-task",
            "2020-10-08T15:59:59Z",
            "accepted",
            "xingtu-match-required",
            source=src,
        ),
        GateCase(
            f"{src}-1008-235959-no-task",
            "2020-10-08T23:59:59+08:00",
            "rejected",
            "xingtu-match-required",
            MR,
            source=src,
            transitions=None,
            event_task=None,
        ),
        GateCase(
            f"{src}-1009-000000-task",
            "2020-10-09T00:00:00+08:00",
            "rejected",
            "third-party-cart-banned",
            BAN,
            source=src,
        ),
        GateCase(
            f"{src}-1008-160000Z-task",
            "2020-10-08T16:00:00Z",
            "rejected",
            "third-party-cart-banned",
            BAN,
            source=src,
        ),
        GateCase(
            f"{src}-1009-000000-no-task",
            "2020-10-09T00:00:00+08:00",
            "rejected",
            "third-party-cart-banned",
            BAN,
            source=src,
            transitions=None,
            event_task=None,
        ),
        GateCase(
            f"{src}-2021-task",
            "2021-01-01T00:00:00+08:00",
            "rejected",
            "third-party-cart-banned",
            BAN,
            source=src,
        ),
        # Short video is exempt on every date, with or without a task.
        GateCase(
            f"{src}-short-video-1009",
            "2020-10-09T00:00:00+08:00",
            "accepted",
            "short-video-exempt",
            channel="short_video",
            source=src,
        ),
        GateCase(
            f"{src}-short-video-0910-no-task",
            "2020-09-10T00:00:00+08:00",
            "accepted",
            "short-video-exempt",
            channel="short_video",
            source=src,
            transitions=None,
            event_task=None,
        ),
        GateCase(
            f"{src}-short-video-0905",
            "2020-09-05T23:59:59+08:00",
            "accepted",
            "short-video-exempt",
            channel="short_video",
            source=src,
            event_task=None,
        ),
    ]
for at in (
    "2020-09-05T23:59:59+08:00",
    "2020-09-06T00:00:00+08:00",
    "2020-10-08T23:59:59+08:00",
    "2020-10-09T00:00:00+08:00",
    "2020-10-08T16:00:00Z",
):
    GATE_CASES += [
        GateCase(
            f"douyin-shop-live-no-task-{at}",
            at,
            "accepted",
            "own-shop-unaffected",
            source="douyin_shop",
            transitions=None,
            event_task=None,
        ),
        GateCase(
            f"douyin-shop-live-task-{at}",
            at,
            "accepted",
            "own-shop-unaffected",
            source="douyin_shop",
        ),
        GateCase(
            f"douyin-shop-short-video-{at}",
            at,
            "accepted",
            "short-video-exempt",
            channel="short_video",
            source="douyin_shop",
        ),
    ]
AT = "2020-09-10T12:00:00+08:00"  # inside the match-required window
GATE_CASES += [
    GateCase(
        "task-for-other-anchor", AT, "rejected", "xingtu-match-required", MR, task_anchor="anchor-2"
    ),
    GateCase(
        "task-for-other-product", AT, "rejected", "xingtu-match-required", MR, task_product="sku-2"
    ),
    GateCase(
        "state-of-other-task-id",
        AT,
        "rejected",
        "xingtu-match-required",
        MR,
        task_id_in_state="xt-2",
    ),
    GateCase(
        "event-without-task-id-but-state",
        AT,
        "rejected",
        "xingtu-match-required",
        MR,
        event_task=None,
    ),
    GateCase(
        "cancelled-before-t",
        AT,
        "rejected",
        "xingtu-match-required",
        MR,
        transitions=(
            ("2020-09-01T00:00:00+08:00", "matched"),
            ("2020-09-10T11:59:59+08:00", "cancelled"),
        ),
    ),
    GateCase(
        "cancelled-at-t",
        AT,
        "rejected",
        "xingtu-match-required",
        MR,
        transitions=(("2020-09-01T00:00:00+08:00", "matched"), (AT, "cancelled")),
    ),
    GateCase(
        "cancelled-after-t",
        AT,
        "accepted",
        "xingtu-match-required",
        transitions=(
            ("2020-09-01T00:00:00+08:00", "matched"),
            ("2020-09-10T12:00:01+08:00", "cancelled"),
        ),
    ),
    GateCase(
        "matched-after-t",
        AT,
        "rejected",
        "xingtu-match-required",
        MR,
        transitions=(("2020-09-10T12:00:01+08:00", "matched"),),
    ),
    GateCase(
        "matched-at-t", AT, "accepted", "xingtu-match-required", transitions=((AT, "matched"),)
    ),
    GateCase(
        "matched-and-cancelled-same-ms",
        AT,
        "rejected",
        "xingtu-match-required",
        MR,
        transitions=(
            ("2020-09-08T00:00:00+08:00", "matched"),
            ("2020-09-08T00:00:00+08:00", "cancelled"),
        ),
    ),
    GateCase(
        "cancelled-then-rematched-before-t",
        AT,
        "accepted",
        "xingtu-match-required",
        transitions=(
            ("2020-09-01T00:00:00+08:00", "matched"),
            ("2020-09-05T00:00:00+08:00", "cancelled"),
            ("2020-09-09T00:00:00+08:00", "matched"),
        ),
    ),
    # Transitions delivered out of order give the same answer as in order.
    GateCase(
        "out-of-order-cancel-first-then-earlier-match",
        AT,
        "accepted",
        "xingtu-match-required",
        transitions=(
            ("2020-09-11T00:00:00+08:00", "cancelled"),
            ("2020-09-01T00:00:00+08:00", "matched"),
        ),
    ),
    GateCase(
        "out-of-order-match-arrives-after-later-cancel",
        "2020-09-12T00:00:00+08:00",
        "rejected",
        "xingtu-match-required",
        MR,
        transitions=(
            ("2020-09-11T00:00:00+08:00", "cancelled"),
            ("2020-09-01T00:00:00+08:00", "matched"),
        ),
    ),
    # Backdating: 301 s before the record timestamp switches to the record clock...
    GateCase(
        "backdated-301s-into-match-window",
        "2020-09-05T23:59:59+08:00",
        "rejected",
        "xingtu-match-required",
        MR,
        transitions=None,
        event_task=None,
        record_at="2020-09-06T00:05:00+08:00",
        clock="record",
    ),
    # ...300 s is tolerated.
    GateCase(
        "backdated-300s-tolerated",
        "2020-09-05T23:59:59+08:00",
        "accepted",
        "no-rule-in-force",
        transitions=None,
        event_task=None,
        record_at="2020-09-06T00:04:59+08:00",
    ),
    GateCase(
        "backdated-301s-into-ban",
        "2020-10-08T23:59:59+08:00",
        "rejected",
        "third-party-cart-banned",
        BAN,
        record_at="2020-10-09T00:05:00+08:00",
        clock="record",
    ),
    GateCase(
        "backdated-300s-before-ban",
        "2020-10-08T23:59:59+08:00",
        "accepted",
        "xingtu-match-required",
        record_at="2020-10-09T00:04:59+08:00",
    ),
    GateCase(
        "backdated-utc-record",
        "2020-09-05T15:00:00Z",
        "rejected",
        "xingtu-match-required",
        MR,
        transitions=None,
        event_task=None,
        record_at="2020-09-05T16:05:00Z",
        clock="record",
    ),
    GateCase(
        "future-occurred-at-kept",
        "2020-10-09T00:00:00+08:00",
        "rejected",
        "third-party-cart-banned",
        BAN,
        record_at="2020-10-01T00:00:00+08:00",
    ),
    GateCase(
        "unknown-channel-judged-as-live",
        AT,
        "rejected",
        "xingtu-match-required",
        MR,
        channel="livestream",
        transitions=None,
        event_task=None,
    ),
]


@pytest.mark.parametrize("case", GATE_CASES, ids=lambda c: c.name)
def test_cart_add_gate(case: GateCase) -> None:
    ev = cart(case.at, channel=case.channel, source=case.source, task=case.event_task)
    st = None
    if case.transitions is not None:
        st = task_state(
            *case.transitions,
            task=case.task_id_in_state,
            anchor=case.task_anchor,
            product=case.task_product,
        )
    record_ms = ms(case.record_at) if case.record_at else None
    d = run(ev, st, record_ms=record_ms)
    assert (d.outcome, d.rule_id, d.reason, d.clock) == (
        case.outcome,
        case.rule_id,
        case.reason,
        case.clock,
    )
    assert d.policy_version == POLICY.version
    assert d.fee is None and d.charge is None and d.task is None
    if case.clock == "record":
        assert record_ms is not None
        assert d.t_ms == record_ms - 300_000
    else:
        assert d.t_ms == ev.occurred_ms
    if case.outcome == "rejected":
        assert d.rejection is not None
        assert d.rejection["reason"] == case.reason
        assert d.rejection["rule_id"] == case.rule_id
        assert d.rejection["clock"] == case.clock
    else:
        assert d.rejection is None


def test_rejection_record_for_cart_add() -> None:
    ev = cart("2020-10-09T00:00:00+08:00", source="jd")
    d = run(ev, task_state(*MATCHED))
    assert d.rejection == {
        "rejection_id": "rej:ca-1",
        "event_id": "ca-1",
        "subject": "cart_add",
        "reason": "THIRD_PARTY_CART_BANNED",
        "rule_id": "third-party-cart-banned",
        "policy_version": POLICY.version,
        "anchor_id": ANCHOR,
        "room_id": "room-1",
        "product_id": PRODUCT,
        "product_source": "jd",
        "xingtu_task_id": TASK,
        "occurred_at": "2020-10-09T00:00:00+08:00",
        "decided_at": "2020-11-11T00:00:00.000Z",
        "clock": "event",
    }


# --------------------------------------------------------------------------- paid orders


@dataclass(frozen=True)
class PaidCase:
    name: str
    at: str
    outcome: str
    rule_id: str
    rate_bps: int | None = None  # None: no fee
    fee: int | None = None
    reason: str | None = None
    amount: int = 19_900
    channel: str = "live"
    source: str = "taobao"
    transitions: tuple[tuple[str, str], ...] | None = MATCHED
    task_anchor: str = ANCHOR
    record_at: str | None = None


PAID_CASES = [
    # Fee start, both sides, Beijing and UTC.
    PaidCase(
        "third-party-0819-235959-no-fee",
        "2020-08-19T23:59:59+08:00",
        "accepted",
        "no-rule-in-force",
    ),
    PaidCase(
        "third-party-0819-155959Z-no-fee", "2020-08-19T15:59:59Z", "accepted", "no-rule-in-force"
    ),
    PaidCase(
        "third-party-0820-000000-fee",
        "2020-08-20T00:00:00+08:00",
        "accepted",
        "xingtu-service-fee",
        2000,
        3980,
    ),
    PaidCase(
        "third-party-0819-160000Z-fee",
        "2020-08-19T16:00:00Z",
        "accepted",
        "xingtu-service-fee",
        2000,
        3980,
    ),
    # Between 08-20 and 09-06 a third-party order with a valid task is accepted AND charged.
    PaidCase(
        "third-party-0905-fee",
        "2020-09-05T23:59:59+08:00",
        "accepted",
        "xingtu-service-fee",
        2000,
        3980,
    ),
    PaidCase(
        "third-party-0825-no-task-no-fee",
        "2020-08-25T12:00:00+08:00",
        "accepted",
        "no-rule-in-force",
        transitions=None,
    ),
    PaidCase(
        "third-party-0825-cancelled-task-no-fee",
        "2020-08-25T12:00:00+08:00",
        "accepted",
        "no-rule-in-force",
        transitions=(
            ("2020-08-01T00:00:00+08:00", "matched"),
            ("2020-08-24T00:00:00+08:00", "cancelled"),
        ),
    ),
    PaidCase(
        "third-party-0825-other-anchor-task-no-fee",
        "2020-08-25T12:00:00+08:00",
        "accepted",
        "no-rule-in-force",
        task_anchor="anchor-2",
    ),
    PaidCase(
        "third-party-0910-fee",
        "2020-09-10T12:00:00+08:00",
        "accepted",
        "xingtu-service-fee",
        2000,
        3980,
    ),
    PaidCase(
        "jd-0910-fee",
        "2020-09-10T12:00:00+08:00",
        "accepted",
        "xingtu-service-fee",
        2000,
        3980,
        source="jd",
    ),
    PaidCase(
        "unknown-source-0910-fee",
        "2020-09-10T12:00:00+08:00",
        "accepted",
        "xingtu-service-fee",
        2000,
        3980,
        source="zzz_new",
    ),
    PaidCase(
        "third-party-0910-no-task-rejected",
        "2020-09-10T12:00:00+08:00",
        "rejected",
        "xingtu-match-required",
        reason=MR,
        transitions=None,
    ),
    PaidCase(
        "third-party-1009-task-rejected-no-fee",
        "2020-10-09T00:00:00+08:00",
        "rejected",
        "third-party-cart-banned",
        reason=BAN,
    ),
    PaidCase(
        "third-party-1008-235959-fee",
        "2020-10-08T23:59:59+08:00",
        "accepted",
        "xingtu-service-fee",
        2000,
        3980,
    ),
    # Half-up rounding in integer fen.
    PaidCase(
        "rounds-half-up-19999",
        "2020-09-10T12:00:00+08:00",
        "accepted",
        "xingtu-service-fee",
        2000,
        4000,
        amount=19_999,
    ),
    PaidCase(
        "rounds-down-19997",
        "2020-09-10T12:00:00+08:00",
        "accepted",
        "xingtu-service-fee",
        2000,
        3999,
        amount=19_997,
    ),
    PaidCase(
        "zero-amount-zero-fee",
        "2020-09-10T12:00:00+08:00",
        "accepted",
        "xingtu-service-fee",
        2000,
        0,
        amount=0,
    ),
    PaidCase(
        "max-amount",
        "2020-09-10T12:00:00+08:00",
        "accepted",
        "xingtu-service-fee",
        2000,
        200_000_000_000,
        amount=1_000_000_000_000,
    ),
    # Own shop: 5 %, from 08-20, also after 10-09; no task, no fee.
    PaidCase(
        "own-shop-0819-no-fee",
        "2020-08-19T23:59:59+08:00",
        "accepted",
        "own-shop-unaffected",
        source="douyin_shop",
    ),
    PaidCase(
        "own-shop-0820-fee",
        "2020-08-20T00:00:00+08:00",
        "accepted",
        "xingtu-service-fee",
        500,
        995,
        source="douyin_shop",
    ),
    PaidCase(
        "own-shop-1009-fee",
        "2020-10-09T00:00:00+08:00",
        "accepted",
        "xingtu-service-fee",
        500,
        995,
        source="douyin_shop",
    ),
    PaidCase(
        "own-shop-2021-fee-half-up",
        "2021-03-01T00:00:00+08:00",
        "accepted",
        "xingtu-service-fee",
        500,
        501,
        amount=10_010,
        source="douyin_shop",
    ),
    PaidCase(
        "own-shop-no-task-no-fee",
        "2020-10-20T00:00:00+08:00",
        "accepted",
        "own-shop-unaffected",
        source="douyin_shop",
        transitions=None,
    ),
    # Short video: never charged, never rejected.
    PaidCase(
        "short-video-third-party-0910-no-fee",
        "2020-09-10T12:00:00+08:00",
        "accepted",
        "short-video-exempt",
        channel="short_video",
    ),
    PaidCase(
        "short-video-third-party-1009-no-fee",
        "2020-10-09T00:00:00+08:00",
        "accepted",
        "short-video-exempt",
        channel="short_video",
    ),
    PaidCase(
        "short-video-own-shop-no-fee",
        "2020-09-10T12:00:00+08:00",
        "accepted",
        "short-video-exempt",
        channel="short_video",
        source="douyin_shop",
    ),
    # Backdating a paid order below the fee start does not dodge the fee.
    PaidCase(
        "backdated-301s-charged",
        "2020-08-19T23:59:59+08:00",
        "accepted",
        "xingtu-service-fee",
        2000,
        3980,
        record_at="2020-08-20T00:05:00+08:00",
    ),
    PaidCase(
        "backdated-300s-tolerated",
        "2020-08-19T23:59:59+08:00",
        "accepted",
        "no-rule-in-force",
        record_at="2020-08-20T00:04:59+08:00",
    ),
]


@pytest.mark.parametrize("case", PAID_CASES, ids=lambda c: c.name)
def test_paid_order(case: PaidCase) -> None:
    ev = order(case.at, amount=case.amount, channel=case.channel, source=case.source)
    st = None
    if case.transitions is not None:
        st = task_state(*case.transitions, anchor=case.task_anchor)
    d = run(ev, st, record_ms=ms(case.record_at) if case.record_at else None)
    assert (d.outcome, d.rule_id, d.reason) == (case.outcome, case.rule_id, case.reason)
    assert d.task is None
    if case.outcome == "rejected":
        assert d.rejection is not None and d.rejection["order_id"] == "ord-1"
        assert d.rejection["subject"] == "order"
    else:
        assert d.rejection is None
    if case.rate_bps is None:
        assert d.fee is None and d.charge is None
        return
    source_class = "douyin_shop" if case.source == "douyin_shop" else "third_party"
    assert d.fee == {
        "fee_id": "fee:or-1",
        "event_id": "or-1",
        "order_id": "ord-1",
        "kind": "charge",
        "xingtu_task_id": TASK,
        "anchor_id": ANCHOR,
        "product_source": case.source,
        "source_class": source_class,
        "base_fen": case.amount,
        "rate_bps": case.rate_bps,
        "fee_fen": case.fee,
        "rule_id": "xingtu-service-fee",
        "policy_version": POLICY.version,
        "occurred_at": case.at,
    }
    assert d.charge == ChargeState(
        "ord-1", "or-1", source_class, case.rate_bps, case.fee or 0, 0, TASK
    )


def test_second_paid_of_charged_order_is_accepted_without_fee() -> None:
    first = run(order("2020-09-10T12:00:00+08:00"), task_state(*MATCHED))
    assert first.charge is not None
    # Even where the gate would now reject, the order was already charged and stays accepted.
    second = run(
        order("2020-10-10T12:00:00+08:00", event_id="or-2"),
        task_state(*MATCHED),
        charge=first.charge,
    )
    assert (second.outcome, second.rule_id) == ("accepted", "already-charged")
    assert second.fee is None and second.charge is None and second.rejection is None


def test_rejected_order_pays_no_fee_and_stores_nothing() -> None:
    d = run(order("2020-10-09T00:00:00+08:00", source="zzz_new"), task_state(*MATCHED))
    assert d.outcome == "rejected" and d.fee is None and d.charge is None


# --------------------------------------------------------------------------- refunds

CHARGE = ChargeState("ord-1", "or-1", "third_party", 2000, 3980, 0, TASK)


@pytest.mark.parametrize(
    ("name", "charge", "refund", "expected_fee", "expected_reversed"),
    [
        ("partial", CHARGE, 5_000, 1_000, 1_000),
        ("full", CHARGE, 19_900, 3_980, 3_980),
        ("over-refund-capped", CHARGE, 50_000, 3_980, 3_980),
        (
            "partial-then-capped",
            ChargeState("ord-1", "or-1", "third_party", 2000, 3980, 3000, TASK),
            19_900,
            980,
            3_980,
        ),
        (
            "own-shop-rate",
            ChargeState("ord-1", "or-1", "douyin_shop", 500, 995, 0, TASK),
            10_010,
            501,
            501,
        ),
        ("rounds-half-up", CHARGE, 2_498, 500, 500),
    ],
)
def test_refund_reverses_at_charged_rate(
    name: str, charge: ChargeState, refund: int, expected_fee: int, expected_reversed: int
) -> None:
    ev = order("2020-10-20T00:00:00+08:00", status="refunded", amount=refund, event_id="rf-1")
    d = run(ev, charge=charge)
    assert (d.outcome, d.rule_id, d.reason, d.rejection) == (
        "accepted",
        "xingtu-service-fee",
        None,
        None,
    )
    assert d.fee is not None
    assert d.fee["kind"] == "reversal"
    assert d.fee["fee_id"] == "fee:rf-1"
    assert d.fee["base_fen"] == refund
    assert d.fee["rate_bps"] == charge.rate_bps
    assert d.fee["source_class"] == charge.source_class
    assert d.fee["fee_fen"] == expected_fee
    assert d.charge is not None and d.charge.reversed_fen == expected_reversed


def test_refund_without_charge_is_accepted_without_reversal() -> None:
    # Even a live third-party refund after the ban is never rejected.
    ev = order("2020-10-20T00:00:00+08:00", status="refunded", task=None)
    d = run(ev)
    assert (d.outcome, d.rule_id, d.fee, d.charge, d.rejection) == (
        "accepted",
        "refund-no-charge",
        None,
        None,
        None,
    )


def test_refund_after_full_reversal_emits_nothing() -> None:
    done = ChargeState("ord-1", "or-1", "third_party", 2000, 3980, 3980, TASK)
    d = run(order("2020-10-20T00:00:00+08:00", status="refunded", amount=100), charge=done)
    assert (d.outcome, d.rule_id, d.fee, d.charge) == ("accepted", "refund-no-charge", None, None)


def test_refund_of_zero_fee_charge_emits_nothing() -> None:
    zero = ChargeState("ord-1", "or-1", "third_party", 2000, 0, 0, TASK)
    d = run(order("2020-10-20T00:00:00+08:00", status="refunded", amount=100), charge=zero)
    assert d.fee is None and d.charge is None


def test_split_refunds_never_exceed_charge() -> None:
    charge: ChargeState | None = CHARGE
    total = 0
    for i, part in enumerate((6_633, 6_633, 6_634)):  # 1326.6, 1326.6, 1326.8 -> 1327 each
        d = run(
            order("2020-10-20T00:00:00+08:00", status="refunded", amount=part, event_id=f"rf-{i}"),
            charge=charge,
        )
        assert d.fee is not None
        total += d.fee["fee_fen"]
        charge = d.charge
    assert total == 3_980
    assert charge is not None and charge.reversed_fen == 3_980


def test_unknown_order_status_raises() -> None:
    ev = order("2020-10-20T00:00:00+08:00", status="shipped")
    with pytest.raises(ValueError, match="status"):
        run(ev)


# --------------------------------------------------------------------------- task events


def task_event(
    at: str, status: str, *, anchor: str = ANCHOR, product: str = PRODUCT, event_id: str = "xt-ev-1"
) -> XingtuTask:
    return xingtu_task_from_dict(
        {
            "event_id": event_id,
            "occurred_at": at,
            "task_id": TASK,
            "anchor_id": anchor,
            "product_id": product,
            "status": status,
        }
    )


def apply_task(
    ev: XingtuTask, st: TaskState | None = None, record_at: str | None = None
) -> Decision:
    return decide(
        ev, State(task=st), POLICY, record_ms=ms(record_at) if record_at else None, now_ms=NOW
    )


def test_task_matched_then_cancelled() -> None:
    d1 = apply_task(task_event("2020-09-08T10:00:00+08:00", "matched"))
    assert (d1.outcome, d1.rule_id, d1.clock) == ("applied", "xingtu-task-applied", "event")
    assert d1.rejection is None and d1.fee is None and d1.charge is None
    assert d1.task is not None
    assert d1.task.transitions == ((ms("2020-09-08T10:00:00+08:00"), "matched"),)
    d2 = apply_task(task_event("2020-09-09T10:00:00+08:00", "cancelled"), d1.task)
    assert d2.task is not None
    assert d2.task.valid_at(ms("2020-09-08T10:00:00+08:00"))
    assert not d2.task.valid_at(ms("2020-09-09T10:00:00+08:00"))
    assert not d2.task.valid_at(ms("2020-09-08T09:59:59.999+08:00"))


def test_task_duplicate_event_changes_nothing() -> None:
    d1 = apply_task(task_event("2020-09-08T10:00:00+08:00", "matched"))
    d2 = apply_task(task_event("2020-09-08T10:00:00+08:00", "matched"), d1.task)
    assert d2.task == d1.task


def test_backdated_match_counts_from_record_clock() -> None:
    d = apply_task(
        task_event("2020-09-01T00:00:00+08:00", "matched"), record_at="2020-09-10T00:00:00+08:00"
    )
    assert d.clock == "record"
    assert d.task is not None
    assert d.task.transitions == ((ms("2020-09-09T23:55:00+08:00"), "matched"),)
    # A sale in between cannot lean on the backdated match.
    sale = run(cart("2020-09-09T12:00:00+08:00"), d.task)
    assert sale.outcome == "rejected"


def test_backdated_cancel_counts_from_occurred_at() -> None:
    st = task_state(*MATCHED)
    d = apply_task(
        task_event("2020-09-01T00:00:00+08:00", "cancelled"),
        st,
        record_at="2020-09-10T00:00:00+08:00",
    )
    assert d.task is not None
    assert not d.task.valid_at(ms("2020-09-05T00:00:00+08:00"))


def test_task_state_of_other_identity_is_not_extended() -> None:
    other = task_state(*MATCHED, anchor="anchor-2")
    d = apply_task(task_event("2020-09-08T10:00:00+08:00", "cancelled"), other)
    assert d.task is not None
    assert d.task.anchor_id == ANCHOR
    assert d.task.transitions == ((ms("2020-09-08T10:00:00+08:00"), "cancelled"),)


# --------------------------------------------------------------------------- keys and a mini shell


def test_needed_keys() -> None:
    key = task_key(TASK, ANCHOR, PRODUCT)
    assert needed_keys(cart(AT)) == (key, None)
    assert needed_keys(cart(AT, task=None)) == (None, None)
    assert needed_keys(cart(AT, channel="short_video")) == (None, None)
    assert needed_keys(order(AT)) == (key, "ord-1")
    assert needed_keys(order(AT, task=None)) == (None, "ord-1")
    assert needed_keys(order(AT, channel="short_video")) == (None, "ord-1")
    assert needed_keys(order(AT, status="refunded")) == (None, "ord-1")
    assert needed_keys(task_event(AT, "matched")) == (key, None)
    assert needed_keys(task_event(AT, "matched", anchor="anchor-2")) != (key, None)


class MiniShell:
    """The worker's record step over dict state: events go in as the JSON records a producer
    sends (keyed, on their anchor's partition), the writes are applied as the worker does."""

    def __init__(self) -> None:
        self.step = make_step()
        self.state = DictState()
        self.tasks = self.state.stores[TASKS]
        self.charges = self.state.stores[CHARGES]
        self.offset = 0

    def feed(self, ev: CartAdd | Order | XingtuTask, record_at: str | None = None) -> Decision:
        topic = {CartAdd: "cart-adds", Order: "orders", XingtuTask: "xingtu-tasks"}[type(ev)]
        d = {f.name: getattr(ev, f.name) for f in fields(ev) if f.name != "occurred_ms"}
        # The helpers reuse event ids; each feed here is a new event (dedup is tested elsewhere).
        d["event_id"] = f"{ev.event_id}#{self.offset}"
        self.offset += 1
        r = self.state.apply(
            self.step(
                input_record(
                    topic, orjson.dumps(d), offset=self.offset, anchor=ev.anchor_id,
                    ts_ms=ms(record_at) if record_at else None,
                ),
                self.state,
                NOW,
            )
        )
        assert r.decision is not None, (r.outcome, r.error)
        return r.decision


def test_forged_task_for_other_anchor_cannot_validate_or_cancel() -> None:
    shell = MiniShell()
    shell.feed(task_event("2020-09-08T00:00:00+08:00", "matched"))
    # A cancel (or match) naming the same task id for another anchor or product lands elsewhere.
    shell.feed(task_event("2020-09-09T00:00:00+08:00", "cancelled", anchor="anchor-2"))
    shell.feed(task_event("2020-09-09T00:00:00+08:00", "cancelled", product="sku-2"))
    assert shell.feed(cart(AT)).outcome == "accepted"
    assert shell.feed(cart(AT, anchor="anchor-2")).outcome == "rejected"
    assert shell.feed(cart(AT, product="sku-3")).outcome == "rejected"


def test_order_lifecycle_through_shell() -> None:
    shell = MiniShell()
    shell.feed(task_event("2020-09-08T00:00:00+08:00", "matched"))
    paid = shell.feed(order(AT))
    assert paid.fee is not None and paid.fee["fee_fen"] == 3980
    again = shell.feed(order(AT, event_id="or-1-again"))
    assert again.rule_id == "already-charged" and again.fee is None
    fees = []
    for i, amount in enumerate((10_000, 9_000, 5_000)):
        d = shell.feed(
            order("2020-09-11T00:00:00+08:00", status="refunded", amount=amount, event_id=f"rf-{i}")
        )
        fees.append(d.fee["fee_fen"] if d.fee else 0)
    assert fees == [2000, 1800, 180]
    assert shell.charges["ord-1"]["reversed_fen"] == 3980
