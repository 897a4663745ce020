"""Engine.process: partitions take turns in chunks (the event loop runs between them), and an
idle lane's wait is measured against the fetch, never against time spent deciding."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition

from streams.engine.engine import CHUNK, Engine, EngineConfig
from streams.engine.partition import PartitionTask
from tests.integration import events as ev
from tests.unit.shell_fakes import CHANGELOG_TOPICS, FakeRecord, home
from tests.unit.shell_fakes import partition_task as make_task


class CaughtUp:
    """Every input partition is at its end on the broker."""

    def lag(self, tp: TopicPartition) -> tuple[bool, float]:
        return False, time.monotonic()  # as a fetch response just said


def engine(max_idle: float) -> Engine:
    cfg = EngineConfig(
        app_id="g", prefix="p-", changelogs=CHANGELOG_TOPICS, data_dir=Path("/nonexistent"),
        store="memory", commit_interval=3600.0, max_idle=max_idle, dedup_retention_ms=10**9,
        recovery_timeout=1.0, client={},
    )
    e = Engine(cfg, step=None)  # type: ignore[arg-type]
    e.inputs = CaughtUp()  # type: ignore[assignment]
    return e


def anchor_for(partition: int) -> str:
    return next(a for a in (f"anchor-{i}" for i in range(1000)) if home(a) == partition)


def cart_adds(partition: int, n: int) -> list[FakeRecord]:
    anchor = anchor_for(partition)
    out = []
    for i in range(n):
        c = ev.cart_add(anchor, f"sku-{i}", "douyin_shop", "2020-10-10T10:00:00+08:00")
        out.append(FakeRecord("p-cart-adds", partition, i, ev.ts(c), anchor.encode(),
                              orjson.dumps(c)))
    return out


def with_order_log(tasks: dict[int, PartitionTask], log: list[int], pause: float = 0.0) -> None:
    """Each task's step also appends its partition to one shared log (and may take time)."""
    for p, task in tasks.items():
        decide = task.step.decide

        def logged(*args: Any, _p: int = p, _decide: Any = decide) -> Any:
            log.append(_p)
            if pause:
                time.sleep(pause)
            return _decide(*args)

        task.step.decide = logged  # type: ignore[method-assign]


async def test_partitions_take_turns_in_chunks() -> None:
    e = engine(max_idle=0.0)
    e.tasks = {0: make_task(0), 1: make_task(1)}
    order: list[int] = []
    with_order_log(e.tasks, order)
    n = 3 * CHUNK
    await e.process({TopicPartition("p-cart-adds", p): cart_adds(p, n) for p in (0, 1)})
    assert len(order) == 2 * n
    # turns of CHUNK records each, alternating: 0, 1, 0, 1, ...
    turns = [order[i] for i in range(0, 2 * n, CHUNK)]
    assert turns == [0, 1] * 3
    assert all(len(set(order[i : i + CHUNK])) == 1 for i in range(0, 2 * n, CHUNK))


def tasks(partition: int, n: int) -> list[FakeRecord]:
    anchor = anchor_for(partition)
    out = []
    for i in range(n):
        t = ev.task(anchor, f"sku-{i}", f"xt-{i}", "2020-09-01T10:00:00+08:00")
        out.append(FakeRecord("p-xingtu-tasks", partition, i, ev.ts(t), anchor.encode(),
                              orjson.dumps(t)))
    return out


async def test_an_idle_wait_does_not_run_out_while_the_fetch_is_being_decided() -> None:
    e = engine(max_idle=0.02)
    e.tasks = {0: make_task(0, max_idle=0.02)}
    order: list[int] = []
    with_order_log(e.tasks, order, pause=0.0005)  # a chunk takes > 20 ms
    # One chunk of tasks, then a later cart-add and order: once the tasks lane is empty (caught
    # up), those wait up to max_idle from their arrival for a task that could still come.
    anchor = anchor_for(0)
    o = ev.order(anchor, "sku-x", "douyin_shop", "2020-10-10T11:00:00+08:00", 100)
    started = time.monotonic()
    await e.process({
        TopicPartition("p-xingtu-tasks", 0): tasks(0, CHUNK),
        TopicPartition("p-cart-adds", 0): cart_adds(0, 1),
        TopicPartition("p-orders", 0): [
            FakeRecord("p-orders", 0, 0, ev.ts(o), anchor.encode(), orjson.dumps(o))
        ],
    })
    assert time.monotonic() - started > 0.02  # deciding the tasks outlasted the idle wait
    assert len(order) == CHUNK  # ... yet the others wait: a fetch may bring a task first
    await e.process({})  # the next fetch brought nothing for the tasks lane: now they go
    assert len(order) == CHUNK + 2
