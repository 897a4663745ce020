"""Policy versions on the real policies topic, with a running worker (#14): a version published
while the worker runs applies from its effective_from with no restart; malformed and
inconsistent records are refused and the worker decides on; a replay with a new app id gives
the same outputs; advisories and shadow records exactly once across a SIGKILL; the CLI's
`list` reads what the worker reads."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.loadgen import expected_outputs, generate, send_planned
from streams.policy.policy_file import read_policy_file
from streams.policy.versions import PolicyBook, parse_document_toml, seed_document
from tests.cases import MATCHED_EARLY, SEED, Case, order, task, variant
from tests.integration.harness import (
    BOOTSTRAP,
    Worker,
    consume_all,
    metric_value,
    produce,
    wait_metric,
)
from tests.integration.test_reliability import Load, assert_exact, check_outputs

pytestmark = pytest.mark.integration

V3 = "douyin-2020-12-01"
V3_DOC = variant(
    V3, "2020-12-01T00:00:00+08:00", "enforced",
    ("own_shop_rate_bps = 500", "own_shop_rate_bps = 1000"),
)


def cli(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.policy", *args],
        env=worker.env(), capture_output=True, text=True, timeout=60,
    )


def publish(worker: Worker, tmp: Path, name: str, text: str) -> None:
    path = tmp / f"{name}.toml"
    path.write_text(text)
    done = cli(worker, "publish", str(path))
    assert done.returncode == 0, done.stderr
    assert f"published {name}" in done.stdout


def sale(ns: str, when: str, oid: str) -> list[tuple[str, bytes, bytes, int]]:
    """A matched own-shop order of anchor `<ns>-A` (fee at the own-shop rate)."""
    return Case("sale", (order(when, 10_000, "douyin_shop", oid=oid),)).records(ns)


async def fees_of(prefix: str, n: int) -> list[dict[str, Any]]:
    records = await consume_all([prefix + "fees"], until=lambda rs: len(rs) >= n, idle=2)
    return [r.json() for r in records]


async def test_a_version_published_while_running_applies_by_event_time_and_replays_alike(
    make_worker: Any, tmp_path: Path
) -> None:
    w: Worker = make_worker().start()
    pid = w.proc.pid if w.proc else None
    prefix = w.prefix
    ns = "live"
    await produce(
        [(prefix + t, k, v, ts) for t, k, v, ts in Case("t", (task(MATCHED_EARLY),)).records(ns)]
        + [(prefix + t, k, v, ts) for t, k, v, ts in sale(ns, "2020-11-30T10:00", "ord-1")]
    )
    (first,) = await fees_of(prefix, 1)
    assert (first["fee_fen"], first["policy_version"]) == (500, SEED)

    # a new version, a malformed record and one whose key is not its version, while it runs
    publish(w, tmp_path, V3, V3_DOC)
    wrong = parse_document_toml(variant("other", "2021-01-01T00:00:00+08:00", "enforced"))
    await produce(
        [
            (prefix + "policies", b"broken", b"{not json", None),
            (prefix + "policies", b"not-its-version", wrong.to_json(), None),
        ]
    )
    await wait_metric(w, "livecommerce_policy_refused_total", 2)
    await wait_metric(w, "livecommerce_policy_versions", 2, mode="enforced")
    await produce(
        [(prefix + t, k, v, ts) for t, k, v, ts in sale(ns, "2020-11-30T23:59", "ord-2")]
        + [(prefix + t, k, v, ts) for t, k, v, ts in sale(ns, "2020-12-02T10:00", "ord-3")]
    )
    fees = {f["order_id"].removeprefix(f"{ns}-"): f for f in await fees_of(prefix, 3)}
    assert {k: (f["fee_fen"], f["policy_version"]) for k, f in fees.items()} == {
        "ord-1": (500, SEED),
        "ord-2": (500, SEED),  # before the new version's effective_from
        "ord-3": (1000, V3),
    }
    assert w.proc is not None and w.proc.poll() is None and w.proc.pid == pid, "restarted"
    text = w.metrics()
    assert metric_value(text, "livecommerce_policy_in_force", version=V3) == 1
    assert "refused" in w.tail(200)

    listed = cli(w, "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{V3}  mode=enforced" in listed.stdout and "ENFORCED NOW" in listed.stdout
    assert listed.stderr.count("refused") == 2

    # a replay from the beginning with a new app id: the same fees, id by id, value by value
    replay: Worker = make_worker(app_id=f"{w.app_id}-replay").start()
    records = await fees_of(prefix, 6)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for f in records:
        by_id.setdefault(f["fee_id"], []).append(f)
    assert Counter(len(v) for v in by_id.values()) == Counter({2: 3}), records
    for live, again in by_id.values():
        assert live == again
    replay.stop()


async def test_advisories_and_shadow_records_exactly_once_across_sigkills(
    make_worker: Any, tmp_path: Path
) -> None:
    """A shadow version runs beside the enforced one over a generated load; the worker is
    killed twice while deciding it; every advisory and shadow record the reference model
    expects arrives exactly once."""
    shadow_text = variant(
        "shadow-rates", "1970-01-01T00:00:00Z", "shadow",
        ("third_party_rate_bps = 2000", "third_party_rate_bps = 2500"),
        ("effective_from = 2020-10-09T00:00:00+08:00",
         "effective_from = 2020-10-01T00:00:00+08:00"),
    )
    book_docs = [seed_document(*read_policy_file()), parse_document_toml(shadow_text, "shadow")]
    planned = generate(12_000, seed=1414)
    load = Load(planned, expected_outputs(planned, book=PolicyBook(book_docs)))
    assert load.expected.advisory_ids and load.expected.shadow_ids

    w: Worker = make_worker().start()
    publish(w, tmp_path, "shadow-rates", shadow_text)
    await wait_metric(w, "livecommerce_policy_versions", 1, mode="shadow")
    w.pause()  # a backlog: the kills land while it is being decided
    try:
        stats = await send_planned(planned, bootstrap=BOOTSTRAP, prefix=w.prefix, progress=False)
    finally:
        w.resume()
    assert stats.errors == 0
    for _ in range(2):
        await asyncio.sleep(1.5)
        await asyncio.to_thread(w.kill)
        await asyncio.to_thread(w.start, True, 120)
    v = await check_outputs(load, w.prefix)
    assert_exact(v, load, f"advisories and shadow records across SIGKILLs\n{v.text}")
    shadow = await consume_all([w.prefix + "policy-shadow"], until=lambda rs: len(rs) >= 1)
    rec = orjson.loads(shadow[0].value or b"")
    assert rec["shadow_version"] == "shadow-rates" and rec["enforced_version"] == SEED
