"""Decision latency of one worker at a fixed offered rate (half its measured maximum).

Fresh events (another seed, dated after the October 2020 cart ban so that many of them yield a
rejection or a fee; Xingtu tasks, cart-adds and orders in one plan, interleaved in timestamp
order) are produced at a steady rate while the worker runs. For every output:

  decision latency = output CreateTime (the worker's producer stamps it when it sends the output)
                     - the wall-clock time the bench handed the input to its producer.

It covers the producer, the broker, the worker's fetch, decode, decide and send; not the
transaction commit. `visible` latency adds that: the time a read_committed consumer in the bench
receives the output, minus the same send time (exactly-once outputs appear when the worker
commits, every STREAMS_COMMIT_INTERVAL). The worker's own `livecommerce_processing_seconds`
histogram (decode..hand-off to the producer, per record) is reported alongside.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from bench.kafka import (
    BOOTSTRAP,
    INPUT_TOPICS,
    Completeness,
    admin_client,
    committed_offsets,
    committed_reader,
    create_topics,
    read_outputs,
)
from bench.run_worker import (
    POLL_S,
    WorkerProcess,
    histogram,
    histogram_quantile,
)
from streams.loadgen.expected import expected_outputs
from streams.loadgen.generate import DEFAULT_END, generate
from streams.names import DEAD_LETTERS, FEES, REJECTIONS

LATENCY_START = "2020-10-10T00:00:00+08:00"


@dataclass
class LatencyResult:
    offered_rate: float
    planned_seconds: float
    events: int
    send_seconds: float = 0.0
    achieved_rate: float = 0.0
    outputs: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    visible_p50_ms: float | None = None
    visible_p99_ms: float | None = None
    p50_first_third_ms: float | None = None
    p50_last_third_ms: float | None = None
    processing_p50_ms: float | None = None
    processing_p99_ms: float | None = None
    commit_p50_ms: float | None = None
    commit_p99_ms: float | None = None
    """`livecommerce_commit_seconds`: a sealed transaction's changelog, checks and commit."""
    p99_by_second_ms: list[float] = field(default_factory=list)
    visible_p99_by_second_ms: list[float] = field(default_factory=list)
    """Decision latency p99 of the events sent in each second of the run: where the tail is."""
    peak_rss_kib: int = 0
    worker_cpu_per_wall: float | None = None  # CPU seconds per second while offered load
    completeness: Completeness | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.completeness is not None and self.completeness.ok

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 3)
        return d


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class _Prefixed:
    """A planned record bound for a prefixed topic."""

    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int
    event: dict[str, Any] | None


async def _paced_send(
    records: list[_Prefixed], rate: float, sent_ms: dict[str, float]
) -> tuple[float, dict[TopicPartition, int]]:
    """Produce `records` at `rate`/s (default partitioner, planned keys and timestamps).

    Returns the send duration and, per partition, the offset after the last record.
    """
    # As streams.producer.InputProducer configures it.
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5, enable_idempotence=True
    )
    await producer.start()
    for topic in sorted({r.topic for r in records}):
        # the first send() of a topic would wait for its metadata after the send time was
        # noted, and that wait would be counted as the worker's latency
        await producer.partitions_for(topic)
    targets: dict[TopicPartition, int] = {}
    failed: list[BaseException] = []
    done = [0]

    def acked(fut: asyncio.Future[Any]) -> None:
        # per record as its batch is acked: gathering ~200k futures at the end queued one
        # callback each on this loop at once and stalled the follower (and the last sends)
        # for ~2 s, which the figures then counted as the worker's latency
        done[0] += 1
        exc = fut.exception()
        if exc is not None:
            failed.append(exc)
            return
        meta = fut.result()
        tp = TopicPartition(meta.topic, meta.partition)
        if meta.offset + 1 > targets.get(tp, 0):
            targets[tp] = meta.offset + 1

    try:
        t0 = time.time()
        i = 0
        while i < len(records):
            due = min(len(records), int((time.time() - t0) * rate) + 1)
            while i < due:
                p = records[i]
                now_ms = time.time() * 1000
                if p.event is not None:
                    sent_ms[p.event["event_id"]] = now_ms
                fut = await producer.send(p.topic, p.value, key=p.key, timestamp_ms=p.timestamp_ms)
                fut.add_done_callback(acked)
                i += 1
            await asyncio.sleep(0.002)
        seconds = time.time() - t0
        await producer.flush()
        while done[0] < len(records):
            await asyncio.sleep(0.01)  # the last callbacks
        if failed:
            raise RuntimeError(f"{len(failed)} records were not sent: {failed[0]!r}")
        return seconds, targets
    finally:
        await producer.stop()


