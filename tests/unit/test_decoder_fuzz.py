"""Hostile input against the decoder and the policy core: every record either becomes an event
that `decide` judges into schema-valid outputs, or raises DecodeError (a dead letter). Nothing
else may escape: an unexpected exception in the worker would stall a partition.

`hostile_records` is a seeded generator shared with tests/integration/test_hostile.py.
"""

from __future__ import annotations

import json
import random
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streams.codec import INPUTS, DecodeError, Decoder, load_validators
from streams.config import REPO_ROOT
from streams.names import DEAD_LETTERS
from streams.policy import (
    ChargeState,
    Decision,
    Order,
    State,
    TaskState,
    decide,
    load_policy,
    needed_keys,
)
from tests.unit.shell_fakes import DictState, home, input_record, make_step

TOPICS = tuple(INPUTS)  # cart-adds, orders, xingtu-tasks
VALIDATORS = load_validators(REPO_ROOT / "schemas")
DECODERS = {t: Decoder(t, VALIDATORS) for t in TOPICS}
POLICY = load_policy()
NOW_MS = 1_606_665_600_000  # 2020-11-30Z
T2020_MS = 1_600_000_000_000  # 2020-09-13
HUGE = 1_000_000  # ~1 MB: the broker's default maximum message size

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


# -- the oracle --------------------------------------------------------------------------------


def judge(topic: str, value: bytes | None, record_ms: int | None = T2020_MS) -> str:
    """Decode, and if that works decide with empty and with helpful state; check the outputs.

    Returns "dead" (DecodeError) or the outcome; any other exception fails the caller.
    """
    try:
        event = DECODERS[topic](value)
    except DecodeError as exc:
        assert str(exc), "a DecodeError must say why (it becomes the dead letter's header)"
        return "dead"
    outcome = _decide_checked(event, State(), record_ms)
    # Also with the state that makes fees happen: a matched task, and a charge for refunds.
    task_key, charge_key = needed_keys(event)
    task = None
    if task_key and getattr(event, "xingtu_task_id", None):
        task = TaskState(event.xingtu_task_id, event.anchor_id, event.product_id)
        task = task.with_transition(min(event.occurred_ms, record_ms or event.occurred_ms) - 1,
                                    "matched")
    charge = None
    if charge_key and isinstance(event, Order):
        charge = ChargeState(event.order_id, "e-charge", "third_party", 2000, 10**9, 0, "xt-1")
    if task is not None or charge is not None:
        _decide_checked(event, State(task=task, charge=charge), record_ms)
    return outcome


def _decide_checked(event: Any, state: State, record_ms: int | None) -> str:
    d = decide(event, state, POLICY, record_ms=record_ms, now_ms=NOW_MS)
    assert isinstance(d, Decision)
    assert d.outcome in ("accepted", "rejected", "applied")
    if d.rejection is not None:
        errors = [e.message for e in VALIDATORS["rejections"].iter_errors(d.rejection)]
        assert not errors, (d.rejection, errors)
        orjson.dumps(d.rejection)
    if d.fee is not None:
        errors = [e.message for e in VALIDATORS["fees"].iter_errors(d.fee)]
        assert not errors, (d.fee, errors)
        assert d.fee["fee_fen"] >= 0
        orjson.dumps(d.fee)
    if d.task is not None:
        TaskState.from_json(orjson.loads(orjson.dumps(d.task.to_json())))
    if d.charge is not None:
        ChargeState.from_json(orjson.loads(orjson.dumps(d.charge.to_json())))
    return d.outcome


# -- building blocks ---------------------------------------------------------------------------

