"""The behaviour cases of tests/cases.py against one real worker on the local Kafka: every case
gets its own namespace (anchors, tasks, orders, event ids), all cases' records are in the topics
before the worker starts deciding, then each case is checked on its own outputs. The same table
runs in memory in tests/unit/test_cases_in_memory.py."""

from __future__ import annotations

import asyncio
import heapq
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cases import CASES, POLICY_DOCUMENTS, Case
from tests.integration.harness import (
    Received,
    Worker,
    consume_all,
    metric_value,
    produce,
    unique,
)

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:6]


def ns(case: Case) -> str:
    return f"{RUN}-{case.name}"


def owner(anchor_or_key: str) -> str:
    """The case name a namespaced anchor id belongs to ("<run>-<case>-A")."""
    return anchor_or_key.removeprefix(f"{RUN}-").rsplit("-", 1)[0]


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory, kafka_broker: str) -> Iterator[dict[str, Any]]:
    cases: list[Case] = [p.values[0] for p in CASES]
    prefix = unique("")
    worker = Worker(unique("cases"), prefix, Path(tmp_path_factory.mktemp("cases")) / "data")
    try:
        # the worker creates its topics; every case is in them before it decides anything
        worker.start(wait_ready=False)
        worker.wait_ready(90)
        worker.stop()
        # the packaged policy seeded the policies topic; the other versions go through the CLI
        for name, text in POLICY_DOCUMENTS.items():
            path = Path(tmp_path_factory.mktemp("policies")) / f"{name}.toml"
            path.write_text(text)
            done = subprocess.run(
                [sys.executable, "-m", "streams.policy", "publish", str(path)],
                env=worker.env(), capture_output=True, text=True, timeout=60,
            )
            assert done.returncode == 0, done.stderr
            assert f"published {name}" in done.stdout, done.stdout
        # Cases share partitions: each case's records keep their own log order, but the cases
        # are interleaved by timestamp, so no case's record lands in a lane behind a later one
        # of another case (that would make it late for the merge, and decided after records
        # it precedes in event time, for reasons outside the case).
        records = [
            (prefix + t, k, v, ts)
            for t, k, v, ts in heapq.merge(*(c.records(ns(c)) for c in cases), key=lambda r: r[3])
        ]
        asyncio.run(produce(records))
        worker.start()
        want_rej = sum(len(c.rejected) for c in cases)
        want_fees = sum(len(c.fees) for c in cases)
        want_dead = sum(c.dead for c in cases)
        want_adv = sum(len(c.advised) for c in cases)
        want_shd = sum(len(c.shadowed) for c in cases)

        async def read() -> list[list[Received]]:
            return list(
                await asyncio.gather(
                    consume_all([prefix + "rejections"], until=lambda rs: len(rs) >= want_rej),
                    consume_all([prefix + "fees"], until=lambda rs: len(rs) >= want_fees),
                    consume_all([prefix + "dead-letters"], until=lambda rs: len(rs) >= want_dead),
                    consume_all([prefix + "advisories"], until=lambda rs: len(rs) >= want_adv),
                    consume_all([prefix + "policy-shadow"], until=lambda rs: len(rs) >= want_shd),
                )
            )

        rejections, fees, dead, advisories, shadows = asyncio.run(read())
        out: dict[str, Any] = defaultdict(
            lambda: {"rejections": [], "fees": [], "dead": 0, "advisories": [], "shadows": []}
        )
        for r in rejections:
            out[owner(r.json()["anchor_id"])]["rejections"].append(r.json())
        for f in fees:
            out[owner(f.json()["anchor_id"])]["fees"].append(f.json())
        for d in dead:
            out[owner((d.key or b"").decode())]["dead"] += 1
        for a in advisories:
            out[owner(a.json()["anchor_id"])]["advisories"].append(a.json())
        for h in shadows:
            out[owner(h.json()["anchor_id"])]["shadows"].append(h.json())
        assert set(out) <= {c.name for c in cases}, "outputs of no case"
        # one incarnation decided every case: its counters match the records
        m = worker.metrics()
        assert metric_value(m, "livecommerce_shadow_disagreements_total") == want_shd
        assert metric_value(m, "livecommerce_advisories_total") == want_adv
        yield out
    finally:
        worker.stop()
        print(worker.tail(20))


@pytest.mark.parametrize("case", CASES)
def test_case_real(case: Case, seen: dict[str, Any]) -> None:
    got = seen[case.name]
    case.check(got["rejections"], got["fees"], got["dead"], got["advisories"], got["shadows"])