def _dump(
    path: Path, outputs: list[Any], prefix: str, sent_ms: dict[str, float],
    seen_ms: dict[str, float],
) -> None:
    """One line per output (topic, key, input sent, output CreateTime, seen; ms): to look
    into a tail the per-second figures point at."""
    with path.open("w") as f:
        for r in outputs:
            if r.topic == prefix + DEAD_LETTERS:
                continue
            event_id = orjson.loads(r.value or b"{}").get("event_id")
            if event_id in sent_ms:
                kind = r.topic[len(prefix):]
                key = (r.key or b"-").decode(errors="replace").replace(" ", "_")
                f.write(
                    f"{kind} {key} {sent_ms[event_id]:.1f} {r.timestamp_ms} "
                    f"{seen_ms.get(event_id, -1):.1f}\n"
                )


def _p99_by_second(timeline: list[tuple[float, float]]) -> list[float]:
    """p99 of the latencies of the events sent in each second of the run (send time, ms)."""
    if not timeline:
        return []
    start = min(sent for sent, _ in timeline)
    by_second: dict[int, list[float]] = {}
    for sent, lat in timeline:
        by_second.setdefault(int((sent - start) // 1000), []).append(lat)
    return [round(percentile(sorted(v), 0.99) or 0.0, 1) for _, v in sorted(by_second.items())]


async def _follow(topics: list[str], seen_ms: dict[str, float], stop: asyncio.Event) -> None:
    """Record when each output id becomes visible to a read_committed consumer."""
    consumer = committed_reader(*topics, bootstrap=BOOTSTRAP, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50, max_records=5000)
            now_ms = time.time() * 1000
            for msgs in batch.values():
                for m in msgs:
                    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                        event_id = orjson.loads(m.value or b"{}").get("event_id")
                        if event_id:
                            seen_ms.setdefault(event_id, now_ms)
    finally:
        await consumer.stop()


async def run_latency(
    *,
    rate: float,
    seconds: float,
    seed: int,
    partitions: int,
    prefix: str,
    work_dir: Path,
    timeout: float = 600.0,
) -> LatencyResult:
    """One worker, the whole plan (tasks and sales interleaved) offered at `rate` for ~`seconds`."""
    rate = max(rate, 1.0)
    n = max(20, int(rate * seconds))
    planned = generate(n, seed=seed, start=LATENCY_START, end=DEFAULT_END)
    expected = expected_outputs(planned, partitions=partitions)
    # The plan and the model are hundreds of thousands of objects: a full collection in this
    # process (the paced producer and the follower) would stall both and be counted as the
    # worker's latency. Frozen, the collector leaves them alone.
    gc.collect()
    gc.freeze()
    result = LatencyResult(rate, seconds, len(planned))
    await create_topics([prefix + t for t in INPUT_TOPICS], partitions)
    app_id = f"{prefix}app"
    worker = WorkerProcess(app_id, prefix, partitions, work_dir / f"{app_id}-0")
    follower: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    seen_ms: dict[str, float] = {}
    sent_ms: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        try:
            worker.start()
            await worker.wait_ready(session)
            deadline = time.monotonic() + timeout
            text = await worker.metrics(session)
            before = histogram(text, "livecommerce_processing_seconds")
            commits_before = histogram(text, "livecommerce_commit_seconds")
            follower = asyncio.create_task(
                _follow([prefix + REJECTIONS, prefix + FEES], seen_ms, stop)
            )
            await asyncio.sleep(1.0)  # the follower is assigned and at the (empty) end
            cpu0, wall0 = worker.cpu_seconds(), time.time()
            bound = [
                _Prefixed(prefix + p.topic, p.key, p.value, p.timestamp_ms, p.event)
                for p in planned
            ]
            result.send_seconds, targets = await _paced_send(bound, rate, sent_ms)
            result.achieved_rate = len(planned) / max(result.send_seconds, 1e-9)
            admin = await admin_client()
            try:
                while True:
                    committed = await committed_offsets(admin, app_id)
                    if all(committed.get(tp, -1) >= off for tp, off in targets.items()):
                        break
                    if time.monotonic() > deadline or not worker.alive():
                        raise TimeoutError(f"latency run not committed:\n{worker.tail()}")
                    await asyncio.sleep(POLL_S)
            finally:
                await admin.close()
            result.worker_cpu_per_wall = (worker.cpu_seconds() - cpu0) / (time.time() - wall0)
            text = await worker.metrics(session)
            for name, old, attrs in (
                ("livecommerce_processing_seconds", before,
                 ("processing_p50_ms", "processing_p99_ms")),
                ("livecommerce_commit_seconds", commits_before, ("commit_p50_ms", "commit_p99_ms")),
            ):
                after = histogram(text, name)
                delta = {b: after.get(b, 0.0) - old.get(b, 0.0) for b in after}
                for q, attr in zip((0.5, 0.99), attrs, strict=True):
                    v = histogram_quantile(q, delta)
                    setattr(result, attr, None if v is None else v * 1000)
            result.peak_rss_kib = worker.peak_rss_kib()
            wait_until = time.monotonic() + 10.0
            want = len(expected.rejection_ids) + len(expected.fee_ids)
            while len(seen_ms) < want and time.monotonic() < wait_until:
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            if follower is not None:
                with contextlib.suppress(Exception):
                    await follower
            await worker.stop()
    outputs, result.completeness = await read_outputs(prefix, expected)
    timeline: list[tuple[float, float]] = []  # (send time, decision latency)
    visible_timeline: list[tuple[float, float]] = []
    visible: list[float] = []
    for r in outputs:
        if r.topic == prefix + DEAD_LETTERS:
            continue
        event_id = orjson.loads(r.value or b"{}").get("event_id")
        sent = sent_ms.get(event_id)
        if sent is None:
            continue  # not an output of a planned event (none expected)
        timeline.append((sent, r.timestamp_ms - sent))
        if event_id in seen_ms:
            visible.append(seen_ms[event_id] - sent)
            visible_timeline.append((sent, seen_ms[event_id] - sent))
    decision = sorted(lat for _, lat in timeline)
    visible.sort()
    timeline.sort()
    third = len(timeline) // 3
    if third:
        result.p50_first_third_ms = percentile(sorted(x for _, x in timeline[:third]), 0.5)
        result.p50_last_third_ms = percentile(sorted(x for _, x in timeline[-third:]), 0.5)
        if result.p50_last_third_ms and result.p50_first_third_ms is not None and (
            result.p50_last_third_ms > 2 * result.p50_first_third_ms + 50
        ):
            result.notes.append(
                "latency grew during the run (p50 first third "
                f"{result.p50_first_third_ms:.0f} ms, last third {result.p50_last_third_ms:.0f}"
                " ms): the worker did not keep up with the offered rate"
            )
    if os.environ.get("BENCH_LATENCY_DUMP"):
        _dump(Path(os.environ["BENCH_LATENCY_DUMP"]), outputs, prefix, sent_ms, seen_ms)
    result.p99_by_second_ms = _p99_by_second(timeline)
    result.visible_p99_by_second_ms = _p99_by_second(visible_timeline)
    result.outputs = len(decision)
    result.p50_ms = percentile(decision, 0.5)
    result.p99_ms = percentile(decision, 0.99)
    result.max_ms = decision[-1] if decision else None
    result.visible_p50_ms = percentile(visible, 0.5)
    result.visible_p99_ms = percentile(visible, 0.99)
    if len(visible) < len(decision):
        result.notes.append(f"{len(decision) - len(visible)} outputs not seen by the follower")
    return result
