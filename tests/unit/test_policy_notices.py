"""Advance notices: accepted now, rejected by a published rule within the window (#14)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.policy import (
    State,
    TaskState,
    cart_add_from_dict,
    decide,
    format_instant,
    order_from_dict,
    parse_instant,
)
from streams.policy.notices import advisory_record, change_instants, notices_for
from streams.policy.versions import PolicyBook
from tests.unit.policy_docs import NOW, TASK, make_doc, sale_dict, schema_validator

VALIDATOR = schema_validator("advisories.schema.json")
V1 = make_doc("v1", "2020-08-20T00:00:00+08:00")
BAN = parse_instant("2020-10-09T00:00:00+08:00")
MATCH = parse_instant("2020-09-06T00:00:00+08:00")
DAY = 86_400_000


def cart(at: str, **kw: Any) -> Any:
    return cart_add_from_dict(sale_dict(at, **kw))


def run(event: Any, state: State, book: PolicyBook, **kw: Any) -> Any:
    policy = book.enforced_at(event.occurred_ms)
    assert policy is not None
    d = decide(event, state, policy, record_ms=None, now_ms=NOW)
    return d, notices_for(event, state, book, d, **kw)


def test_cart_add_on_1_october_gets_the_9_october_ban() -> None:
    ev = cart("2020-10-01T20:00:00+08:00")
    d, notices = run(ev, State(task=TASK), PolicyBook([V1]))
    assert d.outcome == "accepted"
    (n,) = notices
    assert (n.anchor_id, n.product_id, n.rule_id, n.effective_from_ms) == (
        "anchor-1",
        "sku-1",
        "third-party-cart-banned",
        BAN,
    )
    assert n.dedup_expires_ms == BAN
    rec = advisory_record(ev, n)
    VALIDATOR.validate(rec)
    assert rec["effective_from"] == "2020-10-08T16:00:00.000Z"
    assert rec["advisory_id"] == "adv:" + n.dedup_key


def test_outside_the_window_or_exempt_or_rejected_gets_none() -> None:
    book = PolicyBook([V1])
    # 24 September is 15 days before the ban.
    assert run(cart("2020-09-24T00:00:00+08:00"), State(task=TASK), book)[1] == ()
    # Exactly 14 days before: inside (t, t + window].
    assert len(run(cart("2020-09-25T00:00:00+08:00"), State(task=TASK), book)[1]) == 1
    assert (
        run(cart("2020-10-01T00:00:00+08:00", product_source="douyin_shop"), State(), book)[1] == ()
    )
    assert run(cart("2020-10-01T00:00:00+08:00", channel="short_video"), State(), book)[1] == ()
    # Rejected now (no task): no notice, the rejection itself tells the streamer.
    d, notices = run(cart("2020-10-01T00:00:00+08:00", xingtu_task_id=None), State(), book)
    assert d.outcome == "rejected" and notices == ()
    # A window of 0 days sends none.
    zero = PolicyBook([make_doc("v0", "2020-08-20T00:00:00+08:00", notice_window_days=0)])
    assert run(cart("2020-10-08T00:00:00+08:00"), State(task=TASK), zero)[1] == ()


def test_match_rule_before_6_september_then_ban_is_outside() -> None:
    ev = cart("2020-08-25T00:00:00+08:00", xingtu_task_id=None)
    _, notices = run(ev, State(), PolicyBook([V1]))
    assert [(n.rule_id, n.effective_from_ms) for n in notices] == [("xingtu-match-required", MATCH)]


def test_a_published_future_version_counts_and_a_shadow_does_not() -> None:
    # v2 (from 5 Oct) moves the ban earlier, to 5 Oct; a shadow with a ban on 2 Oct is ignored.
    v2 = make_doc("v2", "2020-10-05T00:00:00+08:00", ban="2020-10-03T00:00:00+08:00")
    shadow = make_doc("s", "2020-09-01T00:00:00+08:00", "shadow", ban="2020-10-02T00:00:00+08:00")
    ev = cart("2020-10-01T00:00:00+08:00")
    _, notices = run(ev, State(task=TASK), PolicyBook([V1, v2, shadow]))
    (n,) = notices
    assert n.effective_from_ms == parse_instant("2020-10-05T00:00:00+08:00")
    assert n.policy_version == "v2"


def test_paid_order_gets_a_notice_and_ids_with_separators_stay_distinct() -> None:
    raw = {
        "event_id": "or-1",
        "occurred_at": "2020-10-01T00:00:00+08:00",
        "anchor_id": "a|1:",
        "room_id": "r",
        "channel": "live",
        "product_id": "p",
        "product_source": "jd",
        "xingtu_task_id": "xt-1",
        "order_id": "o-1",
        "status": "paid",
        "amount_fen": 100,
    }
    task = TaskState("xt-1", "a|1:", "p").with_transition(0, "matched")
    ev = order_from_dict(raw)
    _, (n,) = run(ev, State(task=task), PolicyBook([V1]))
    VALIDATOR.validate(advisory_record(ev, n))
    task2 = TaskState("xt-1", "a", "1:|p").with_transition(0, "matched")
    ev2 = order_from_dict({**raw, "anchor_id": "a", "product_id": "1:|p"})
    _, (n2,) = run(ev2, State(task=task2), PolicyBook([V1]))
    assert n.dedup_key != n2.dedup_key


@settings(max_examples=60, deadline=None)
@given(st.integers(V1.effective_from_ms, parse_instant("2020-11-01T00:00:00Z")))
def test_notices_only_for_instants_inside_the_window(t: int) -> None:
    book = PolicyBook([V1])
    ev = cart(format_instant(t))
    d, notices = run(ev, State(task=TASK), book)
    for n in notices:
        assert t < n.effective_from_ms <= t + 14 * DAY
        assert n.effective_from_ms in change_instants(book, t, t + 14 * DAY)
        # And the rule really rejects the event at that instant.
        late = cart(format_instant(n.effective_from_ms))
        assert decide(late, State(task=TASK), V1.policy, record_ms=None, now_ms=NOW).rule_id == (
            n.rule_id
        )
    expect_ban = d.outcome == "accepted" and t < BAN <= t + 14 * DAY
    assert any(n.rule_id == "third-party-cart-banned" for n in notices) == expect_ban
