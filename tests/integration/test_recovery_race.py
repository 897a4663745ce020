"""A worker that recovers its tables while Faust's recovery checks for aborted transactions must
still end up with every record of the changelogs (regression: a SIGKILL test run lost all Xingtu
tasks of a restarted worker, so its fees went missing and matched cart-adds were rejected).

The restarted worker runs with `recovery_race/sitecustomize.py`, which makes the race certain
(see there); the test checks that the shim really delayed changelog batches, so it cannot pass by
missing the race.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import events as ev
from tests.integration.harness import (
    Worker,
    consume_all,
    event_record,
    produce,
    unique,
    wait_metric,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIM = Path(__file__).parent / "recovery_race"
TASKS = 120


async def test_recovery_reads_every_changelog_record_when_its_idle_check_races(
    make_worker,
) -> None:
    w: Worker = make_worker().start()
    p = w.prefix
    anchors = [unique("anchor") for _ in range(TASKS)]
    at = "2020-09-01T00:00:00+08:00"
    tasks = [ev.task(a, "sku", f"xt-{i}", at) for i, a in enumerate(anchors)]
    await produce([event_record(p + "xingtu-tasks", t, ev.ts(t)) for t in tasks])
    await wait_metric(
        w, "livecommerce_events_total", TASKS, topic="xingtu-tasks", outcome="applied"
    )
    assert w.stop() == 0, w.tail()

    # A fresh data directory: the tasks can only come back through recovery, under the race.
    w.data_dir = w.data_dir.with_name("data-recovered-under-race")
    w.extra_env["PYTHONPATH"] = str(SHIM)
    w.start(timeout=120)
    orders = [
        ev.order(a, "sku", "taobao", "2020-09-10T00:00:00+08:00", 1_000, task_id=f"xt-{i}")
        for i, a in enumerate(anchors)
    ]
    await produce([event_record(p + "orders", o, ev.ts(o)) for o in orders])
    await wait_metric(w, "livecommerce_events_total", TASKS, topic="orders")
    log = w.tail(100_000)
    assert "race shim: changelog record held" in log, "the shim did not run: the race was not hit"
    fees = await consume_all([p + "fees"], until=lambda rs: len(rs) >= TASKS, idle=2, timeout=60)
    rejections = await consume_all([p + "rejections"], idle=2, timeout=10)
    assert len(fees) == TASKS and rejections == [], (
        f"{len(fees)} fees and {len(rejections)} rejections for {TASKS} orders of matched "
        f"streamers: the recovered worker lost task state\n{w.tail()}"
    )
