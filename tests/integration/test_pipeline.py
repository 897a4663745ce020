"""The real worker on the real broker: every rule, state across topics, fees, dead letters,
duplicates, re-keying and metrics, end to end."""

from __future__ import annotations

import orjson
import pytest

from tests.integration import events as ev
from tests.integration.harness import (
    Worker,
    consume_all,
    event_record,
    metric_value,
    produce,
    unique,
    wait_metric,
)

pytestmark = pytest.mark.integration


def by_id(records: list, field: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in records:
        doc = r.json()
        assert doc[field] not in out, f"{doc[field]} emitted twice"
        out[doc[field]] = doc
    return out


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory):
    w = Worker(
        app_id=unique("pipeline"),
        prefix=unique(""),
        data_dir=tmp_path_factory.mktemp("pipeline") / "data",
    )
    w.start()
    yield w
    w.stop()


async def test_every_rule_through_the_pipeline(worker: Worker) -> None:
    p = worker.prefix
    a = unique("anchor")
    tasks = [
        ev.task(a, "p-ok", "xt-ok", "2020-09-01T10:00:00+08:00"),
        ev.task(a, "p-cancel", "xt-cancel", "2020-09-01T10:00:00+08:00"),
        ev.task(a, "p-cancel", "xt-cancel", "2020-09-08T00:00:00+08:00", status="cancelled"),
        ev.task(a, "p-late", "xt-late", "2020-09-20T00:00:00+08:00"),
    ]
    await produce(event_record(p + "xingtu-tasks", t, ev.ts(t)) for t in tasks)
    await wait_metric(
        worker, "livecommerce_events_total", 4, topic="xingtu-tasks", outcome="applied"
    )

    cases = {
        # name: (event, expected rejection reason or None)
        "short-video third-party after ban": (
            ev.cart_add(a, "p1", "taobao", "2020-10-10T00:00:00+08:00", channel="short_video"),
            None,
        ),
        "own shop after ban": (
            ev.cart_add(a, "p1", "douyin_shop", "2020-10-10T00:00:00+08:00"),
            None,
        ),
        "third-party before xingtu rule": (
            ev.cart_add(a, "p1", "jd", "2020-09-05T23:59:59+08:00"),
            None,
        ),
        "third-party at xingtu rule, no task": (
            ev.cart_add(a, "p1", "jd", "2020-09-05T16:00:00Z"),
            "XINGTU_MATCH_REQUIRED",
        ),
        "third-party with matched task": (
            ev.cart_add(a, "p-ok", "taobao", "2020-09-10T00:00:00+08:00", task_id="xt-ok"),
            None,
        ),
        "task for another product": (
            ev.cart_add(a, "p-other", "taobao", "2020-09-10T00:00:00+08:00", task_id="xt-ok"),
            "XINGTU_MATCH_REQUIRED",
        ),
        "task for another anchor": (
            ev.cart_add(a + "-x", "p-ok", "taobao", "2020-09-10T00:00:00+08:00", task_id="xt-ok"),
            "XINGTU_MATCH_REQUIRED",
        ),
        "task cancelled before": (
            ev.cart_add(a, "p-cancel", "taobao", "2020-09-09T00:00:00+08:00", task_id="xt-cancel"),
            "XINGTU_MATCH_REQUIRED",
        ),
        "task matched after the event": (
            ev.cart_add(a, "p-late", "taobao", "2020-09-19T23:59:59+08:00", task_id="xt-late"),
            "XINGTU_MATCH_REQUIRED",
        ),
        "unknown source fails closed": (
            ev.cart_add(a, "p1", "zz_new_mall", "2020-09-10T00:00:00+08:00"),
            "XINGTU_MATCH_REQUIRED",
        ),
        "ban, even with task": (
            ev.cart_add(a, "p-ok", "taobao", "2020-10-09T00:00:00+08:00", task_id="xt-ok"),
            "THIRD_PARTY_CART_BANNED",
        ),
        "ban, in UTC": (
            ev.cart_add(a, "p1", "tmall", "2020-10-08T16:00:00Z"),
            "THIRD_PARTY_CART_BANNED",
        ),
        "just before ban, in UTC, with task": (
            ev.cart_add(a, "p-ok", "tmall", "2020-10-08T15:59:59Z", task_id="xt-ok"),
            None,
        ),
    }
    records = [event_record(p + "cart-adds", e, ev.ts(e)) for e, _ in cases.values()]
    # A backdated record: occurred_at before the ban, record time well after it.
    backdated = ev.cart_add(a, "p1", "taobao", "2020-10-08T23:00:00+08:00")
    records.append(event_record(p + "cart-adds", backdated, ev.ts(backdated) + 2 * 3600_000))
    await produce(records)

    want = {f"rej:{e['event_id']}": r for e, r in cases.values() if r}
    want[f"rej:{backdated['event_id']}"] = "THIRD_PARTY_CART_BANNED"
    ours = {f"rej:{e['event_id']}" for e, _ in cases.values()} | {f"rej:{backdated['event_id']}"}
    got = await consume_all(
        [p + "rejections"],
        until=lambda rs: want.keys() <= {r.json()["rejection_id"] for r in rs},
        idle=3,
    )
    rejections = {k: v for k, v in by_id(got, "rejection_id").items() if k in ours}
    assert {k: v["reason"] for k, v in rejections.items()} == want
    assert rejections[f"rej:{backdated['event_id']}"]["clock"] == "record"
    for r in rejections.values():
        assert r["policy_version"] and r["rule_id"] in {
            "xingtu-match-required",
            "third-party-cart-banned",
        }
        assert r["anchor_id"].startswith(a)
    for rec in got:
        if rec.json()["rejection_id"] in ours:
            assert rec.key == rec.json()["anchor_id"].encode()


