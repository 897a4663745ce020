"""Producing a planned list to Kafka at a target rate, in list order within every partition.

Records are handed to aiokafka a tick's worth at a time and their acks are gathered per tick in
the background, so the rate is bounded by the token bucket and the broker, not by round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from streams.loadgen.generate import Planned

TICK_S = 0.01
"""Pacing granularity: at 200 events/s a tick carries 2 records."""
BURST_S = 0.1
"""The bucket holds at most this many seconds of events, so a stall is not followed by a flood."""
FULL_SPEED_CHUNK = 2000
"""Records handed over per tick when --rate is 0."""
MAX_PENDING_TICKS = 512
"""Ticks whose acks may be outstanding at once; bounds memory if the broker is slow."""
DRAIN_TIMEOUT_S = 30.0
"""How long an interrupted run waits for the acks of what it already handed over."""
MAX_ERROR_SAMPLES = 5


class TopicsMissing(RuntimeError):
    """The topics did not appear in time (the worker creates them at start-up)."""


@dataclass
class Stats:
    """What a run did; `sent` counts acknowledged records only."""

    planned: int = 0
    queued: int = 0
    sent: int = 0
    malformed: int = 0
    errors: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    interrupted: bool = False
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Acknowledged records per second of sending."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def note_error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{type(exc).__name__}: {exc}")


def bootstrap_servers(broker: str | Iterable[str]) -> list[str]:
    """`kafka://a:1;kafka://b:2` (the worker's STREAMS_BROKER form) as aiokafka's host:port list."""
    parts = broker.replace(",", ";").split(";") if isinstance(broker, str) else list(broker)
    return [p.strip().removeprefix("kafka://") for p in parts if p.strip()]


async def wait_for_topics(
    producer: AIOKafkaProducer,
    names: Iterable[str],
    *,
    timeout_s: float,
    announce: bool,
    stop: asyncio.Event | None = None,
) -> None:
    """Poll cluster metadata until every topic exists; raise TopicsMissing after `timeout_s`.

    Asks for all topics rather than the wanted ones: a metadata request naming a missing topic
    may auto-create it with the broker's default partition count and break co-partitioning.
    Returns early, without raising, once `stop` is set.
    """
    wanted = sorted(set(names))
    deadline = time.monotonic() + timeout_s
    announced = False
    while True:
        missing = wanted
        with contextlib.suppress(KafkaError, OSError, asyncio.TimeoutError):
            md = await producer.client.fetch_all_metadata()
            missing = [t for t in wanted if not md.partitions_for_topic(t)]
        if not missing or (stop is not None and stop.is_set()):
            return
        if time.monotonic() >= deadline:
            raise TopicsMissing(
                f"topics {', '.join(missing)} do not exist after {timeout_s:g} s: start the worker "
                "(it creates them) or create them with the same partition count"
            )
        if announce and not announced:
            print(
                f"loadgen: waiting up to {timeout_s:g} s for topics {', '.join(missing)} "
                "(the worker creates them)",
                file=sys.stderr,
                flush=True,
            )
            announced = True
        if stop is None:
            await asyncio.sleep(1.0)
        else:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


class _Sender:
    """One run's producer loop, its ack accounting and its progress line."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        prefix: str,
        rate: float,
        stats: Stats,
        stop: asyncio.Event,
    ) -> None:
        self.producer = producer
        self.prefix = prefix
        self.rate = rate
        self.stats = stats
        self.stop = stop
        self.pending: set[asyncio.Future[None]] = set()
        self.partitioner = DefaultPartitioner()
        self.partition_cache: dict[tuple[str, bytes | None], int] = {}

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when asked to stop."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def send(self, records: list[Planned]) -> None:
        """Hand `records` over in order, paced by a token bucket, without awaiting each ack."""
        loop = asyncio.get_running_loop()
        rate = self.rate
        burst = max(1.0, rate * BURST_S)
        tokens = 0.0
        last = loop.time()
        i, n = 0, len(records)
        while i < n and not self.stop.is_set():
            if rate > 0:
                now = loop.time()
                tokens = min(burst, tokens + (now - last) * rate)
                last = now
                take = min(n - i, int(tokens))
                if take == 0:
                    await self._pause(max(TICK_S, min(1.0, (1.0 - tokens) / rate)))
                    continue
                tokens -= take
            else:
                take = min(n - i, FULL_SPEED_CHUNK)
            await self._hand_over(records[i : i + take])
            i += take
            if rate > 0:
                await self._pause(TICK_S)
            elif len(self.pending) >= MAX_PENDING_TICKS:
                await asyncio.wait(self.pending, return_when=asyncio.FIRST_COMPLETED)

    async def _partition(self, topic: str, key: bytes | None) -> int:
        """The default murmur2 partitioner's choice, cached per (topic, key): anchors repeat."""
        cache_key = (topic, key)
        part = self.partition_cache.get(cache_key)
        if part is None:
            partitions = sorted(await self.producer.partitions_for(topic))
            part = self.partitioner(key, partitions, partitions)
            if key is not None:
                self.partition_cache[cache_key] = part
        return part

    async def _hand_over(self, batch: list[Planned]) -> None:
        """Build one record batch per partition and queue it; acks are counted in the background.

        Records keep their list order within a partition, which is all the worker relies on.
        """
        groups: dict[tuple[str, int], list[Planned]] = {}
        prefix = self.prefix
        for p in batch:
            topic = prefix + p.topic
            part = await self._partition(topic, p.key)
            group = groups.get((topic, part))
            if group is None:
                groups[(topic, part)] = [p]
            else:
                group.append(p)
        for (topic, part), records in groups.items():
            builder = self.producer.create_batch()
            start = 0
            for j, p in enumerate(records):
                if builder.append(timestamp=p.timestamp_ms, key=p.key, value=p.value) is None:
                    await self._queue(builder, topic, part, records[start:j])
                    builder = self.producer.create_batch()
                    start = j
                    if builder.append(timestamp=p.timestamp_ms, key=p.key, value=p.value) is None:
                        self.stats.note_error(ValueError(f"record too large: {len(p.value)} B"))
                        start = j + 1
            await self._queue(builder, topic, part, records[start:])

    async def _queue(self, builder: Any, topic: str, part: int, records: list[Planned]) -> None:
        if not records:
            return
        try:
            fut = await self.producer.send_batch(builder, topic, partition=part)
        except Exception as exc:  # e.g. KafkaTimeoutError: the partition's queue stayed full
            for _ in records:
                self.stats.note_error(exc)
            return
        self.stats.queued += len(records)
        task = asyncio.ensure_future(self._settle(fut, records))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _settle(self, fut: Awaitable[Any], records: list[Planned]) -> None:
        """Count one batch's ack: per topic and malformed, or its error once per record."""
        stats = self.stats
        try:
            await fut
        except Exception as exc:
            for _ in records:
                stats.note_error(exc)
            return
        stats.sent += len(records)
        by_topic = stats.by_topic
        for p in records:
            by_topic[p.topic] = by_topic.get(p.topic, 0) + 1
            if not p.valid:
                stats.malformed += 1

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the acks of everything handed over so far."""
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=timeout)

    async def report(self) -> None:
        """A progress line on stderr once a second until cancelled."""
        stats = self.stats
        prev_sent, prev_t = stats.sent, time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            current = (stats.sent - prev_sent) / (now - prev_t)
            prev_sent, prev_t = stats.sent, now
            print(
                f"loadgen: {stats.sent}/{stats.planned} sent, {current:.0f}/s, "
                f"{stats.errors} errors",
                file=sys.stderr,
                flush=True,
            )


async def send_planned(
    planned: list[Planned],
    *,
    bootstrap: str | Iterable[str],
    prefix: str = "",
    rate: float = 0,
    progress: bool = True,
    stop: asyncio.Event | None = None,
    topic_wait_s: float = 60.0,
    **producer_options: Any,
) -> Stats:
    """Produce `planned` to `<prefix><topic>` in list order (the plan's arrival order, see
    `generate`), then await every ack.

    `rate` is events/s (0: as fast as possible); `stop` ends the run early (acks of what was handed
    over are still awaited). Keys, values and timestamps are sent as planned, with aiokafka's
    default murmur2 partitioner and one idempotent producer, so each topic-partition's log holds
    its records in list order (what `expected_outputs` assumes). Raises TopicsMissing if the
    topics do not exist within `topic_wait_s`.
    """
    stop = stop if stop is not None else asyncio.Event()
    stats = Stats(planned=len(planned))
    options: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "enable_idempotence": True,
        "max_batch_size": 256 * 1024,
    }
    options.update(producer_options)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(bootstrap), **options)
    try:
        await producer.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await producer.stop()  # releases what start() opened; otherwise "Unclosed" warnings
        raise
    sender = _Sender(producer, prefix, rate, stats, stop)
    reporter: asyncio.Task[None] | None = None
    try:
        topics = {prefix + p.topic for p in planned}
        await wait_for_topics(
            producer, topics, timeout_s=topic_wait_s, announce=progress, stop=stop
        )
        if progress:
            reporter = asyncio.create_task(sender.report())
        started = time.monotonic()
        await sender.send(planned)
        await sender.drain(None if not stop.is_set() else DRAIN_TIMEOUT_S)
        stats.elapsed_s = time.monotonic() - started
        stats.interrupted = stop.is_set()
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        await producer.stop()
    return stats
