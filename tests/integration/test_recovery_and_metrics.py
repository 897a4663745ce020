"""State survives a restart (tables recovered from changelogs) and /metrics counts what was sent."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.policy import load_policy
from tests.integration import events as ev
from tests.integration.harness import (
    BOOTSTRAP,
    Worker,
    consume_all,
    event_record,
    metric_value,
    produce,
    unique,
    wait_metric,
)

pytestmark = pytest.mark.integration


async def test_tables_recover_after_restart(make_worker) -> None:
    w: Worker = make_worker().start()
    p, a = w.prefix, unique("anchor")
    t = ev.task(a, "sku", "xt-r", "2020-09-01T00:00:00+08:00")
    paid = ev.order(a, "sku", "jd", "2020-09-10T00:00:00+08:00", 50_000, task_id="xt-r")
    await produce([event_record(p + "xingtu-tasks", t, ev.ts(t))])
    await wait_metric(w, "livecommerce_events_total", 1, topic="xingtu-tasks", outcome="applied")
    await produce([event_record(p + "orders", paid, ev.ts(paid))])
    await wait_metric(w, "livecommerce_events_total", 1, topic="orders", outcome="accepted")
    assert w.stop() == 0, w.tail()

    # A fresh data directory: the state can only come back from the changelog topics.
    w.data_dir = w.data_dir.with_name("data-after-restart")
    w.start()
    cart = ev.cart_add(a, "sku", "jd", "2020-09-20T00:00:00+08:00", task_id="xt-r")
    refund = ev.order(
        a,
        "sku",
        "jd",
        "2020-09-21T00:00:00+08:00",
        50_000,
        order_id=paid["order_id"],
        status="refunded",
        task_id="xt-r",
    )
    replay = dict(paid)  # a redelivery of the charged order after the restart
    await produce(
        [
            event_record(p + "cart-adds", cart, ev.ts(cart)),
            event_record(p + "orders", refund, ev.ts(refund)),
            event_record(p + "orders", replay, ev.ts(replay)),
        ]
    )
    await wait_metric(w, "livecommerce_events_total", 1, topic="cart-adds", outcome="accepted")
    await wait_metric(w, "livecommerce_events_total", 1, topic="orders", outcome="duplicate")
    fees = await consume_all([p + "fees"], until=lambda rs: len(rs) >= 2)
    got = sorted((f.json()["fee_id"], f.json()["kind"], f.json()["fee_fen"]) for f in fees)
    assert got == sorted(
        [
            (f"fee:{paid['event_id']}", "charge", 10_000),
            (f"fee:{refund['event_id']}", "reversal", 10_000),
        ]
    )
    rejections = await consume_all([p + "rejections"], idle=2, timeout=10)
    assert rejections == [], "the task matched before the restart must still validate"
    # the recovered dedup ids (task, paid order) are tracked for expiry, plus the two new ones
    assert metric_value(w.metrics(), "livecommerce_dedup_ids") == 4


async def test_the_dedup_changelog_forgets_by_itself(make_worker) -> None:
    """Forgetting an id writes no tombstone: the changelog must delete old segments itself."""
    w: Worker = make_worker().start()
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        topic = f"{w.app_id}-processed-event-ids-changelog"
        wanted = ConfigResource(ConfigResourceType.TOPIC, topic)
        (resource,) = (await admin.describe_configs([wanted]))[0].resources
        config = {c[0]: c[1] for c in resource[4]}
    finally:
        await admin.close()
    assert config["cleanup.policy"] == "compact,delete"
    assert config["retention.ms"] == str(load_policy().dedup_retention_ms)


async def test_metrics_equal_what_was_sent(make_worker) -> None:
    w: Worker = make_worker().start()
    p, a = w.prefix, unique("anchor")
    t = ev.task(a, "sku", "xt-m", "2020-08-25T00:00:00+08:00")
    carts = [
        ev.cart_add(a, "sku", "taobao", "2020-09-10T00:00:00+08:00", task_id="xt-m"),
        ev.cart_add(a, "sku", "taobao", "2020-09-10T00:00:00+08:00"),
        ev.cart_add(a, "sku", "taobao", "2020-10-10T00:00:00+08:00"),
        ev.cart_add(a, "sku", "douyin_shop", "2020-10-10T00:00:00+08:00"),
    ]
    orders = [
        ev.order(a, "sku", "taobao", "2020-09-10T00:00:00+08:00", 1001, task_id="xt-m"),
        ev.order(a, "sku", "douyin_shop", "2020-09-10T00:00:00+08:00", 1001, task_id="xt-m"),
    ]
    await produce([event_record(p + "xingtu-tasks", t, ev.ts(t))])
    await wait_metric(w, "livecommerce_events_total", 1, topic="xingtu-tasks", outcome="applied")
    await produce(
        [event_record(p + "cart-adds", c, ev.ts(c)) for c in carts]
        + [event_record(p + "orders", o, ev.ts(o)) for o in orders]
        + [(p + "orders", a.encode(), b"not json", None)]
    )
    await wait_metric(w, "livecommerce_events_total", 3, topic="orders")
    m = w.metrics()
    assert metric_value(m, "livecommerce_events_total", topic="cart-adds", outcome="accepted") == 2
    assert metric_value(m, "livecommerce_events_total", topic="cart-adds", outcome="rejected") == 2
    assert metric_value(m, "livecommerce_events_total", topic="orders", outcome="accepted") == 2
    assert metric_value(m, "livecommerce_events_total", topic="orders", outcome="dead_letter") == 1
    assert (
        metric_value(
            m, "livecommerce_rejections_total", subject="cart_add", reason="XINGTU_MATCH_REQUIRED"
        )
        == 1
    )
    assert (
        metric_value(
            m, "livecommerce_rejections_total", subject="cart_add", reason="THIRD_PARTY_CART_BANNED"
        )
        == 1
    )
    # 1001 fen at 20% = 200.2 -> 200; at 5% = 50.05 -> 50.
    assert (
        metric_value(m, "livecommerce_fee_fen_total", source_class="third_party", kind="charge")
        == 200
    )
    assert (
        metric_value(m, "livecommerce_fee_fen_total", source_class="douyin_shop", kind="charge")
        == 50
    )
    assert metric_value(m, "livecommerce_processing_seconds_count", topic="cart-adds") == 4
    assert metric_value(m, "livecommerce_event_age_seconds_count", topic="orders") == 2
    assert metric_value(m, "faust_messages_received_total") >= 8
    assert "livecommerce_build_info{" in m
    assert metric_value(m, "livecommerce_dedup_ids") == 8  # 7 event ids, 1 dead-letter position
