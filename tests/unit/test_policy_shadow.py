"""Shadow comparison and the policy-shadow record (#14 groundwork)."""

from __future__ import annotations

from typing import Any

from streams.policy import (
    ChargeState,
    State,
    cart_add_from_dict,
    decide,
    order_from_dict,
    xingtu_task_from_dict,
)
from streams.policy.shadow import compare, fee_amount, shadow_record
from tests.unit.policy_docs import NOW, TASK, make_doc, sale_dict, schema_validator

VALIDATOR = schema_validator("policy-shadow.schema.json")
ENFORCED = make_doc("v1", "2020-08-20T00:00:00+08:00")
LATER_BAN = make_doc("s-ban", "2020-08-20T00:00:00+08:00", "shadow", ban="2020-11-01T00:00:00Z")
LOWER_RATE = make_doc("s-rate", "2020-08-20T00:00:00+08:00", "shadow", rate=1500)


def sale(at: str, **kw: Any) -> dict[str, Any]:
    return sale_dict(at, event_id="ev-1", **kw)


def both(event: Any, state: State, shadow: Any) -> tuple[Any, Any]:
    e = decide(event, state, ENFORCED.policy, record_ms=None, now_ms=NOW)
    s = decide(event, state, shadow.policy, record_ms=None, now_ms=NOW)
    return e, s


def test_same_decision_is_no_disagreement() -> None:
    ev = cart_add_from_dict(sale("2020-09-10T00:00:00+08:00"))
    e, s = both(ev, State(task=TASK), LATER_BAN)
    assert compare(e, s) is None
    assert shadow_record(ev, e, s) is None


def test_rule_id_alone_is_no_disagreement() -> None:
    ev = cart_add_from_dict(sale("2020-09-10T00:00:00+08:00"))
    e = decide(ev, State(task=TASK), ENFORCED.policy, record_ms=None, now_ms=NOW)
    early = decide(
        cart_add_from_dict(sale("2020-09-01T00:00:00+08:00")),
        State(task=TASK),
        ENFORCED.policy,
        record_ms=None,
        now_ms=NOW,
    )
    assert e.rule_id != early.rule_id and e.outcome == early.outcome == "accepted"
    assert compare(e, early) is None


def test_accept_vs_reject() -> None:
    ev = cart_add_from_dict(sale("2020-10-10T00:00:00+08:00"))
    e, s = both(ev, State(task=TASK), LATER_BAN)
    diff = compare(e, s)
    assert diff == {
        "rule": "third-party-cart-banned",
        "outcome": ["rejected", "accepted"],
        "reason": ["THIRD_PARTY_CART_BANNED", None],
    }
    rec = shadow_record(ev, e, s)
    assert rec is not None
    VALIDATOR.validate(rec)
    assert rec["shadow_id"] == "shd:s-ban:ev-1"
    assert rec["enforced_version"] == "v1" and rec["shadow_version"] == "s-ban"
    assert rec["differences"] == ["outcome", "reason"]
    assert rec["enforced"]["outcome"] == "rejected" and rec["shadow"]["outcome"] == "accepted"


def test_reason_differs_with_both_rejecting() -> None:
    ev = cart_add_from_dict(sale("2020-09-10T00:00:00+08:00", xingtu_task_id=None))
    early_ban = make_doc("s-early", "2020-08-20T00:00:00Z", "shadow", ban="2020-09-01T00:00:00Z")
    e, s = both(ev, State(), early_ban)
    diff = compare(e, s)
    assert diff is not None and "outcome" not in diff
    assert diff["reason"] == ["XINGTU_MATCH_REQUIRED", "THIRD_PARTY_CART_BANNED"]
    assert diff["rule"] == "third-party-cart-banned"


def test_fee_amount_differs() -> None:
    raw = {**sale("2020-09-10T00:00:00+08:00"), "order_id": "o-1", "status": "paid"}
    ev = order_from_dict({**raw, "amount_fen": 10_000})
    e, s = both(ev, State(task=TASK), LOWER_RATE)
    assert compare(e, s) == {"rule": "xingtu-service-fee", "fee_fen": [2000, 1500]}
    rec = shadow_record(ev, e, s)
    assert rec is not None and rec["subject"] == "order"
    VALIDATOR.validate(rec)


def test_reversal_is_negative_and_task_events_never_disagree() -> None:
    raw = {**sale("2020-09-12T00:00:00+08:00"), "order_id": "o-1", "status": "refunded"}
    ev = order_from_dict({**raw, "amount_fen": 500})
    charge = ChargeState("o-1", "ev-0", "third_party", 2000, 2000, 0, "xt-1")
    e, _ = both(ev, State(charge=charge), LOWER_RATE)
    assert fee_amount(e) == -100
    task_ev = xingtu_task_from_dict(
        {
            "event_id": "t-1",
            "occurred_at": "2020-09-01T00:00:00Z",
            "task_id": "xt-1",
            "anchor_id": "anchor-1",
            "product_id": "sku-1",
            "status": "matched",
        }
    )
    e, s = both(task_ev, State(), LOWER_RATE)
    assert compare(e, s) is None
