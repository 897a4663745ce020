"""Which version decides an event (#14): by decision time, with the backdating guard, the
earliest enforced version before all of them; shadows beside; the book's cached orderings agree
with a brute-force choice after any sequence of adds and removals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.policy import CartAdd, State, format_instant, parse_instant
from streams.policy.versioned import NoEnforcedPolicy, enforced_for, judge
from streams.policy.versions import PolicyBook, PolicyDocument
from tests.unit.policy_docs import TASK, make_doc

V1 = make_doc("v1", "2020-08-20T00:00:00+08:00")
V2 = make_doc("v2", "2020-10-01T00:00:00+08:00", ban="2020-10-01T00:00:00+08:00")
SHADOW = make_doc("s1", "2020-08-20T00:00:00+08:00", "shadow", ban="2020-09-20T00:00:00+08:00")


def cart(when: str, tid: str | None = "xt-1") -> CartAdd:
    return CartAdd(
        event_id="e1", occurred_at=when, occurred_ms=parse_instant(when), anchor_id="anchor-1",
        room_id="r", channel="live", product_id="sku-1", product_source="taobao",
        xingtu_task_id=tid,
    )


def test_the_version_in_force_at_the_decision_time_decides() -> None:
    book = PolicyBook([V1, V2])
    before = judge(cart("2020-09-30T23:59:59+08:00"), State(task=TASK), book,
                   record_ms=None, now_ms=0)
    after = judge(cart("2020-10-01T00:00:00+08:00"), State(task=TASK), book,
                  record_ms=None, now_ms=0)
    assert (before.decision.outcome, before.decision.policy_version) == ("accepted", "v1")
    assert (after.decision.outcome, after.decision.policy_version) == ("rejected", "v2")
    assert after.decision.rule_id == "third-party-cart-banned"


def test_a_backdated_event_is_judged_by_the_version_at_its_guarded_time() -> None:
    book = PolicyBook([V1, V2])
    occurred = "2020-09-30T23:00:00+08:00"
    record = parse_instant("2020-10-01T01:00:00+08:00")  # 2 h later: beyond the 300 s guard
    assert enforced_for(book, parse_instant(occurred), record).version == "v2"
    within = parse_instant("2020-09-30T23:04:00+08:00")
    assert enforced_for(book, parse_instant(occurred), within).version == "v1"


def test_an_event_before_every_version_is_decided_by_the_earliest() -> None:
    book = PolicyBook([V2, SHADOW])
    assert enforced_for(book, parse_instant("2020-01-01T00:00:00Z"), None).version == "v2"
    with pytest.raises(NoEnforcedPolicy):
        enforced_for(PolicyBook([SHADOW]), 0, None)


def test_shadows_are_decided_beside_and_notices_come_from_enforced_versions_only() -> None:
    book = PolicyBook([V1, SHADOW])
    v = judge(cart("2020-09-25T10:00:00+08:00"), State(task=TASK), book, record_ms=None, now_ms=0)
    assert v.decision.outcome == "accepted" and v.decision.policy_version == "v1"
    assert [(s.policy_version, s.outcome) for s in v.shadows] == [("s1", "rejected")]
    # v1 bans from 9 October: within 14 days of 25 September
    assert [(n.rule_id, format_instant(n.effective_from_ms)) for n in v.notices] == [
        ("third-party-cart-banned", "2020-10-08T16:00:00.000Z")
    ]
    quiet = judge(cart("2020-09-25T10:00:00+08:00"), State(task=TASK), book, record_ms=None,
                  now_ms=0, with_notices=False)
    assert quiet.notices == ()


T0 = parse_instant("2020-01-01T00:00:00Z")
DAY = 86_400_000
_ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove"]),
        st.integers(0, 4),  # version id
        st.integers(0, 40),  # effective day
        st.sampled_from(["enforced", "shadow"]),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(_ops, st.integers(T0 - 5 * DAY, T0 + 50 * DAY))
def test_cached_choice_equals_brute_force_after_adds_and_removals(
    ops: list[tuple[str, int, int, str]], t: int
) -> None:
    book = PolicyBook()
    held: dict[str, PolicyDocument] = {}
    for op, i, day, mode in ops:
        if op == "add":
            doc = make_doc(f"v{i}", format_instant(T0 + day * DAY), mode)
            book.add(doc)
            held[doc.version] = doc
        else:
            book.remove(f"v{i}")
            held.pop(f"v{i}", None)
    eligible = [d for d in held.values() if d.mode == "enforced" and d.effective_from_ms <= t]
    best = max(eligible, key=lambda d: (d.effective_from_ms, d.version), default=None)
    assert book.enforced_doc_at(t) is best
    enforced = [d for d in held.values() if d.mode == "enforced"]
    first = min(enforced, key=lambda d: (d.effective_from_ms, d.version), default=None)
    assert book.earliest_enforced() is first
    shadows = sorted(
        (d for d in held.values() if d.mode == "shadow" and d.effective_from_ms <= t),
        key=lambda d: (d.effective_from_ms, d.version),
    )
    assert list(book.shadows_at(t)) == shadows
