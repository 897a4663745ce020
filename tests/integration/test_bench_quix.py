"""The benchmark's Quix Streams contender (`bench/quix_app.py`, run by `bench/run_quix.py`) on
2,000 events: its committed outputs equal the reference model id by id, its dead letters carry
the original bytes and the worker's headers, and the run yields a figure and a peak RSS. No
timing assertions: the figures of so small a run mean nothing."""

from __future__ import annotations

import contextlib
from pathlib import Path

from bench.kafka import (
    BOOTSTRAP,
    committed_reader,
    delete_topics_with_prefix,
    prepare_backlog,
    topic_partitions,
)
from bench.run_quix import run_quix
from streams.loadgen.expected import expected_outputs
from streams.loadgen.generate import generate
from tests.integration.harness import unique

EVENTS = 2000
PARTITIONS = 4


async def _dead_letters(topic: str) -> list[tuple[bytes | None, dict[str, bytes]]]:
    consumer = committed_reader(bootstrap=BOOTSTRAP)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, [topic])
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[bytes | None, dict[str, bytes]]] = []
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                out += [(m.value, dict(m.headers or ())) for m in msgs]
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return out
    finally:
        await consumer.stop()


async def test_quix_contender_matches_the_reference_model(tmp_path: Path) -> None:
    planned = generate(EVENTS, seed=7)
    expected = expected_outputs(planned, partitions=PARTITIONS)
    prefix = unique("benchquix-")
    backlog = await prepare_backlog(prefix, PARTITIONS, [planned], held=True)
    try:
        run = await run_quix(backlog, expected, repetition=1, work_dir=tmp_path, timeout=300)
        assert run.completeness is not None, run.notes
        assert run.ok, run.completeness.summary()
        assert run.completeness.missing == run.completeness.duplicated == 0
        assert run.completeness.dead_letters == expected.dead_letters > 0
        assert run.events_per_s is not None and run.events_per_s > 0
        assert run.peak_rss_kib and run.peak_rss_kib[0] > 0

        broken = {p.value for p in planned if not p.valid}
        dead = await _dead_letters(prefix + "dead-letters")
        assert len(dead) == expected.dead_letters
        for value, headers in dead:
            assert value in broken  # the original bytes
            assert {"error", "source_topic", "source_partition", "source_offset"} <= set(headers)
            assert headers["source_topic"].decode().startswith(prefix)
    finally:
        await backlog.close()
        with contextlib.suppress(Exception):
            await delete_topics_with_prefix(prefix)