WEIRD_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "主播🙂",
    "🙂" * 128,
    "🙂" * 129,
    "\u202eevil\u202c",  # RTL override
    "\u200b",  # zero-width space
    "\ufeff",  # BOM as text
    "x" * 128,
    "x" * 129,
    "\ud7ff\ue000\U0010ffff",
    "'; DROP TABLE orders; --",
    "../../etc/passwd",
    "%s%n%x",
    "\r\n\t",
)
WEIRD_NUMBERS: tuple[Any, ...] = (
    -1,
    0,
    1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    -(2**63),
    10**12,
    10**12 + 1,
    1.5,
    -0.0,
    1e12,
    1e308,
    1e-300,
)
WEIRD_VALUES: tuple[Any, ...] = (
    None, True, False, [], {}, [None], {"a": 1}, *WEIRD_NUMBERS, *WEIRD_STRINGS,
)
BAD_TIMES = (
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "10000-01-01T00:00:00Z",
    "2020-13-01T00:00:00Z",
    "2020-00-10T00:00:00Z",
    "2020-02-30T00:00:00Z",
    "2021-02-29T00:00:00Z",
    "2020-02-29T00:00:00Z",
    "2020-09-06T24:00:00+08:00",
    "2020-12-31T23:59:60Z",
    "2020-09-06T00:00:00",
    "2020-09-06 00:00:00+08:00",
    "2020-09-06t00:00:00z",
    "2020-09-06T00:00:00+24:00",
    "2020-09-06T00:00:00.123456789012345678901234567890+08:00",
    "2020-09-06T00:00:00,5Z",
    "2020-09-06",
    "1970-01-01T00:00:00Z",
    "1900-01-01T00:00:00+08:00",
    "2999-01-01T00:00:00Z",
    "２０２０-09-06T00:00:00Z",  # fullwidth digits
    "",
)


def valid_event(topic: str, i: int, rng: random.Random | None = None) -> dict[str, Any]:
    """A schema-valid event with ids derived from `i` (unique per i)."""
    r = rng or random.Random(i)
    at = f"2020-{r.randint(8, 11):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:00:00+08:00"
    anchor = f"h-anchor-{i % 97}"
    if topic == "xingtu-tasks":
        return {
            "event_id": f"h-{i}",
            "occurred_at": at,
            "task_id": f"h-xt-{i}",
            "anchor_id": anchor,
            "product_id": f"h-sku-{i}",
            "status": r.choice(("matched", "cancelled")),
        }
    event: dict[str, Any] = {
        "event_id": f"h-{i}",
        "occurred_at": at,
        "anchor_id": anchor,
        "room_id": f"h-room-{i % 7}",
        "channel": r.choice(("live", "live", "short_video")),
        "product_id": f"h-sku-{i % 13}",
        "product_source": r.choice(("douyin_shop", "taobao", "jd", "weird_src_9")),
        "xingtu_task_id": r.choice((None, f"h-xt-{i}")),
    }
    if topic == "orders":
        event.update(
            order_id=f"h-order-{i}",
            status=r.choice(("paid", "refunded")),
            amount_fen=r.randint(0, 10**7),
        )
    return event


def _nested(depth: int, obj: bool = False) -> bytes:
    if obj:
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"]" * depth


def _with_raw_field(event: dict[str, Any], field: str, raw_json: bytes) -> bytes:
    """The event with one field's JSON text replaced by `raw_json` (which may be invalid)."""
    marker = "\x01MARK\x01"
    event = {**event, field: marker}
    return orjson.dumps(event).replace(orjson.dumps(marker), raw_json)


# The hostile kinds: each builds one value from (rng, topic, base event, i).
Builder = Callable[[random.Random, str, dict[str, Any], int], bytes]


def _k_random_bytes(r: random.Random, t: str, e: dict[str, Any], i: int) -> bytes:
    return r.randbytes(r.randint(1, 300))


def _k_truncated(r: random.Random, t: str, e: dict[str, Any], i: int) -> bytes:
    full = orjson.dumps(e)
    return full[: r.randint(1, len(full) - 1)]


