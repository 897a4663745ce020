"""Brings a partition's local state up to its committed changelogs before it decides anything.

Read with `isolation.level=read_committed` from the local checkpoint to the last stable
offset (records of aborted transactions are never applied). A checkpoint past the end of its
changelog means the local store is not a prefix of it (the topic was recreated, or the store
belongs to another deployment): that partition's store is wiped and read from the start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.engine.store import PartitionState

log = logging.getLogger(__name__)


async def restore(
    new_consumer: Callable[[], AIOKafkaConsumer],
    states: Mapping[int, PartitionState],
    changelogs: Mapping[str, str],
) -> dict[int, int]:
    """Restore every store of every partition in `states`; returns records applied per partition."""
    started = time.monotonic()
    store_of = {topic: store for store, topic in changelogs.items()}
    tps = [TopicPartition(t, p) for p in states for t in changelogs.values()]
    consumer = new_consumer()
    await consumer.start()
    applied = dict.fromkeys(states, 0)
    try:
        consumer.assign(tps)
        begin: dict[Any, int] = await consumer.beginning_offsets(tps)
        end: dict[Any, int] = await consumer.end_offsets(tps)
        for p, state in states.items():
            if any(
                (cp := state.checkpoint(store)) is not None and cp >= end[TopicPartition(t, p)]
                for store, t in changelogs.items()
            ):
                log.warning(
                    "partition %d: local state is ahead of its changelogs; rebuilding it", p
                )
                state.wipe()
        pending: dict[Any, int] = {}
        for tp in tps:
            cp = states[tp.partition].checkpoint(store_of[tp.topic])
            start = begin[tp] if cp is None else max(begin[tp], cp + 1)
            if start < end[tp]:
                consumer.seek(tp, start)
                pending[tp] = end[tp]
            else:
                consumer.pause(tp)
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=20_000)
            for tp, records in batch.items():
                if records:
                    states[tp.partition].restore(
                        store_of[tp.topic],
                        [(r.key, r.value) for r in records],
                        records[-1].offset,
                    )
                    applied[tp.partition] += len(records)
            for tp in list(pending):
                if await consumer.position(tp) >= pending[tp]:
                    del pending[tp]
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    log.info(
        "restored partitions %s from their changelogs: %s records in %.2fs",
        sorted(states), applied, time.monotonic() - started,
    )
    return applied
