"""Decisions follow event time, not arrival order (issue 12, points 1 and 4): a backlog whose
Xingtu tasks reached the log after the sales they validate, a fresh deployment onto topics that
already hold data, and the same records in three arrival orders giving identical outputs."""

from __future__ import annotations

import asyncio
from typing import Any

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

N_ANCHORS = 40


def backlog_events() -> dict[str, list[tuple[str, dict]]]:
    """Per anchor: a task matched on 1 Sep, a third-party cart-add and a paid order on 10 Sep
    (compliant: no rejection, one 20 % fee), and a refund of half the order on 11 Sep."""
    tasks, sales = [], []
    for i in range(N_ANCHORS):
        a = unique(f"anchor{i}")
        t = ev.task(a, "p1", f"xt-{a}", "2020-09-01T10:00:00+08:00")
        c = ev.cart_add(a, "p1", "taobao", "2020-09-10T10:00:00+08:00", task_id=t["task_id"])
        o = ev.order(
            a, "p1", "taobao", "2020-09-10T11:00:00+08:00", 10_000, task_id=t["task_id"],
            order_id=f"ord-{a}",
        )
        r = ev.order(
            a, "p1", "taobao", "2020-09-11T11:00:00+08:00", 5_000, order_id=f"ord-{a}",
            status="refunded",
        )
        tasks.append(("xingtu-tasks", t))
        sales += [("cart-adds", c), ("orders", o), ("orders", r)]
    return {"tasks": tasks, "sales": sales}


async def run_backlog(make_worker: Any, order: str, events: dict | None = None) -> dict[str, Any]:
    prefix = unique("")
    w: Worker = make_worker(prefix=prefix, app_id=unique("evt"))
    recs = {
        k: [event_record(prefix + t, e, ev.ts(e)) for t, e in v]
        for k, v in (events or backlog_events()).items()
    }
    if order == "tasks-first":
        batches = [recs["tasks"], recs["sales"]]
    elif order == "tasks-last":
        batches = [recs["sales"], recs["tasks"]]
    else:
        batches = [[r for pair in zip(recs["tasks"], recs["sales"][::3], strict=True)
                    for r in pair] + [r for i, r in enumerate(recs["sales"]) if i % 3]]
    # the topics exist and hold every record before the worker's first start
    w.start(wait_ready=False)
    w.wait_ready(90)
    w.stop()
    for batch in batches:
        await produce(batch)
    w.start()
    await wait_metric(w, "livecommerce_events_total", 2 * N_ANCHORS, topic="orders")
    await wait_metric(w, "livecommerce_events_total", N_ANCHORS, topic="cart-adds")
    fees = await consume_all([prefix + "fees"], until=lambda rs: len(rs) >= 2 * N_ANCHORS)
    rejections = await consume_all([prefix + "rejections"], idle=1.0)
    return {
        "fees": sorted((f.json()["fee_id"], f.json()["fee_fen"]) for f in fees),
        "rejections": sorted(r.json()["rejection_id"] for r in rejections),
        "late": metric_value(w.metrics(), "livecommerce_late_records_total"),
    }


async def test_tasks_arriving_after_their_sales_still_validate_them(make_worker: Any) -> None:
    out = await run_backlog(make_worker, "tasks-last")
    assert out["rejections"] == []
    assert len(out["fees"]) == 2 * N_ANCHORS  # one charge and one reversal per anchor
    assert sum(1 for _, fen in out["fees"] if fen == 2_000) == N_ANCHORS
    assert sum(1 for _, fen in out["fees"] if fen == 1_000) == N_ANCHORS


async def test_three_arrival_orders_give_identical_outputs(make_worker: Any) -> None:
    events = backlog_events()  # the same events, ids included, in each order
    results = await asyncio.gather(
        *(run_backlog(make_worker, o, events) for o in ("tasks-first", "tasks-last", "interleaved"))
    )
    assert results[0]["fees"] == results[1]["fees"] == results[2]["fees"]
    assert len(results[0]["fees"]) == 2 * N_ANCHORS
    assert results[0]["rejections"] == results[1]["rejections"] == results[2]["rejections"] == []


async def test_restart_with_lag_where_tasks_arrived_after_their_sales(make_worker) -> None:
    """Half the anchors are decided live; the worker stops; the other half's sales and then
    their tasks reach the log while it is down; the restarted worker catches up in event time."""
    events = backlog_events()
    half = N_ANCHORS // 2
    w: Worker = make_worker()
    w.start()
    p = w.prefix

    def records(kind: str, anchors: slice) -> list[tuple]:
        per = 1 if kind == "tasks" else 3
        chosen = events[kind][anchors.start * per : anchors.stop * per]
        return [event_record(p + t, e, ev.ts(e)) for t, e in chosen]

    await produce(records("tasks", slice(0, half)) + records("sales", slice(0, half)))
    await wait_metric(w, "livecommerce_events_total", half, topic="cart-adds")
    assert w.stop() == 0
    await produce(records("sales", slice(half, N_ANCHORS)))
    await produce(records("tasks", slice(half, N_ANCHORS)))
    w.start()
    fees = await consume_all([p + "fees"], until=lambda rs: len(rs) >= 2 * N_ANCHORS)
    rejections = await consume_all([p + "rejections"], idle=1.0)
    assert rejections == []
    assert sorted(f.json()["fee_fen"] for f in fees) == [1_000] * N_ANCHORS + [2_000] * N_ANCHORS