async def test_orders_fees_and_refund_reversals(worker: Worker) -> None:
    p = worker.prefix
    a = unique("anchor")
    t = ev.task(a, "sku", "xt-1", "2020-08-15T00:00:00+08:00")
    t_shop = ev.task(a, "sku-shop", "xt-2", "2020-08-15T00:00:00+08:00")
    await produce(event_record(p + "xingtu-tasks", x, ev.ts(x)) for x in (t, t_shop))
    await wait_metric(
        worker, "livecommerce_events_total", 6, topic="xingtu-tasks", outcome="applied"
    )
    paid_tp = ev.order(a, "sku", "taobao", "2020-09-10T12:00:00+08:00", 12345, task_id="xt-1")
    paid_shop = ev.order(
        a, "sku-shop", "douyin_shop", "2020-10-20T12:00:00+08:00", 9999, task_id="xt-2"
    )
    before_fee = ev.order(a, "sku", "taobao", "2020-08-19T23:59:59+08:00", 10000, task_id="xt-1")
    no_task = ev.order(a, "sku", "douyin_shop", "2020-09-10T12:00:00+08:00", 10000)
    short = ev.order(
        a,
        "sku",
        "taobao",
        "2020-09-10T12:00:00+08:00",
        10000,
        task_id="xt-1",
        channel="short_video",
    )
    banned = ev.order(a, "sku", "taobao", "2020-10-10T12:00:00+08:00", 10000, task_id="xt-1")
    refund1 = ev.order(
        a,
        "sku",
        "taobao",
        "2020-09-11T12:00:00+08:00",
        5000,
        order_id=paid_tp["order_id"],
        status="refunded",
        task_id="xt-1",
    )
    refund2 = ev.order(
        a,
        "sku",
        "taobao",
        "2020-09-12T12:00:00+08:00",
        99999,
        order_id=paid_tp["order_id"],
        status="refunded",
        task_id="xt-1",
    )
    refund_none = ev.order(
        a,
        "sku",
        "douyin_shop",
        "2020-09-12T12:00:00+08:00",
        100,
        order_id=no_task["order_id"],
        status="refunded",
    )
    batch = [paid_tp, paid_shop, before_fee, no_task, short, banned, refund1, refund2, refund_none]
    await produce(event_record(p + "orders", o, ev.ts(o)) for o in batch)

    expect_fees = {
        f"fee:{paid_tp['event_id']}": ("charge", "third_party", 2000, 2469),  # 12345*0.2=2469
        f"fee:{paid_shop['event_id']}": ("charge", "douyin_shop", 500, 500),  # 499.95 -> 500
        f"fee:{refund1['event_id']}": ("reversal", "third_party", 2000, 1000),
        f"fee:{refund2['event_id']}": ("reversal", "third_party", 2000, 1469),  # capped
    }
    ours = {f"fee:{o['event_id']}" for o in batch}
    got = await consume_all(
        [p + "fees"], until=lambda rs: expect_fees.keys() <= {r.json()["fee_id"] for r in rs}
    )
    fees = {k: v for k, v in by_id(got, "fee_id").items() if k in ours}
    assert {
        k: (v["kind"], v["source_class"], v["rate_bps"], v["fee_fen"]) for k, v in fees.items()
    } == expect_fees
    for rec in got:
        if rec.json()["fee_id"] in ours:
            assert rec.key == rec.json()["order_id"].encode()
            assert isinstance(rec.json()["fee_fen"], int)
    rej = await consume_all(
        [p + "rejections"],
        until=lambda rs: f"rej:{banned['event_id']}" in {r.json()["rejection_id"] for r in rs},
    )
    banned_rej = [r.json() for r in rej if r.json()["rejection_id"] == f"rej:{banned['event_id']}"]
    assert len(banned_rej) == 1 and banned_rej[0]["subject"] == "order"
    assert banned_rej[0]["order_id"] == banned["order_id"]


