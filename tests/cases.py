# ruff: noqa: E501  (the case table is one row per case on purpose)
"""Behaviour cases written once (issue 13, part 6): input records with record times, and the
rejections, fees and dead letters they must give. Two runners read this table: in memory through
the record step (tests/unit/test_cases_in_memory.py) and against one real worker on the local
Kafka (tests/integration/test_cases_real.py), the way FastStream runs one suite `with_real=True`.

Every case speaks of anchor "A" (sometimes "B"), task "xt-1", product "sku-1", order "ord-1";
`Case.records(ns)` prefixes those ids and every event id with a namespace, so cases sent to one
worker never share state. Times are +08:00 (the policy's dates): ban from 2020-10-09, match
required from 2020-09-06, fees from 2020-08-20; backdating is trusted up to 300 s.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from streams.policy import parse_instant
from streams.policy.policy_file import read_policy_file
from streams.policy.versions import PolicyBook, parse_document_toml, seed_document

_ids = itertools.count(1)
MATCHED_EARLY = "2020-08-01T00:00"


def at(local: str) -> str:
    """'2020-09-10T10:00' -> an RFC 3339 instant at +08:00."""
    return local + (":00" if len(local) == 16 else "") + "+08:00"


@dataclass(frozen=True)
class In:
    """One input record: topic, event (a dict) or raw bytes, record time (None: occurred_at)."""

    topic: str
    event: dict[str, Any] | bytes
    ts: str | None = None

    def stamped(self, local: str) -> In:
        """The same event with a later record timestamp (a backdated event)."""
        return In(self.topic, self.event, at(local))


def task(when: str, status: str = "matched", *, anchor: str = "A", tid: str = "xt-1") -> In:
    return In("xingtu-tasks", {
        "event_id": f"xt{next(_ids)}", "occurred_at": at(when), "task_id": tid,
        "anchor_id": anchor, "product_id": "sku-1", "status": status,
    })


def cart(
    when: str, source: str = "taobao", *, tid: str | None = "xt-1", channel: str = "live",
    anchor: str = "A",
) -> In:
    e: dict[str, Any] = {
        "event_id": f"ca{next(_ids)}", "occurred_at": at(when), "anchor_id": anchor,
        "channel": channel, "product_id": "sku-1", "product_source": source,
        "xingtu_task_id": tid,
    }
    if channel == "live":
        e["room_id"] = "room-1"
    return In("cart-adds", e)


def order(
    when: str, amount: int, source: str = "taobao", *, status: str = "paid",
    tid: str | None = "xt-1", channel: str = "live", oid: str = "ord-1", anchor: str = "A",
) -> In:
    return In("orders", {
        "event_id": f"or{next(_ids)}", "occurred_at": at(when), "order_id": oid,
        "status": status, "anchor_id": anchor, "room_id": "room-1" if channel == "live" else None,
        "channel": channel, "product_id": "sku-1", "product_source": source,
        "amount_fen": amount, "xingtu_task_id": tid,
    })


def refund(when: str, amount: int, *, oid: str = "ord-1") -> In:
    return order(when, amount, status="refunded", tid=None, oid=oid)


def raw(topic: str, value: bytes, when: str = "2020-09-10T10:00") -> In:
    return In(topic, value, at(when))


XMR, BAN = "XINGTU_MATCH_REQUIRED", "THIRD_PARTY_CART_BANNED"
R_XMR, R_BAN, R_FEE = "xingtu-match-required", "third-party-cart-banned", "xingtu-service-fee"
SEED = "douyin-2020-08-26.1"


def variant(version: str, effective_from: str, mode: str, *changes: tuple[str, str]) -> str:
    """The packaged policy file as a version document, with line replacements."""
    raw, _ = read_policy_file()
    text = raw.decode().replace(f'version = "{SEED}"', f'version = "{version}"')
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    return f'effective_from = {effective_from}\nmode = "{mode}"\n' + text


# The versions every case runs under, besides the packaged one (which seeds the topic, in force
# from 1970): from 2020-11-01 the own-shop fee rate is 8 %; and a shadow version that would ban
# third-party carts from 2020-10-01 instead of 2020-10-09.
V2 = "douyin-2020-11-01"
SHADOW = "shadow-ban-1001"
POLICY_DOCUMENTS = {
    V2: variant(V2, "2020-11-01T00:00:00+08:00", "enforced",
                ("own_shop_rate_bps = 500", "own_shop_rate_bps = 800")),
    SHADOW: variant(SHADOW, "1970-01-01T00:00:00Z", "shadow",
                    ("effective_from = 2020-10-09T00:00:00+08:00",
                     "effective_from = 2020-10-01T00:00:00+08:00")),
}


def case_book() -> PolicyBook:
    """The book a worker holds once the packaged policy seeded its topic and POLICY_DOCUMENTS
    were published."""
    book = PolicyBook([seed_document(*read_policy_file())])
    for name, text in POLICY_DOCUMENTS.items():
        book.add(parse_document_toml(text, name))
    return book
_NAMESPACED = ("event_id", "anchor_id", "task_id", "xingtu_task_id", "order_id")


@dataclass(frozen=True)
class Case:
    name: str
    inputs: tuple[In, ...]
    rejected: tuple[str, ...] = ()
    """Reasons of the rejections expected, in any order."""
    fees: tuple[tuple[int, str], ...] = ()
    """(fee_fen, kind) of the fees expected, in any order."""
    dead: int = 0
    advised: tuple[tuple[str, str], ...] = ()
    """(rule id, local date it takes effect) of the advance notices expected, in any order."""
    shadowed: tuple[str, ...] = ()
    """The rule of each disagreement with the shadow version expected, in any order."""
    versions: tuple[str, ...] = ()
    """When given: the policy_version of each fee, in any order."""

    def records(self, ns: str) -> list[tuple[str, bytes, bytes, int]]:
        """(unprefixed topic, key, value, record timestamp ms) in log order, ids namespaced."""
        out = []
        for r in self.inputs:
            if isinstance(r.event, bytes):
                key, value, ts = f"{ns}-A", r.event, r.ts
            else:
                e = {k: f"{ns}-{v}" if k in _NAMESPACED and v else v for k, v in r.event.items()}
                key, value, ts = e["anchor_id"], orjson.dumps(e), r.ts or e["occurred_at"]
            assert ts is not None
            out.append((r.topic, key.encode(), value, parse_instant(ts)))
        return out

    def check(
        self,
        rejections: Iterable[dict],
        fees: Iterable[dict],
        dead: int,
        advisories: Iterable[dict] = (),
        shadows: Iterable[dict] = (),
    ) -> None:
        """Compare what a runner saw for this case (output JSON, dead-letter count)."""
        fees = list(fees)
        got = (
            Counter(r["reason"] for r in rejections),
            Counter((f["fee_fen"], f["kind"]) for f in fees),
            dead,
            Counter((a["rule_id"], parse_instant(a["effective_from"])) for a in advisories),
            Counter(s["rule"] for s in shadows),
        )
        want = (
            Counter(self.rejected),
            Counter(self.fees),
            self.dead,
            Counter((rule, parse_instant(at(day + "T00:00"))) for rule, day in self.advised),
            Counter(self.shadowed),
        )
        assert got == want, self.name
        if self.versions:
            assert Counter(f["policy_version"] for f in fees) == Counter(self.versions), self.name


def case(name: str, *inputs: In | tuple[In, ...], **expected: Any) -> Any:
    flat: list[In] = []
    for i in inputs:
        flat.extend(i if isinstance(i, tuple) else (i,))
    return pytest.param(Case(name, tuple(flat), **expected), id=name)


def twice(r: In) -> tuple[In, In]:
    """A producer's redelivery: the same event (same event_id) in the log again."""
    return r, r


