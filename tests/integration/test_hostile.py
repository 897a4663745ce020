"""10,000 hostile records mixed into valid traffic, through the real worker.

The hostile records come from the seeded generator of tests/unit/test_decoder_fuzz.py (random
bytes, truncated and non-UTF-8 JSON, 100k-deep nesting, wrong types, extreme amounts, impossible
timestamps, unicode ids, ~900 KB values, wrong keys). The valid traffic's outputs must be exactly
the reference model's, every hostile record that cannot be decoded must come back once as a dead
letter with its original key and bytes, the worker must never exit, its memory must stay bounded,
and /metrics must answer throughout.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter

import pytest

from streams.loadgen import Planned, expected_outputs, generate
from streams.loadgen.generate import TOPIC_RANK
from tests.integration.harness import BOOTSTRAP, Received, Worker, metric_value
from tests.integration.private_kafka import consume_from, produce_to
from tests.unit.test_decoder_fuzz import hostile_records, judge

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 4242
VALID = 5_000
HOSTILE = 10_000
HUGE_EVERY = 500  # 20 records of ~900 KB
RSS_GROWTH_LIMIT_KIB = 300 * 1024


def _get(w: Worker, path: str) -> tuple[int, float]:
    t = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{w.web_port}{path}", timeout=10) as r:
        r.read()
        return r.status, time.monotonic() - t


async def _wait_processed(w: Worker, want: int, timeout: float, probes: list[float]) -> None:
    """Until the worker has an outcome for `want` input records; /metrics must answer on every
    poll (its latency is recorded) and the worker must stay up."""
    deadline = time.monotonic() + timeout
    done = -1.0
    while time.monotonic() < deadline:
        assert w.proc is not None and w.proc.poll() is None, f"worker exited:\n{w.tail()}"
        t = time.monotonic()
        text = w.metrics()
        probes.append(time.monotonic() - t)
        done = metric_value(text, "livecommerce_events_total")
        if done >= want:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the worker decided {done:.0f} of {want} records:\n{w.tail()}")


async def test_hostile_records_mixed_into_valid_traffic(make_worker) -> None:
    valid = generate(VALID, seed=SEED)  # one plan: tasks and sales interleaved by timestamp

    # Hostile records: undecodable ones only ever become dead letters (counted apart from the
    # model); decodable ones are ordinary independent events (unique ids, no shared state)
    # that the model decides like any other.
    undecodable: list[Planned] = []
    decodable: list[Planned] = []
    kinds: Counter[str] = Counter()
    huge = 0
    for topic, key, value, ts, kind in hostile_records(HOSTILE, seed=SEED, huge_every=HUGE_EVERY):
        assert len(value) < 1_000_000, (kind, len(value))
        kinds[kind] += 1
        huge += len(value) > 500_000
        if judge(topic, value, ts) == "dead":
            undecodable.append(Planned(topic, key, value, ts, False, None))
        else:
            decodable.append(Planned(topic, key, value, ts, False, None))
    hostile: list[tuple[str, Planned]] = [
        *(("decodable", p) for p in decodable),
        *(("undecodable", u) for u in undecodable),
    ]
    # Mixed in by record timestamp (a stable sort: the valid plan keeps its order), so that every
    # input partition's log stays in timestamp order and a worker deciding live traffic in the
    # contract's merged order gets the same order as the model's replay of the whole logs.
    mixed: list[tuple[str, Planned]] = sorted(
        [*(("valid", p) for p in valid), *hostile],
        key=lambda kx: (kx[1].timestamp_ms, TOPIC_RANK[kx[1].topic]),
    )
    model = expected_outputs([x for kind, x in mixed if kind != "undecodable"])
    want_dead = model.dead_letters + len(undecodable)

    w: Worker = make_worker()
    await asyncio.to_thread(w.start, True, 180)
    p = w.prefix
    probes: list[float] = []
    rss_before = w.rss_kib()

    records = [(p + x.topic, x.key, x.value, x.timestamp_ms) for _, x in mixed]
    t0 = time.monotonic()
    # Sent as a backlog, the worker paused (SIGSTOP, a few seconds): produced live, the 500 KB
    # records can hold their partition's requests back past STREAMS_MAX_IDLE_MS behind records
    # of other partitions produced after them, which is a test of the idle wait (see README,
    # "Event-time order"), not of hostile input (a CI run lost 2 fees of 453 that way).
    w.pause()
    try:
        metas = await produce_to(BOOTSTRAP, records, max_request_size=2 * 1024 * 1024)
    finally:
        w.resume()
    sources = {
        (topic, partition, offset): (kind, x)
        for (kind, x), (topic, partition, offset) in zip(mixed, metas, strict=True)
    }
    await _wait_processed(w, len(records), 300, probes)
    elapsed = time.monotonic() - t0
    status, livez_s = _get(w, "/livez")
    assert status == 200
    rss_after = w.rss_kib()
    assert w.proc is not None and w.proc.poll() is None, w.tail()

    rejections = await consume_from(
        BOOTSTRAP, [p + "rejections"], until=lambda rs: len(rs) >= len(model.rejection_ids),
        timeout=120, idle=3, stall=20,
    )
    fees = await consume_from(
        BOOTSTRAP, [p + "fees"], until=lambda rs: len(rs) >= len(model.fee_ids),
        timeout=120, idle=3, stall=20,
    )
    dead = await consume_from(
        BOOTSTRAP, [p + "dead-letters"], until=lambda rs: len(rs) >= want_dead,
        timeout=120, idle=3, stall=20,
    )
    rej_ids = Counter(r.json()["rejection_id"] for r in rejections)
    fee_ids = Counter(r.json()["fee_id"] for r in fees)

    # Every undecodable hostile record: exactly one dead letter, original key and bytes.
    by_source: dict[tuple[str, int, int], list[Received]] = {}
    for d in dead:
        h = dict(d.headers)
        src = (h["source_topic"].decode(), int(h["source_partition"]), int(h["source_offset"]))
        by_source.setdefault(src, []).append(d)
        assert h["error"], src
    wrong = []
    for src, (kind, x) in sources.items():
        if kind != "undecodable":
            continue
        got = by_source.get(src, [])
        if len(got) != 1 or got[0].key != x.key or got[0].value != x.value:
            wrong.append((src, len(got)))
    report = (
        f"hostile: {HOSTILE} hostile records ({len(undecodable)} undecodable, {len(decodable)} "
        f"valid events among them, {huge} over 500 KB; kinds {dict(sorted(kinds.items()))}) "
        f"mixed into {VALID} loadgen records; decided in {elapsed:.0f}s; "
        f"rejections {len(rejections)}/{len(model.rejection_ids)}, fees {len(fees)}/"
        f"{len(model.fee_ids)}, dead letters {len(dead)}/{want_dead}; "
        f"RSS before {rss_before / 1024:.0f} MiB, after {rss_after / 1024:.0f} MiB; "
        f"/metrics answered {len(probes)} polls, slowest {max(probes):.2f}s; /livez {livez_s:.2f}s"
    )
    print(report)
    assert set(rej_ids) == model.rejection_ids and max(rej_ids.values(), default=1) == 1, (
        f"{report}\nmissing {len(model.rejection_ids - set(rej_ids))}, unexpected "
        f"{len(set(rej_ids) - model.rejection_ids)}, doubled {sum(c - 1 for c in rej_ids.values())}"
    )
    assert set(fee_ids) == model.fee_ids and max(fee_ids.values(), default=1) == 1, (
        f"{report}\nmissing {len(model.fee_ids - set(fee_ids))}, unexpected "
        f"{len(set(fee_ids) - model.fee_ids)}, doubled {sum(c - 1 for c in fee_ids.values())}"
    )
    assert not wrong, f"{report}\n{len(wrong)} hostile records without exactly one faithful " \
        f"dead letter, e.g. {wrong[:5]}"
    assert len(dead) == want_dead, report
    assert rss_after < rss_before + RSS_GROWTH_LIMIT_KIB, report
    assert max(probes) < 10, report