def _k_non_utf8(r: random.Random, t: str, e: dict[str, Any], i: int) -> bytes:
    full = orjson.dumps(e)
    bad = r.choice((b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88"))
    at = r.randint(1, len(full) - 2)
    return full[:at] + bad + full[at:]


def _k_deep(r: random.Random, t: str, e: dict[str, Any], i: int) -> bytes:
    depth = r.choice((1_000, 1_023, 1_100, 100_000))
    choice = r.randint(0, 2)
    if choice == 0:
        return _nested(depth, obj=r.random() < 0.5)
    if choice == 1:  # deep, but inside an extra field of an otherwise valid event
        return _with_raw_field(e, "extra", _nested(min(depth, 2_000)))
    return _with_raw_field(e, "event_id", _nested(depth))


def _k_wrong_type(r: random.Random, t: str, e: dict[str, Any], i: int) -> bytes:
    field = r.choice(sorted(e))
    value = r.choice(WEIRD_VALUES)
    if field == "event_id" and isinstance(value, str):
        value = f"{value}{i}"  # keep event ids unique when the value happens to be valid
    return json.dumps({**e, field: value}, ensure_ascii=r.random() < 0.5).encode()


def _k_amount(r: random.Random, t: str, e: dict[str, Any], i: int) -> bytes:
    value = r.choice((*WEIRD_NUMBERS, "100", None))
    raw = json.dumps(value).encode()
    if r.random() < 0.2:
        raw = r.choice((b"NaN", b"Infinity", b"-Infinity", b"1e400", b"0x10", b"01", b"1.", b"-"))
    return _with_raw_field(e, "amount_fen", raw)


def _k_time(r: random.Random, t: str, e: dict[str, Any], i: int) -> bytes:
    return orjson.dumps({**e, "occurred_at": r.choice(BAD_TIMES)})


def _k_unicode_ids(r: random.Random, t: str, e: dict[str, Any], i: int) -> bytes:
    out = dict(e)
    for field in ("event_id", "anchor_id", "product_id", "task_id", "order_id", "room_id"):
        if field in out and r.random() < 0.5:
            weird = r.choice(WEIRD_STRINGS)
            out[field] = f"{weird}{i}" if field == "event_id" else weird
    return orjson.dumps(out)


def _k_backdated_or_future(r: random.Random, t: str, e: dict[str, Any], i: int) -> bytes:
    at = r.choice((
        "1970-01-01T00:00:00Z",
        "2000-01-01T00:00:00+08:00",
        "2020-01-01T00:00:00+08:00",
        "2038-01-19T03:14:08Z",
        "2100-01-01T00:00:00+08:00",
        "9999-12-31T23:59:59.999Z",
        "0001-01-01T00:00:00Z",
    ))
    return orjson.dumps({**e, "occurred_at": at})


def _k_huge(r: random.Random, t: str, e: dict[str, Any], i: int) -> bytes:
    """About 900 KB (kept under the broker's ~1 MB limit with the dead letter's headers)."""
    size = 900_000
    choice = r.randint(0, 3)
    if choice == 0:  # schema-valid: extra fields are allowed
        return orjson.dumps({**e, "padding": "p" * size})
    if choice == 1:  # an id far beyond maxLength
        return orjson.dumps({**e, "product_id": "🙂" * (size // 4)})
    if choice == 2:
        return orjson.dumps({**e, "list": list(range(size // 8))})
    return b" " * size + orjson.dumps(e)  # leading whitespace is legal JSON


def _k_shapes(r: random.Random, t: str, e: dict[str, Any], i: int) -> bytes:
    return r.choice((
        b"",
        b"null",
        b"0",
        b'"event"',
        b"[]",
        b"{}",
        orjson.dumps([e]),
        b"\xef\xbb\xbf" + orjson.dumps(e),  # UTF-8 BOM
        orjson.dumps(e) + b" trailing",
        orjson.dumps(e) + orjson.dumps(e),
        b"\x00" * 16,
        orjson.dumps(e).replace(b"{", b'{"event_id":"dup",', 1),  # duplicate key
        orjson.dumps({k: v for k, v in e.items() if k != r.choice(sorted(e))}),
        b"\t\n " + orjson.dumps(e) + b"\r\n",
    ))


KINDS: dict[str, Builder] = {
    "random_bytes": _k_random_bytes,
    "truncated": _k_truncated,
    "non_utf8": _k_non_utf8,
    "deep": _k_deep,
    "wrong_type": _k_wrong_type,
    "amount": _k_amount,
    "time": _k_time,
    "unicode_ids": _k_unicode_ids,
    "backdated_or_future": _k_backdated_or_future,
    "huge": _k_huge,
    "shapes": _k_shapes,
}


def hostile_records(
    n: int, *, seed: int, huge_every: int = 500, id_prefix: str = "h"
) -> Iterator[tuple[str, bytes | None, bytes, int, str]]:
    """`n` hostile records (topic, key, value, timestamp_ms, kind), unprefixed topics.

    Seeded and deterministic. Every event id that can decode is unique (`id_prefix` + index), so
    records that happen to be valid are independent of each other and of any other traffic.
    Keys are mostly the event's anchor, sometimes missing or wrong (the worker re-routes those
    that decode). Every `huge_every`-th record is ~900 KB; 0 disables them.
    """
    rng = random.Random(seed)
    kinds = [k for k in KINDS if k != "huge"]
    for i in range(n):
        topic = TOPICS[rng.randrange(3)]
        base = valid_event(topic, i, rng)
        base["event_id"] = f"{id_prefix}-{seed}-{i}"
        kind = "huge" if huge_every and i % huge_every == huge_every - 1 else rng.choice(kinds)
        value = KINDS[kind](rng, topic, base, i)
        r = rng.random()
        key: bytes | None
        if r < 0.8:
            key = base["anchor_id"].encode()
        elif r < 0.9:
            key = None
        else:
            key = rng.randbytes(rng.randint(0, 40))
        ts = T2020_MS + rng.randint(-(10**10), 10**10)
        yield topic, key, value, ts, kind


# -- property tests ----------------------------------------------------------------------------

topics = st.sampled_from(TOPICS)


@settings(FUZZ, max_examples=800)
@given(topics, st.binary(max_size=4096))
@example("orders", b"[" * 100_000)
@example("cart-adds", b'{"a":' * 100_000)
@example("xingtu-tasks", b"\xff\xfe\xfd")
@example("orders", b"")
@example("orders", b"\x00")
def test_arbitrary_bytes(topic: str, value: bytes) -> None:
    judge(topic, value)


def test_none_value_is_a_dead_letter() -> None:
    for topic in TOPICS:
        assert judge(topic, None) == "dead"


@st.composite
def json_values(draw: st.DrawFn) -> Any:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from(WEIRD_NUMBERS),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=40),
        st.sampled_from(WEIRD_STRINGS),
    )
    return draw(
        st.recursive(
            leaves,
            lambda children: st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4),
            max_leaves=12,
        )
    )


ids = st.one_of(
    st.text(min_size=0, max_size=140),
    st.sampled_from(WEIRD_STRINGS),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=130),
)
times = st.one_of(
    st.sampled_from(BAD_TIMES),
    st.builds(
        "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}{}".format,
        st.integers(0, 10_000),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 60),
        st.integers(0, 61),
        st.sampled_from(("", ".5", ".123456789", ".1234567890123")),
        st.sampled_from(("", "Z", "z", "+08:00", "-00:00", "+23:59", "-24:00", "+8", "+08:60")),
    ),
    st.text(max_size=40),
)


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[str, bytes, int | None]:
    """A valid event with a few fields replaced, removed or added."""
    topic = draw(topics)
    i = draw(st.integers(0, 10**6))
    event = valid_event(topic, i)
    fields = sorted(event)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("replace", "id", "time", "amount", "delete", "add")))
        field = draw(st.sampled_from(fields))
        if op == "replace":
            event[field] = draw(json_values())
        elif op == "id":
            event[field] = draw(ids)
        elif op == "time":
            event["occurred_at"] = draw(times)
        elif op == "amount":
            event["amount_fen"] = draw(
                st.one_of(st.sampled_from(WEIRD_NUMBERS), st.integers(-(2**80), 2**80))
            )
        elif op == "delete":
            event.pop(field, None)
        else:
            event[draw(st.text(max_size=10))] = draw(json_values())
    # stdlib json: big ints (10**30) and non-ASCII as text or as \u escapes.
    raw = json.dumps(event, ensure_ascii=draw(st.booleans())).encode()
    record_ms = draw(
        st.one_of(
            st.none(),
            st.just(T2020_MS),
            st.integers(0, 2**41),
            st.integers(-(2**45), 2**45),
        )
    )
    return topic, raw, record_ms


@settings(FUZZ, max_examples=1500)
@given(mutated_events())
def test_mutated_events(case: tuple[str, bytes, int | None]) -> None:
    topic, raw, record_ms = case
    judge(topic, raw, record_ms)


@settings(FUZZ, max_examples=400)
@given(topics, st.integers(0, 10**6), st.data())
def test_truncated_and_corrupted_valid_json(topic: str, i: int, data: st.DataObject) -> None:
    full = orjson.dumps(valid_event(topic, i))
    assert judge(topic, full) != "dead"  # the untouched event is fine
    cut = data.draw(st.integers(0, len(full) - 1))
    assert judge(topic, full[:cut]) == "dead"  # any strict prefix of an object is broken JSON
    at = data.draw(st.integers(0, len(full)))
    junk = data.draw(st.binary(min_size=1, max_size=8))
    judge(topic, full[:at] + junk + full[at:])


@settings(FUZZ, max_examples=400)
@given(topics, st.integers(0, 10**6), times, st.sampled_from((None, 0, T2020_MS, 2**41)))
def test_timestamps(topic: str, i: int, at: str, record_ms: int | None) -> None:
    judge(topic, orjson.dumps({**valid_event(topic, i), "occurred_at": at}), record_ms)


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize(
    "amount", [-1, 0, 1, 2**63 - 1, 2**63, 2**64, 10**12, 10**12 + 1, 10**30, -(10**30)]
)
def test_extreme_amounts(topic: str, amount: int) -> None:
    event = {**valid_event("orders", 1), "status": "paid", "xingtu_task_id": "xt"}
    raw = _with_raw_field(event, "amount_fen", str(amount).encode())
    outcome = judge("orders", raw)
    assert (outcome != "dead") == (0 <= amount <= 10**12), (amount, outcome)
    judge(topic, raw)


@pytest.mark.parametrize("topic", TOPICS)
def test_huge_values(topic: str) -> None:
    e = valid_event(topic, 7)
    # A ~1 MB extra field is allowed by the schemas (additionalProperties) and ignored.
    assert judge(topic, orjson.dumps({**e, "padding": "x" * HUGE})) != "dead"
    assert judge(topic, orjson.dumps({**e, "anchor_id": "x" * HUGE})) == "dead"
    assert judge(topic, orjson.dumps({**e, "event_id": "🙂" * (HUGE // 4)})) == "dead"
    assert judge(topic, b"[" * HUGE) == "dead"
    assert judge(topic, b'"' + b"a" * HUGE) == "dead"
    assert judge(topic, orjson.dumps({**e, "padding": list(range(HUGE // 8))})) != "dead"


@pytest.mark.parametrize("topic", TOPICS)
def test_unicode_ids_decode_and_round_trip(topic: str) -> None:
    for weird in WEIRD_STRINGS:
        if not 1 <= len(weird) <= 128:
            continue
        e = {**valid_event(topic, 3), "anchor_id": weird, "product_id": weird}
        assert judge(topic, orjson.dumps(e)) != "dead", weird
        event = DECODERS[topic](json.dumps(e, ensure_ascii=True).encode())
        assert event.anchor_id == weird  # \u escapes decode to the same id
        assert event.anchor_id.encode("utf-8")  # the worker keys by this: must encode


@pytest.mark.parametrize("topic", TOPICS)
def test_deeply_nested_invalid_field_raises_decode_error(topic: str) -> None:
    e = valid_event(topic, 5)
    for depth in (300, 1_000, 1_023):
        with pytest.raises(DecodeError):
            DECODERS[topic](_with_raw_field(e, "event_id", _nested(depth)))


def test_processor_dead_letters_what_the_decoder_chokes_on() -> None:
    """The worker's record step (dict state, writes applied) over hostile records: nothing
    raises, and every undecodable record becomes one dead letter with its own bytes."""
    step = make_step(prefix="p-")
    state = DictState()
    outputs = []
    undecodable = 0
    for offset, (topic, key, value, ts, _kind) in enumerate(
        hostile_records(1_500, seed=23, huge_every=0)
    ):
        if judge(topic, value, ts) == "dead":
            undecodable += 1
            partition = offset % 4
        else:  # decodable: deliver it on its home partition, as the producer would
            partition = home(DECODERS[topic](value).anchor_id)
        r = state.apply(
            step(input_record(topic, value, offset=offset, partition=partition, key=key,
                              ts_ms=ts), state, NOW_MS)
        )
        outputs += r.outputs
        if judge(topic, value, ts) == "dead":
            assert r.outcome == "dead_letter" and len(r.outputs) == 1
            o = r.outputs[0]
            headers = dict(o.headers)
            assert (o.topic, o.key, o.value) == (DEAD_LETTERS, key, value)
            assert headers["source_topic"] == ("p-" + topic).encode()
            assert headers["source_offset"] == str(offset).encode()
            assert headers["error"]
    dead = [o for o in outputs if o.topic == DEAD_LETTERS]
    assert len(dead) == undecodable
    # The deeply nested ones jsonschema-rs cannot describe still end as schema dead letters.
    assert any(b"Recursion limit" in dict(o.headers)["error"] for o in dead), (
        "no deep nesting exercised"
    )


def test_hostile_generator_covers_every_kind_and_never_escapes() -> None:
    seen: Counter[tuple[str, str]] = Counter()
    for topic, _key, value, ts, kind in hostile_records(3_000, seed=11, huge_every=300):
        seen[(kind, judge(topic, value, ts))] += 1
    kinds = {k for k, _ in seen}
    assert kinds == set(KINDS), kinds
    dead = sum(n for (_, o), n in seen.items() if o == "dead")
    alive = sum(seen.values()) - dead
    # Mostly garbage, but some hostile records are valid events the worker must decide.
    assert dead > 1_500 and alive > 100, seen


def test_decoding_20k_hostile_records_keeps_memory_bounded() -> None:
    cases = list(hostile_records(20_000, seed=5, huge_every=400))
    # Plus a few ~1 MB ones beyond what the broker would accept, reused (not 50 copies held).
    big = orjson.dumps({**valid_event("orders", 1), "padding": "x" * HUGE})
    dead = 0
    tracemalloc.start()
    try:
        for n, (topic, _key, value, ts, _kind) in enumerate(cases):
            dead += judge(topic, value, ts) == "dead"
            if n % 400 == 0:
                judge("orders", big, ts)
        _, peak = tracemalloc.get_traced_memory()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"decoded {len(cases)} hostile records ({dead} dead): "
          f"tracemalloc peak {peak / 2**20:.1f} MiB, retained {current / 2**20:.1f} MiB")
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert current < 5 * 2**20, f"retained {current / 2**20:.1f} MiB after the loop"