T = task  # short alias for the rows; MATCHED_EARLY is before every boundary
# fmt: off
CASES = [
    # -- Xingtu match required in live rooms for third-party products from 2020-09-06
    case("match-not-required-before-0906", cart("2020-09-05T23:59:59"), order("2020-09-05T23:59", 10_000, tid=None), advised=((R_XMR, "2020-09-06"),)),
    case("match-required-from-0906", cart("2020-09-06T00:00", tid=None), order("2020-09-06T00:00", 10_000, tid=None), rejected=(XMR, XMR)),
    case("task-id-without-task-is-no-match", cart("2020-09-10T10:00"), rejected=(XMR,)),
    case("matched-task-validates-sale", T(MATCHED_EARLY), cart("2020-09-10T10:00"), order("2020-09-10T10:00", 10_000), fees=((2_000, "charge"),)),
    case("cancelled-task-validates-nothing-after", T(MATCHED_EARLY), T("2020-09-09T00:00", "cancelled"), cart("2020-09-08T23:59"), cart("2020-09-09T00:00"), rejected=(XMR,)),
    case("unknown-source-is-third-party", cart("2020-09-10T10:00", "weidian_x", tid=None), rejected=(XMR,)),
    case("forged-task-for-another-anchor", T(MATCHED_EARLY, anchor="B"), cart("2020-09-10T10:00"), rejected=(XMR,)),
    # -- third-party carts banned in live rooms from 2020-10-09, whatever the task
    case("cart-ban-from-1009", T(MATCHED_EARLY), cart("2020-10-08T23:59:59"), cart("2020-10-09T00:00"), cart("2020-10-20T00:00", "jd", tid=None), rejected=(BAN, BAN), advised=((R_BAN, "2020-10-09"),), shadowed=(R_BAN,)),
    case("own-shop-unaffected", cart("2020-09-10T10:00", "douyin_shop", tid=None), cart("2020-10-10T10:00", "douyin_shop", tid=None), order("2020-10-10T10:00", 10_000, "douyin_shop", tid=None)),
    case("short-video-exempt", cart("2020-10-10T10:00", tid=None, channel="short_video"), T(MATCHED_EARLY), order("2020-10-10T10:00", 10_000, channel="short_video")),
    # -- the Xingtu service fee: from 2020-08-20, 20 % third-party, 5 % own shop, fen half up
    case("no-fee-before-0820", T(MATCHED_EARLY), order("2020-08-19T23:59:59", 10_000), order("2020-08-20T00:00", 10_000, oid="ord-2"), fees=((2_000, "charge"),)),
    case("fee-rates-and-half-up", T(MATCHED_EARLY), order("2020-09-10T10:00", 10_003), order("2020-09-10T10:00", 10_002, oid="ord-2"), order("2020-09-10T10:00", 10_010, "douyin_shop", oid="ord-3"), order("2020-09-10T10:00", 10_030, "douyin_shop", oid="ord-4"), fees=((2_001, "charge"), (2_000, "charge"), (501, "charge"), (502, "charge"))),
    case("no-fee-without-task", order("2020-08-25T10:00", 10_000, tid=None), order("2020-08-25T10:00", 10_000, "douyin_shop", tid=None, oid="ord-2"), advised=((R_XMR, "2020-09-06"),)),
    case("refunds-reverse-up-to-the-charge", T(MATCHED_EARLY), order("2020-09-10T10:00", 10_000), refund("2020-09-11T10:00", 6_000), refund("2020-09-12T10:00", 6_000), refund("2020-09-13T10:00", 1_000), fees=((2_000, "charge"), (1_200, "reversal"), (800, "reversal"))),
    case("refund-of-uncharged-order", refund("2020-09-11T10:00", 5_000)),
    case("second-paid-of-charged-order", T(MATCHED_EARLY), order("2020-09-10T10:00", 10_000), order("2020-09-10T11:00", 10_000), fees=((2_000, "charge"),)),
    # -- redeliveries, backdating, unreadable input, event-time order
    case("duplicates-decided-once", twice(cart("2020-09-10T10:00", tid=None)), T(MATCHED_EARLY), twice(order("2020-09-10T10:00", 10_000)), rejected=(XMR,), fees=((2_000, "charge"),)),
    case("backdating-beyond-300s-uses-record-clock", T(MATCHED_EARLY), cart("2020-10-08T23:00").stamped("2020-10-09T00:10"), cart("2020-10-08T23:58").stamped("2020-10-09T00:02"), rejected=(BAN,), advised=((R_BAN, "2020-10-09"),), shadowed=(R_BAN,)),
    case("backdated-sale-before-match-needs-it", cart("2020-09-05T12:00", tid=None).stamped("2020-09-06T01:00"), rejected=(XMR,)),
    case("malformed-to-dead-letters", raw("cart-adds", b"{not json"), raw("orders", b'{"event_id": "x"}'), raw("xingtu-tasks", b"\xff\xfe"), raw("orders", b"[]"), cart("2020-09-10T10:00", tid=None), dead=4, rejected=(XMR,)),
    case("task-after-its-sale-in-the-log", cart("2020-09-10T10:00"), order("2020-09-10T10:00", 10_000), refund("2020-09-11T10:00", 5_000), T("2020-09-01T10:00"), fees=((2_000, "charge"), (1_000, "reversal"))),
    # -- policy versions (#14): by event time, advance notices, a shadow version beside
    case("own-shop-rate-changes-with-v2", T(MATCHED_EARLY), order("2020-10-31T23:59:59", 10_000, "douyin_shop"), order("2020-11-01T00:00", 10_000, "douyin_shop", oid="ord-2"), fees=((500, "charge"), (800, "charge")), versions=(SEED, V2), shadowed=(R_FEE,)),
    case("shadow-ban-from-1001", T(MATCHED_EARLY), cart("2020-09-30T23:59"), cart("2020-10-01T00:00"), order("2020-10-02T10:00", 10_000), advised=((R_BAN, "2020-10-09"),), shadowed=(R_BAN, R_BAN), fees=((2_000, "charge"),)),
    case("notice-once-per-anchor-product-rule", cart("2020-08-24T10:00", tid=None), cart("2020-08-30T10:00", tid=None), twice(cart("2020-09-01T10:00", tid=None)), advised=((R_XMR, "2020-09-06"),)),
    case("no-notice-outside-the-window", cart("2020-08-22T23:59", tid=None), T(MATCHED_EARLY), cart("2020-09-24T23:59")),
    case("cancel-after-its-sale-in-the-log", T(MATCHED_EARLY), cart("2020-09-10T10:00"), T("2020-09-09T00:00", "cancelled"), rejected=(XMR,)),
]
# fmt: on
