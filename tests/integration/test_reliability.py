"""Exactly-once under failure: SIGKILLs of the worker, a broker outage, and a rebalance.

Every test replays a seeded loadgen plan and checks the committed outputs against the reference
model (`expected_outputs`): each expected rejection and fee exactly once, nothing else, and the
expected number of dead letters. The plan is one phase: Xingtu tasks, cart-adds and orders
interleaved in record-timestamp order, sent while the worker runs; nothing waits for the tasks
to be decided first (the worker must decide each partition group in timestamp order, and the
model replays exactly that). Processed input is measured by the consumer group's committed
offsets (the exactly-once transactions commit them), because metrics reset when a worker dies.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.loadgen import Expected, Planned, expected_outputs, generate, send_planned
from tests.integration.harness import BOOTSTRAP, Worker, metric_value
from tests.integration.private_kafka import (
    consume_from,
    group_lag,
    private_kafka,
    wait_caught_up,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INPUTS = ("xingtu-tasks", "cart-adds", "orders")


@dataclass
class Load:
    planned: list[Planned]
    expected: Expected


def make_load(n: int, seed: int) -> Load:
    planned = generate(n, seed=seed)  # interleaved: produce order = timestamp order
    return Load(planned, expected_outputs(planned))


@dataclass
class Verdict:
    rejections: int
    fees: int
    dead_letters: int
    missing: int
    doubled: int
    unexpected: int
    text: str


async def check_outputs(
    load: Load, prefix: str, *, bootstrap: str = BOOTSTRAP, client: dict[str, Any] | None = None
) -> Verdict:
    """Read the committed outputs and compare them with the model; never raises on mismatch."""
    exp = load.expected
    want = {
        "rejections": (len(exp.rejection_ids), "rejection_id", exp.rejection_ids),
        "fees": (len(exp.fee_ids), "fee_id", exp.fee_ids),
        "advisories": (len(exp.advisory_ids), "advisory_id", exp.advisory_ids),
    }
    if exp.shadow_ids:
        want["policy-shadow"] = (len(exp.shadow_ids), "shadow_id", exp.shadow_ids)
    lines = []
    missing = doubled = unexpected = 0
    counts = {}
    for topic, (n, field, ids) in want.items():
        records = await consume_from(
            bootstrap, [prefix + topic], client=client,
            until=lambda rs, n=n: len(rs) >= n, timeout=180, idle=4, stall=20,
        )
        got = Counter(r.json()[field] for r in records)
        m = len(ids - got.keys())
        d = sum(c - 1 for c in got.values() if c > 1)
        u = len(got.keys() - ids)
        missing, doubled, unexpected = missing + m, doubled + d, unexpected + u
        counts[topic] = len(records)
        sample = sorted(ids - got.keys())[:5] + sorted(k for k, c in got.items() if c > 1)[:5]
        lines.append(
            f"{topic}: expected {len(ids)}, got {len(records)} records / {len(got)} ids; "
            f"missing {m}, doubled {d}, unexpected {u} {sample if sample else ''}"
        )
    dead = await consume_from(
        bootstrap, [prefix + "dead-letters"], client=client,
        until=lambda rs: len(rs) >= exp.dead_letters, timeout=120, idle=3, stall=20,
    )
    lines.append(f"dead-letters: expected {exp.dead_letters}, got {len(dead)}")
    return Verdict(
        counts["rejections"], counts["fees"], len(dead), missing, doubled, unexpected,
        "\n".join(lines),
    )


def assert_exact(v: Verdict, load: Load, context: str) -> None:
    assert (v.missing, v.doubled, v.unexpected) == (0, 0, 0), f"{context}\n{v.text}"
    assert v.dead_letters == load.expected.dead_letters, f"{context}\n{v.text}"


def needs_state(load: Load) -> int:
    """Expected outputs that exist only because a task was known (fees need a task)."""
    return len(load.expected.fee_ids)


# -- 1. SIGKILL ----------------------------------------------------------------------------------

KILL_SEED = 20200906
KILL_EVENTS = 20_000
MIN_KILLS = 5
SEND_RATE = 260  # events/s: production spans the kills, so every kill hits work in flight


async def test_sigkill_crashes_lose_and_double_nothing(make_worker) -> None:
    load = make_load(KILL_EVENTS, KILL_SEED)
    rng = random.Random(KILL_SEED)
    w: Worker = make_worker()
    await asyncio.to_thread(w.start, True, 180)
    prefix, group = w.prefix, w.app_id
    inputs = [prefix + t for t in INPUTS]
    kills: list[str] = []
    sending = asyncio.Event()
    sending.set()

    async def lag_now() -> int:
        try:
            return sum((await group_lag(BOOTSTRAP, group, inputs)).values())
        except Exception:  # only for the report
            return -1

    async def chaos() -> None:
        """Kill -9 at random moments 1-4 s into each life, restart, until enough kills were
        made and the producer is done."""
        while sending.is_set() or len(kills) < MIN_KILLS:
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            if w.proc is not None and w.proc.poll() is not None:
                raise AssertionError(f"worker died by itself ({w.proc.returncode}):\n{w.tail()}")
            lag = await lag_now()
            t = time.monotonic()
            await asyncio.to_thread(w.kill)
            kills.append(f"kill {len(kills) + 1}: lag {lag} at +{t - t0:.0f}s")
            await asyncio.to_thread(w.start, True, 180)

    t0 = time.monotonic()
    chaos_task = asyncio.create_task(chaos())
    try:
        stats = await send_planned(
            load.planned, bootstrap=BOOTSTRAP, prefix=prefix, rate=SEND_RATE, progress=False,
        )
        assert stats.errors == 0 and stats.sent == len(load.planned), stats
        sending.clear()
        await chaos_task
    finally:
        sending.clear()
        if not chaos_task.done():
            chaos_task.cancel()
    if w.proc is None or w.proc.poll() is not None:
        await asyncio.to_thread(w.start, True, 180)
    waited = await wait_caught_up(BOOTSTRAP, group, inputs, timeout=240, on_wait=_alive(w))
    v = await check_outputs(load, prefix)
    report = (
        f"SIGKILL test: {len(kills)} kills survived ({'; '.join(kills)}); "
        f"{len(load.planned)} events checked ({len(load.expected.rejection_ids)} rejections, "
        f"{len(load.expected.fee_ids)} fees, {load.expected.dead_letters} dead letters); "
        f"missing {v.missing}, doubled {v.doubled}, unexpected {v.unexpected}; "
        f"caught up {waited:.0f}s after the last send; total {time.monotonic() - t0:.0f}s"
    )
    print(report)
    assert len(kills) >= MIN_KILLS, report
    assert_exact(v, load, report)


def _alive(w: Worker):  # type: ignore[no-untyped-def]
    def check() -> None:
        if w.proc is not None and w.proc.poll() is not None:
            raise AssertionError(f"worker exited {w.proc.returncode}:\n{w.tail()}")

    return check


# -- 2. broker outage ----------------------------------------------------------------------------

OUTAGE_SEED = 20201009
OUTAGE_EVENTS = 40_000  # a few seconds of work for the batch engine (6,000 took it under 1 s)
OUTAGE_S = 20.0
OUTAGE_AFTER_S = 1.0  # how long the resumed worker works on its backlog before the broker stops


async def test_broker_outage(make_worker, tmp_path: Path) -> None:
    load = make_load(OUTAGE_EVENTS, OUTAGE_SEED)
    with private_kafka(tmp_path / "kafka") as kafka:
        w: Worker = make_worker(extra_env={"STREAMS_BROKER": kafka.broker})
        await asyncio.to_thread(w.start, True, 180)
        prefix, group = w.prefix, w.app_id
        inputs = [prefix + t for t in INPUTS]
        events: list[str] = []
        paused: list[float] = []

        # The plan is sent while the worker is paused (SIGSTOP, a few seconds: well inside its
        # 10 s session timeout), so the broker goes down while the worker is deciding a backlog
        # of thousands of events, mid-transaction, not after it has caught up (the producer is
        # not under test).
        w.pause()
        paused.append(time.monotonic())
        try:
            stats = await send_planned(
                load.planned, bootstrap=kafka.bootstrap, prefix=prefix, progress=False,
            )
        finally:
            w.resume()
            paused.append(time.monotonic())
        assert stats.errors == 0 and stats.sent == len(load.planned), stats
        await asyncio.sleep(OUTAGE_AFTER_S)
        lag_before = sum((await group_lag(kafka.bootstrap, group, inputs)).values())
        assert lag_before > 0, "the worker caught up before the outage; nothing was in flight"
        t_stop = time.monotonic()
        await asyncio.to_thread(kafka.stop)
        stopped = time.monotonic()
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(kafka.start)
        outage = time.monotonic() - t_stop
        events.append(
            f"worker paused {paused[-1] - paused[0]:.1f}s while the plan was sent; "
            f"broker stopped {OUTAGE_AFTER_S:.0f}s after it resumed, with lag {lag_before}, "
            f"for {OUTAGE_S:.0f}s "
            f"(down {outage:.0f}s from the stop to answering again; the stop itself took "
            f"{stopped - t_stop:.1f}s)"
        )
        restarts = 0

        def supervise() -> None:
            """What a supervisor would do: restart a worker that exited."""
            nonlocal restarts
            if w.proc is not None and w.proc.poll() is not None:
                code = w.proc.returncode
                assert code != 0, f"the worker exited 0 during an outage:\n{w.tail()}"
                assert restarts < 5, f"the worker keeps exiting ({code}):\n{w.tail()}"
                events.append(f"worker exited {code}: {_last_line(w)}; restarted")
                restarts += 1
                w.start(wait_ready=False)

        t_up = time.monotonic()
        waited = await wait_caught_up(kafka.bootstrap, group, inputs, timeout=240,
                                      on_wait=supervise)
        mode = (
            "recovered by itself (same process)" if restarts == 0
            else f"exited and was restarted {restarts}x"
        )
        events.append(f"caught up {waited:.0f}s after the broker was back: {mode}")
        assert w.proc is not None and w.proc.poll() is None, w.tail()
        v = await check_outputs(load, prefix, bootstrap=kafka.bootstrap)
        report = (
            f"broker outage: {'; '.join(events)}; {len(load.planned)} events checked; "
            f"missing {v.missing}, doubled {v.doubled}, unexpected {v.unexpected}; "
            f"total after restart {time.monotonic() - t_up:.0f}s"
        )
        print(report)
        assert_exact(v, load, report)
        assert w.stop() == 0, w.tail()


def _last_line(w: Worker) -> str:
    lines = [ln for ln in w.tail(400).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "cannot start" in ln or "ERROR" in ln or "CRITICAL" in ln:
            return ln.strip()[:300]
    return lines[-1].strip()[:300] if lines else "(no log)"


# -- 3. rebalance ---------------------------------------------------------------------------------

REBALANCE_SEED = 20200820
REBALANCE_EVENTS = 8_000


async def test_rebalance_second_worker_joins_and_leaves(make_worker) -> None:
    load = make_load(REBALANCE_EVENTS, REBALANCE_SEED)
    a: Worker = make_worker()
    await asyncio.to_thread(a.start, True, 180)
    prefix, group = a.prefix, a.app_id
    inputs = [prefix + t for t in INPUTS]
    notes: list[str] = []
    b_box: list[Worker] = []

    async def second_worker() -> None:
        """B joins while the plan streams in, works for a while, then leaves (SIGTERM)."""
        await asyncio.sleep(3.0)
        b: Worker = make_worker()
        b_box.append(b)
        t = time.monotonic()
        await asyncio.to_thread(b.start, True, 180)
        assigned = _assigned(b)
        notes.append(f"B joined in {time.monotonic() - t:.0f}s with {assigned} partitions")
        await asyncio.sleep(10.0)
        decided = metric_value(b.metrics(), "livecommerce_events_total")
        code = await asyncio.to_thread(b.stop)
        notes.append(f"B decided {decided:.0f} events, then stopped with exit code {code}")
        assert code == 0, b.tail()
        assert decided > 0, f"no partition moved to B:\n{b.tail()}"

    b_task = asyncio.create_task(second_worker())
    stats = await send_planned(
        load.planned, bootstrap=BOOTSTRAP, prefix=prefix, rate=350, progress=False,
    )
    assert stats.errors == 0 and stats.sent == len(load.planned), stats
    await b_task
    waited = await wait_caught_up(BOOTSTRAP, group, inputs, timeout=180, on_wait=_alive(a))
    v = await check_outputs(load, prefix)
    report = (
        f"rebalance: {'; '.join(notes)}; A caught up {waited:.0f}s after the last send; "
        f"{len(load.planned)} events checked ({len(load.expected.fee_ids)} fees need "
        f"task state); missing {v.missing}, doubled {v.doubled}, unexpected {v.unexpected}"
    )
    print(report)
    assert_exact(v, load, report)
    assert needs_state(load) > 0


def _assigned(w: Worker) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{w.web_port}/readyz", timeout=5) as r:
        return int(orjson.loads(r.read()).get("assigned_partitions", -1))
