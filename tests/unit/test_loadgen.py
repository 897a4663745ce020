"""The load generator: deterministic, realistic, schema-true, and its reference model is useful."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections import Counter, defaultdict
from typing import Any, ClassVar

import pytest
from aiokafka.partitioner import murmur2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streams.loadgen.send as send_mod
from streams.codec import DecodeError, Decoder, load_validators
from streams.config import REPO_ROOT
from streams.loadgen import (
    ARRIVAL_ORDERS,
    Expected,
    Planned,
    arrange,
    expected_outputs,
    generate,
    send_planned,
)
from streams.loadgen.__main__ import parse_args
from streams.loadgen.expected import home_partition, merged_order
from streams.loadgen.generate import (
    OWN_SHOP_SOURCE,
    THIRD_PARTY_SOURCES,
    TOPIC_RANK,
    UNKNOWN_SOURCES,
)
from streams.policy import load_policy, parse_instant

N = 20_000
SEED = 11
TOPICS = ("xingtu-tasks", "cart-adds", "orders")


@pytest.fixture(scope="module")
def planned() -> list[Planned]:
    return generate(N, seed=SEED)


@pytest.fixture(scope="module")
def decoders() -> dict[str, Decoder]:
    validators = load_validators(REPO_ROOT / "schemas")
    return {t: Decoder(t, validators) for t in TOPICS}


@pytest.fixture(scope="module")
def expected(planned: list[Planned]) -> Expected:
    return expected_outputs(planned, load_policy())


def _valid(planned: list[Planned], *topics: str) -> list[dict[str, Any]]:
    return [p.event for p in planned if p.valid and p.event is not None and p.topic in topics]


# -- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_identical_output() -> None:
    assert generate(3000, seed=5) == generate(3000, seed=5)


def test_different_seeds_differ() -> None:
    a, b = generate(3000, seed=5), generate(3000, seed=6)
    assert [p.value for p in a] != [p.value for p in b]
    assert not {p.event["event_id"] for p in a if p.event} & {
        p.event["event_id"] for p in b if p.event
    }


def test_size_and_edge_cases() -> None:
    assert generate(0, seed=1) == []
    assert len(generate(1, seed=1)) == 1
    assert len(generate(7, seed=1, malformed_share=1.0)) == 7
    assert all(not p.valid for p in generate(50, seed=1, malformed_share=1.0))
    assert all(p.valid for p in generate(500, seed=1, malformed_share=0.0))
    with pytest.raises(ValueError):
        generate(-1, seed=1)
    with pytest.raises(ValueError):
        generate(10, seed=1, malformed_share=1.5)
    with pytest.raises(ValueError):
        generate(10, seed=1, anchors=0)


def test_generation_is_fast() -> None:
    started = time.perf_counter()
    generate(50_000, seed=3)
    # ~0.5 s on a laptop; the bound only catches an accidental quadratic step.
    assert time.perf_counter() - started < 10


# -- the mix -------------------------------------------------------------------------------


def test_all_topics_statuses_and_channels(planned: list[Planned]) -> None:
    assert {p.topic for p in planned} == set(TOPICS)
    statuses = Counter(e["status"] for e in _valid(planned, "orders", "xingtu-tasks"))
    assert {"paid", "refunded", "matched", "cancelled"} <= set(statuses)
    sales = _valid(planned, "cart-adds", "orders")
    channels = Counter(e["channel"] for e in sales)
    assert 0.80 < channels["live"] / len(sales) < 0.90
    assert channels["short_video"] > 0
    # Short videos carry a null or no room; live always names one.
    assert all(e["room_id"] for e in sales if e["channel"] == "live")
    rooms = {"room_id" in e for e in sales if e["channel"] == "short_video"}
    assert rooms == {True, False}


def test_source_classes(planned: list[Planned]) -> None:
    sales = [e for e in _valid(planned, "cart-adds", "orders") if e.get("status") != "refunded"]
    sources = Counter(e["product_source"] for e in sales)
    total = len(sales)
    own = sources[OWN_SHOP_SOURCE] / total
    third = sum(sources[s] for s in THIRD_PARTY_SOURCES) / total
    unknown = sum(sources[s] for s in UNKNOWN_SOURCES) / total
    assert 0.55 < own < 0.65
    assert 0.30 < third < 0.40
    assert 0.03 < unknown < 0.07
    assert set(THIRD_PARTY_SOURCES) | set(UNKNOWN_SOURCES) | {OWN_SHOP_SOURCE} == set(sources)


def test_times_cross_every_rule_boundary(planned: list[Planned]) -> None:
    policy = load_policy()
    bounds = sorted(
        (
            policy.service_fee_from_ms,
            policy.xingtu_match_required_from_ms,
            policy.third_party_cart_banned_from_ms,
        )
    )
    times = [parse_instant(e["occurred_at"]) for e in _valid(planned, *TOPICS)]
    lo, hi = parse_instant("2020-08-10T00:00:00+08:00"), parse_instant("2020-11-30T00:00:00+08:00")
    assert all(lo <= t < hi for t in times)
    edges = [lo, *bounds, hi]
    for a, b in itertools.pairwise(edges):
        assert sum(a <= t < b for t in times) > 100, (a, b)


def test_event_ids_unique_and_keys_are_anchors(planned: list[Planned]) -> None:
    ids = [p.event["event_id"] for p in planned if p.event]
    assert len(ids) == len(set(ids))
    for p in planned:
        assert p.key  # malformed records keep a key too
        if p.event is not None:
            assert p.key == p.event["anchor_id"].encode()
    assert any(not p.key.isascii() for p in planned if p.key)  # some UTF-8 anchor ids


def test_record_timestamps_mostly_occurred_at_a_few_backdated(planned: list[Planned]) -> None:
    valid = [p for p in planned if p.valid and p.event]
    backdated = 0
    for p in valid:
        assert p.event is not None
        lag = p.timestamp_ms - parse_instant(p.event["occurred_at"])
        assert lag == 0 or lag > 300_000
        backdated += lag > 300_000
    assert 0.003 < backdated / len(valid) < 0.02


def test_one_plan_interleaved_in_timestamp_order_and_uses_follow_matches(
    planned: list[Planned],
) -> None:
    # The default plan: every record by (record timestamp, topic rank), tasks and sales mixed.
    keys = [(p.timestamp_ms, TOPIC_RANK[p.topic]) for p in planned]
    assert keys == sorted(keys)
    first_sale = next(i for i, p in enumerate(planned) if p.topic != "xingtu-tasks")
    assert any(p.topic == "xingtu-tasks" for p in planned[first_sale:])  # not tasks first
    matched: dict[str, int] = {}
    for e in _valid(planned, "xingtu-tasks"):
        if e["status"] == "matched":
            t = parse_instant(e["occurred_at"])
            matched[e["task_id"]] = min(t, matched.get(e["task_id"], t))
    sales = _valid(planned, "cart-adds", "orders")
    uses = [e for e in sales if e.get("xingtu_task_id")]
    assert len(uses) > 0.2 * len(sales)
    for e in uses:
        assert e["xingtu_task_id"] in matched
        assert matched[e["xingtu_task_id"]] < parse_instant(e["occurred_at"])


@pytest.mark.parametrize("arrival", ARRIVAL_ORDERS)
def test_arrival_orders_reorder_topics_only(planned: list[Planned], arrival: str) -> None:
    got = generate(N, seed=SEED, arrival=arrival)
    assert got == arrange(planned, arrival)
    assert sorted(p.value for p in got) == sorted(p.value for p in planned)  # same records
    for topic in TOPICS:  # each topic (so each topic-partition log) in the same order
        assert [p for p in got if p.topic == topic] == [p for p in planned if p.topic == topic]
    n_tasks = sum(p.topic == "xingtu-tasks" for p in got)
    if arrival == "tasks-first":
        assert {p.topic for p in got[:n_tasks]} == {"xingtu-tasks"}
    elif arrival == "tasks-last":
        assert {p.topic for p in got[-n_tasks:]} == {"xingtu-tasks"}
    assert arrange(got, "interleaved") == planned
    with pytest.raises(ValueError):
        generate(10, seed=1, arrival="sideways")


def test_some_sales_name_a_task_of_another_anchor_or_product(planned: list[Planned]) -> None:
    tasks = {
        e["task_id"]: (e["anchor_id"], e["product_id"]) for e in _valid(planned, "xingtu-tasks")
    }
    wrong = right = 0
    for e in _valid(planned, "cart-adds", "orders"):
        tid = e.get("xingtu_task_id")
        if tid:
            if tasks[tid] == (e["anchor_id"], e["product_id"]):
                right += 1
            else:
                wrong += 1
    assert right > 3 * wrong > 0


def test_refunds_follow_their_paid_orders(planned: list[Planned]) -> None:
    paid: dict[str, tuple[int, dict[str, Any]]] = {}
    refunded: dict[str, int] = defaultdict(int)
    refunds = full = 0
    for i, p in enumerate(planned):
        e = p.event
        if p.topic != "orders" or e is None:
            continue
        if e["status"] == "paid":
            assert e["order_id"] not in paid
            paid[e["order_id"]] = (i, e)
            continue
        refunds += 1
        j, pe = paid[e["order_id"]]
        assert j < i
        assert parse_instant(pe["occurred_at"]) < parse_instant(e["occurred_at"])
        assert planned[j].timestamp_ms < p.timestamp_ms  # also after a backdated payment
        for f in ("anchor_id", "product_id", "product_source", "channel"):
            assert e[f] == pe[f]
        assert pe.get("xingtu_task_id") == e.get("xingtu_task_id")
        assert 0 < e["amount_fen"] <= pe["amount_fen"]
        refunded[e["order_id"]] += e["amount_fen"]
        assert refunded[e["order_id"]] <= pe["amount_fen"]
        full += e["amount_fen"] == pe["amount_fen"]
    assert refunds > 0.1 * len(paid)
    assert 0 < full < refunds  # both full and partial refunds


# -- validity ------------------------------------------------------------------------------


def test_valid_records_decode_and_malformed_ones_do_not(
    planned: list[Planned], decoders: dict[str, Decoder]
) -> None:
    errors: Counter[str] = Counter()
    for p in planned:
        if p.valid:
            event = decoders[p.topic](p.value)
            assert event.event_id == p.event["event_id"]  # type: ignore[index]
        else:
            with pytest.raises(DecodeError) as info:
                decoders[p.topic](p.value)
            errors[str(info.value).split(":")[0]] += 1
    # Empty, not JSON / not UTF-8 / truncated, not an object, and schema violations all occur.
    assert set(errors) == {"empty value", "not UTF-8 JSON", "not a JSON object but list", "schema"}


@pytest.mark.parametrize("share", [0.0, 0.01, 0.05, 0.2])
def test_malformed_share_within_tolerance(share: float) -> None:
    got = generate(10_000, seed=2, malformed_share=share)
    bad = sum(not p.valid for p in got)
    assert abs(bad / len(got) - share) <= 0.002
    assert all(p.event is None for p in got if not p.valid)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 400),
    seed=st.integers(-(2**31), 2**31),
    share=st.sampled_from([0.0, 0.01, 0.3]),
    anchors=st.integers(1, 30),
)
def test_any_seed_gives_decodable_records(n: int, seed: int, share: float, anchors: int) -> None:
    validators = load_validators(REPO_ROOT / "schemas")
    decoders = {t: Decoder(t, validators) for t in TOPICS}
    got = generate(n, seed=seed, malformed_share=share, anchors=anchors)
    assert len(got) == n
    for p in got:
        if p.valid:
            decoders[p.topic](p.value)
        else:
            with pytest.raises(DecodeError):
                decoders[p.topic](p.value)
    exp = expected_outputs(got)
    assert sum(exp.events_by_topic_outcome.values()) == n


# -- the reference model -------------------------------------------------------------------


def test_expected_has_both_reasons_classes_and_kinds(
    planned: list[Planned], expected: Expected
) -> None:
    reasons = {r for (_, r) in expected.rejections_by_subject_reason}
    subjects = {s for (s, _) in expected.rejections_by_subject_reason}
    assert reasons == {"XINGTU_MATCH_REQUIRED", "THIRD_PARTY_CART_BANNED"}
    assert subjects == {"cart_add", "order"}
    assert set(expected.fee_fen_by_class_kind) == {
        ("third_party", "charge"),
        ("third_party", "reversal"),
        ("douyin_shop", "charge"),
        ("douyin_shop", "reversal"),
    }
    assert all(v > 0 for v in expected.fee_fen_by_class_kind.values())


def test_expected_counts_are_consistent(planned: list[Planned], expected: Expected) -> None:
    total = sum(expected.fee_fen_by_class_kind.values())
    assert type(total) is int
    assert type(expected.fee_fen_net) is int
    assert expected.fee_fen_net >= 0  # reversals never exceed charges
    assert sum(expected.events_by_topic_outcome.values()) == len(planned)
    assert expected.dead_letters == sum(not p.valid for p in planned)
    assert expected.dead_letters == sum(
        n for (_, o), n in expected.events_by_topic_outcome.items() if o == "dead_letter"
    )
    assert len(expected.rejection_ids) == sum(expected.rejections_by_subject_reason.values())
    rejected = sum(n for (_, o), n in expected.events_by_topic_outcome.items() if o == "rejected")
    assert rejected == len(expected.rejection_ids)
    assert all(r.startswith("rej:") for r in expected.rejection_ids)
    assert all(f.startswith("fee:") for f in expected.fee_ids)
    applied = expected.events_by_topic_outcome[("xingtu-tasks", "applied")]
    assert applied == sum(p.valid for p in planned if p.topic == "xingtu-tasks")


def test_expected_is_deterministic(planned: list[Planned], expected: Expected) -> None:
    assert expected_outputs(planned) == expected


@pytest.mark.parametrize("arrival", ["tasks-first", "tasks-last"])
def test_expected_is_the_same_for_every_arrival_order(
    planned: list[Planned], expected: Expected, arrival: str
) -> None:
    # The logs per topic-partition are the same, so the merge over them is too (a backlog).
    # Issue 12, Why 4: with tasks last, a replay in produce order would judge sales before the
    # tasks they name; the merge takes each task at its timestamp.
    assert expected_outputs(arrange(planned, arrival)) == expected


@pytest.mark.parametrize("partitions", [1, 3])
def test_expected_does_not_depend_on_the_partition_count_for_generated_plans(
    planned: list[Planned], expected: Expected, partitions: int
) -> None:
    # Generated logs are in timestamp order and state is per anchor, so the merge per partition
    # number is the global timestamp order restricted to it, whatever the count.
    got = expected_outputs(planned, partitions=partitions)
    assert got.rejection_ids == expected.rejection_ids
    assert got.fee_ids == expected.fee_ids
    assert got.events_by_topic_outcome == expected.events_by_topic_outcome


def _record(topic: str, key: bytes, ts: int, value: bytes = b"") -> Planned:
    """A record for order tests: an empty value is unreadable (dead-lettered where it is)."""
    return Planned(topic, key, value, ts, False, None)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(TOPICS), st.sampled_from([b"a", b"b", b"c", b"d"]),
            st.integers(0, 20),
        ),
        max_size=60,
    ),
    st.integers(1, 4),
)
def test_merged_order_keeps_log_order_and_takes_the_smallest_head(
    spec: list[tuple[str, bytes, int]], partitions: int
) -> None:
    plan = [_record(topic, key, ts, str(i).encode()) for i, (topic, key, ts) in enumerate(spec)]
    got = [(part, p) for part, p, _ in merged_order(plan, partitions)]
    assert sorted(p.value for _, p in got) == sorted(p.value for p in plan)  # each once
    logs: dict[tuple[int, str], list[Planned]] = defaultdict(list)
    for p in plan:
        logs[(home_partition(p.key, partitions), p.topic)].append(p)
    taken: dict[tuple[int, str], int] = defaultdict(int)
    parts = [part for part, _ in got]
    assert parts == sorted(parts)  # partition numbers one after another
    for part, p in got:
        log = logs[(part, p.topic)]
        assert log[taken[(part, p.topic)]] is p  # the head of its own log: log order kept
        # ... and no other log of the partition number had a smaller head.
        for topic in TOPICS:
            other = logs[(part, topic)]
            k = taken[(part, topic)]
            if topic != p.topic and k < len(other):
                assert (other[k].timestamp_ms, TOPIC_RANK[topic]) > (
                    p.timestamp_ms, TOPIC_RANK[p.topic]
                )
        taken[(part, p.topic)] += 1


def test_merged_order_takes_an_older_record_after_a_newer_one_in_the_same_log() -> None:
    # orders log: t=50 then t=10; cart-adds log: t=20. Heads: orders 50, cart-adds 20 -> the
    # cart-add, then orders 50, then orders 10 (log order kept although it is older).
    plan = [
        _record("orders", b"a", 50, b"o50"),
        _record("orders", b"a", 10, b"o10"),
        _record("cart-adds", b"a", 20, b"c20"),
        _record("xingtu-tasks", b"a", 20, b"t20"),  # tie at 20: the task first
    ]
    assert [p.value for _, p, _ in merged_order(plan, 1)] == [b"t20", b"c20", b"o50", b"o10"]


def test_a_record_keyed_to_another_partition_is_decided_at_its_anchors_end(
    planned: list[Planned],
) -> None:
    partitions = 4
    sale = next(p for p in planned if p.topic == "cart-adds" and p.valid)
    assert sale.event is not None
    home = home_partition(sale.key, partitions)
    wrong_key = next(
        k for k in (f"k{i}".encode() for i in range(100))
        if home_partition(k, partitions) != home
    )
    moved = Planned(sale.topic, wrong_key, sale.value, sale.timestamp_ms, True, sale.event)
    plan = [moved if p is sale else p for p in planned]
    order = [(part, p) for part, p, _ in merged_order(plan, partitions)]
    assert sum(p is moved for _, p in order) == 1
    i = next(i for i, (_, p) in enumerate(order) if p is moved)
    assert order[i][0] == home
    # After every other cart-add of its home partition: it was re-appended to that log.
    later = [p for part, p in order[i + 1 :] if part == home and p.topic == "cart-adds"]
    assert later == []
    # Decided once (its outcome may differ: it is decided later than in its own place).
    assert sum(expected_outputs(plan).events_by_topic_outcome.values()) == len(planned)


# -- sending (with a stand-in producer) ----------------------------------------------------


class _FakeBuilder:
    def __init__(self, limit: int) -> None:
        self.records: list[tuple[int, bytes | None, bytes]] = []
        self.limit = limit

    def append(self, *, timestamp: int, key: bytes | None, value: bytes) -> object | None:
        if len(self.records) >= self.limit:
            return None
        self.records.append((timestamp, key, value))
        return object()


class _FakeMetadata:
    def __init__(self, topics: set[str]) -> None:
        self.topics = topics

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0, 1, 2, 3} if topic in self.topics else None


class _FakeProducer:
    """Just enough of AIOKafkaProducer: records what reached each partition, in order."""

    sent: dict[tuple[str, int], list[tuple[int, bytes | None, bytes]]]
    topics: ClassVar[set[str]] = set()
    last: ClassVar[_FakeProducer]

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.sent = defaultdict(list)
        _FakeProducer.last = self
        outer = self

        class _Client:
            async def fetch_all_metadata(self) -> _FakeMetadata:
                return _FakeMetadata(outer.topics)

        self.client = _Client()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def create_batch(self) -> _FakeBuilder:
        return _FakeBuilder(limit=7)

    async def send_batch(self, batch: _FakeBuilder, topic: str, *, partition: int) -> Any:
        self.sent[(topic, partition)].extend(batch.records)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


@pytest.mark.parametrize("arrival", ARRIVAL_ORDERS)
async def test_send_planned_keeps_partition_order(
    monkeypatch: pytest.MonkeyPatch, arrival: str
) -> None:
    monkeypatch.setattr(send_mod, "AIOKafkaProducer", _FakeProducer)
    _FakeProducer.topics = {f"p-{t}" for t in TOPICS}
    got = generate(3000, seed=4, arrival=arrival)
    stats = await send_planned(
        got, bootstrap="kafka://x:9092", prefix="p-", rate=0, progress=False
    )
    assert (stats.sent, stats.errors, stats.queued) == (len(got), 0, len(got))
    assert stats.malformed == sum(not p.valid for p in got)
    assert stats.by_topic == dict(Counter(p.topic for p in got))
    assert _FakeProducer.last.options["acks"] == "all"
    want: dict[tuple[str, int], list[tuple[int, bytes | None, bytes]]] = defaultdict(list)
    for p in got:
        assert p.key is not None
        part = (murmur2(p.key) & 0x7FFFFFFF) % 4
        want[("p-" + p.topic, part)].append((p.timestamp_ms, p.key, p.value))
    assert dict(_FakeProducer.last.sent) == dict(want)


async def test_send_planned_paces_to_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(send_mod, "AIOKafkaProducer", _FakeProducer)
    _FakeProducer.topics = {t for t in TOPICS}
    got = generate(300, seed=4)
    stats = await send_planned(got, bootstrap="x:1", rate=1000, progress=False)
    assert stats.sent == 300
    assert 0.2 < stats.elapsed_s < 1.5
    assert 200 < stats.rate < 1500


async def test_send_planned_waits_for_topics_then_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(send_mod, "AIOKafkaProducer", _FakeProducer)
    _FakeProducer.topics = set()
    with pytest.raises(send_mod.TopicsMissing, match="cart-adds"):
        await send_planned(
            generate(10, seed=1), bootstrap="x:1", progress=False, topic_wait_s=0.5
        )


async def test_send_planned_stops_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(send_mod, "AIOKafkaProducer", _FakeProducer)
    _FakeProducer.topics = {t for t in TOPICS}
    got = generate(20_000, seed=1)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    stats = await send_planned(got, bootstrap="x:1", rate=1000, progress=False, stop=stop)
    assert stats.interrupted
    assert 0 < stats.sent < 2000


# -- the command line ----------------------------------------------------------------------


def test_cli_help_exits_zero() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streams.loadgen", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    for flag in (
        "--broker", "--prefix", "--rate", "--count", "--duration", "--seed", "--arrival", "--quiet"
    ):
        assert flag in proc.stdout


def test_cli_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMS_BROKER", "kafka://b:1")
    monkeypatch.setenv("STREAMS_TOPIC_PREFIX", "x-")
    args = parse_args([])
    assert (args.broker, args.prefix, args.count, args.rate, args.seed) == (
        "kafka://b:1",
        "x-",
        10_000,
        200.0,
        1,
    )
    assert parse_args([]).arrival == "interleaved"
    assert parse_args(["--arrival", "tasks-last"]).arrival == "tasks-last"
    with pytest.raises(SystemExit):
        parse_args(["--arrival", "random"])
    assert parse_args(["--rate", "50", "--duration", "3"]).count == 150
    with pytest.raises(SystemExit):
        parse_args(["--rate", "0", "--duration", "3"])
    with pytest.raises(SystemExit):
        parse_args(["--count", "5", "--duration", "3"])
    with pytest.raises(SystemExit):
        parse_args(["--malformed-share", "2"])