async def test_duplicates_dead_letters_and_rekeying(worker: Worker) -> None:
    p = worker.prefix
    a = unique("anchor")
    dup = ev.cart_add(a, "p1", "taobao", "2020-10-10T00:00:00+08:00")
    bad_json = b'{"event_id": "x", '
    bad_schema = orjson.dumps(
        {**ev.cart_add(a, "p1", "taobao", "2020-10-10T00:00:00+08:00"), "channel": "tv"}
    )
    non_utf8 = b'{"event_id": "\xff\xfe"}'
    after = ev.cart_add(a, "p2", "jd", "2020-10-11T00:00:00+08:00")
    wrong_key = ev.cart_add(a, "p3", "jd", "2020-10-12T00:00:00+08:00")
    no_key = ev.cart_add(a, "p4", "jd", "2020-10-12T00:00:00+08:00")
    before = metric_value(
        worker.metrics(), "livecommerce_events_total", topic="cart-adds", outcome="duplicate"
    )
    await produce(
        [
            event_record(p + "cart-adds", dup, ev.ts(dup)),
            event_record(p + "cart-adds", dup, ev.ts(dup)),
            (p + "cart-adds", a.encode(), bad_json, None),
            (p + "cart-adds", b"k-schema", bad_schema, None),
            (p + "cart-adds", a.encode(), b"", None),
            (p + "orders", None, non_utf8, None),
            event_record(p + "cart-adds", after, ev.ts(after)),
            (p + "cart-adds", b"someone-else", orjson.dumps(wrong_key), ev.ts(wrong_key)),
            (p + "cart-adds", None, orjson.dumps(no_key), ev.ts(no_key)),
        ]
    )
    ids = {f"rej:{e['event_id']}" for e in (dup, after, wrong_key, no_key)}
    got = await consume_all(
        [p + "rejections"], until=lambda rs: ids <= {r.json()["rejection_id"] for r in rs}
    )
    mine = [r.json()["rejection_id"] for r in got if r.json()["rejection_id"] in ids]
    assert sorted(mine) == sorted(ids), "each input exactly one rejection, the duplicate none"
    dead = await consume_all([p + "dead-letters"], until=lambda rs: len(rs) >= 4)
    assert sorted(((d.key, d.value) for d in dead), key=repr) == sorted(
        [(a.encode(), bad_json), (b"k-schema", bad_schema), (a.encode(), b""), (None, non_utf8)],
        key=repr,
    )
    for d in dead:
        h = dict(d.headers)
        assert h["error"] and h["source_topic"].decode().startswith(p)
        assert int(h["source_partition"]) >= 0 and int(h["source_offset"]) >= 0
    errors = {dict(d.headers)["error"].decode().split(":")[0] for d in dead}
    assert {"not UTF-8 JSON", "schema", "empty value"} <= errors
    m = worker.metrics()
    assert (
        metric_value(m, "livecommerce_events_total", topic="cart-adds", outcome="duplicate")
        == before + 1
    )
    assert metric_value(m, "livecommerce_key_mismatch_total", topic="cart-adds") >= 2
