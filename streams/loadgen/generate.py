"""A pure, seeded generator of realistic input records (and a few deliberately broken ones).

Everything is decided by `random.Random(seed)`, so a run can be replayed exactly and its expected
outputs computed offline (see `expected.py`). Events are built as dicts and serialised with
orjson: 200k records take a couple of seconds.

One plan, one phase: the returned list is the order in which the records are to be produced
(`send_planned` keeps it within every topic-partition, so it is each partition's log order).
`arrival` chooses that order; the records, their keys and their timestamps (CreateTime = the
event's `occurred_at`, a few deliberately later) are the same whatever it is:

* `interleaved` (default): every record in record-timestamp order, ties broken as the worker's
  merge does (xingtu-tasks, then cart-adds, then orders, then generation order). A worker that
  merges its three input partitions by timestamp then decides live traffic in the same order as a
  backlog: nothing it has not yet received is older than what it has.
* `tasks-first`: every xingtu-tasks record, then the cart-adds and orders, each part in that order.
* `tasks-last`: the cart-adds and orders, then every xingtu-tasks record: a task reaches the log
  after sales that happened later in event time. Only a worker that finds the tasks already in
  the log (a backlog) can still decide those sales after their task.

Within one topic the three orders are the same list, so each topic-partition's log is identical
and a backlog must give identical outputs (see `expected.py`). Every use of a task happens after
its match in event time, and every refund after its paid order's record timestamp.
"""

from __future__ import annotations

import gc
import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson

from streams.names import CART_ADDS, INPUT_TOPICS, ORDERS, XINGTU_TASKS
from streams.policy import format_instant, parse_instant

TASKS = XINGTU_TASKS
TOPICS = INPUT_TOPICS

DEFAULT_START = "2020-08-10T00:00:00+08:00"
DEFAULT_END = "2020-11-30T00:00:00+08:00"

OWN_SHOP_SOURCE = "douyin_shop"
THIRD_PARTY_SOURCES = ("taobao", "tmall", "jd", "pinduoduo", "kaola", "vipshop", "suning")
UNKNOWN_SOURCES = ("newmall_x", "livebuy_2020", "weishang_q")

# The mix (shares of valid events unless said otherwise).
OWN_SHOP_SHARE = 0.60  # product sources: douyin_shop / listed third-party / never-heard-of
THIRD_PARTY_SHARE = 0.35  # the remaining ~5% are unknown sources (judged third-party)
LIVE_SHARE = 0.85  # the rest are short_video
TASK_EVENT_SHARE = 0.10  # xingtu-tasks records among valid events
CANCEL_SHARE = 0.20  # tasks later cancelled
REMATCH_SHARE = 0.25  # cancelled tasks matched again later
CART_ADD_SHARE = 0.45  # of sales events; the rest are orders
REFUND_SHARE = 0.18  # of orders: refunds of earlier paid orders
VALID_TASK_SHARE = 0.35  # sales carrying a task matched to their anchor and product
WRONG_TASK_SHARE = 0.10  # sales carrying a real task of another anchor or product
FULL_REFUND_SHARE = 0.5
BACKDATE_SHARE = 0.01  # occurred_at > 300 s before the record timestamp
BACKDATE_MIN_S = 301
BACKDATE_MAX_S = 7200
UTC_FORMAT_SHARE = 0.10  # occurred_at written in UTC with "Z" instead of +08:00
NON_ASCII_ANCHOR_EVERY = 25  # every 25th anchor id is non-ASCII, to exercise UTF-8 keys

MALFORMED_KINDS = (
    "not_json",
    "truncated_json",
    "non_utf8",
    "empty",
    "json_array",
    "missing_field",
    "wrong_type",
    "negative_amount",
    "no_offset",
)

_CST_S = 8 * 3600
_CST_MS = _CST_S * 1000
_DAY_S = 86_400
_REQUIRED = {
    CART_ADDS: ("event_id", "occurred_at", "anchor_id", "channel", "product_id", "product_source"),
    ORDERS: (
        "event_id",
        "occurred_at",
        "order_id",
        "status",
        "anchor_id",
        "channel",
        "product_id",
        "product_source",
        "amount_fen",
    ),
    TASKS: ("event_id", "occurred_at", "task_id", "anchor_id", "product_id", "status"),
}


@dataclass(frozen=True, slots=True)
class Planned:
    """One record to produce; `event` is the dict behind `value` (None when malformed)."""

    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int
    valid: bool
    event: dict[str, Any] | None


@dataclass(slots=True)
class _Task:
    task_id: str
    anchor: int
    product: tuple[str, str]
    match_s: int


@dataclass(slots=True)
class _Paid:
    event: dict[str, Any]
    last_s: int
    remaining: int


ARRIVAL_ORDERS = ("interleaved", "tasks-first", "tasks-last")
"""How a plan orders its records for producing; see the module doc."""
TOPIC_RANK = {TASKS: 0, CART_ADDS: 1, ORDERS: 2}
"""Tie-break between topics at equal timestamps: tasks first, as the worker's merge does."""


def arrange(planned: list[Planned], arrival: str) -> list[Planned]:
    """`planned` (any arrival order) re-ordered for `arrival`: a stable split by topic, so each
    topic's records keep their relative order (and each topic-partition its log)."""
    if arrival not in ARRIVAL_ORDERS:
        raise ValueError(f"arrival must be one of {', '.join(ARRIVAL_ORDERS)}, got {arrival!r}")
    if arrival == "interleaved":
        # Each topic's list is already in (timestamp, generation) order; a stable sort by
        # (timestamp, topic rank) merges them back into the interleaved plan.
        return sorted(planned, key=lambda p: (p.timestamp_ms, TOPIC_RANK[p.topic]))
    tasks = [p for p in planned if p.topic == TASKS]
    sales = [p for p in planned if p.topic != TASKS]
    return tasks + sales if arrival == "tasks-first" else sales + tasks


def generate(
    n: int,
    *,
    seed: int,
    malformed_share: float = 0.01,
    anchors: int = 200,
    start: str = DEFAULT_START,
    end: str = DEFAULT_END,
    arrival: str = "interleaved",
) -> list[Planned]:
    """Plan `n` records for `seed`, in the produce order `arrival` names; see the module doc."""
    if arrival not in ARRIVAL_ORDERS:
        raise ValueError(f"arrival must be one of {', '.join(ARRIVAL_ORDERS)}, got {arrival!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= malformed_share <= 1.0:
        raise ValueError(f"malformed_share must be within 0..1, got {malformed_share}")
    if anchors < 1:
        raise ValueError(f"anchors must be >= 1, got {anchors}")
    start_s = parse_instant(start) // 1000
    end_s = parse_instant(end) // 1000
    if end_s - start_s < 4 * _DAY_S:
        raise ValueError(f"the time range {start}..{end} must span at least 4 days")
    # Hundreds of thousands of acyclic dicts would trigger many useless GC passes: ~40% of the time.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return arrange(_Generator(seed, anchors, start_s, end_s).run(n, malformed_share), arrival)
    finally:
        if was_enabled:
            gc.enable()


class _Generator:
    """Holds the seeded world (anchors, rooms, products) and the records planned so far."""

    def __init__(self, seed: int, anchors: int, start_s: int, end_s: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.start_s = start_s
        self.end_s = end_s
        self.anchor_ids = [
            f"主播{k:04d}" if k % NON_ASCII_ANCHOR_EVERY == NON_ASCII_ANCHOR_EVERY - 1
            else f"anchor-{k:04d}"
            for k in range(anchors)
        ]
        self.anchor_keys = [a.encode() for a in self.anchor_ids]
        self.anchor_index = {a: k for k, a in enumerate(self.anchor_ids)}
        self.rooms = [[f"room-{k}-{r}" for r in range(1 + k % 3)] for k in range(anchors)]
        # A few streamers sell most: Zipf-like weights over anchors.
        self.anchor_cum = list(accumulate(1.0 / (k + 1) ** 0.8 for k in range(anchors)))
        self.anchor_total = self.anchor_cum[-1]
        self.anchor_cum[-1] = math.inf  # so that bisect never runs past the last anchor
        self.day_prefix: dict[int, str] = {}
        per_third = max(5, anchors // 4)
        self.own_products = [(f"sku-ds-{j}", OWN_SHOP_SOURCE) for j in range(max(20, anchors))]
        self.third_products = [
            (f"sku-{src}-{j}", src) for src in THIRD_PARTY_SOURCES for j in range(per_third)
        ]
        self.unknown_products = [
            (f"sku-{src}-{j}", src) for src in UNKNOWN_SOURCES for j in range(max(2, anchors // 20))
        ]
        self.counter = 0
        self.orders = 0
        self.tasks: list[_Task] = []
        self.refundable: list[_Paid] = []
        # (record timestamp, topic rank, sequence, record): sorting it gives the interleaved plan.
        self.records: list[tuple[int, int, int, Planned]] = []

    # -- the world ---------------------------------------------------------------------------

    def _next_id(self) -> str:
        i = self.counter
        self.counter += 1
        return f"{self.seed}-{i}"

    def _below(self, n: int) -> int:
        """Uniform in 0..n-1; cheaper than randrange on the hot path and just as seeded."""
        return int(self.rng.random() * n)

    def _between(self, lo: int, hi: int) -> int:
        """Uniform in lo..hi-1."""
        return lo + int(self.rng.random() * (hi - lo))

    def _anchor(self) -> int:
        """A streamer, the busy ones more often."""
        return bisect_right(self.anchor_cum, self.rng.random() * self.anchor_total)

    def _product(self) -> tuple[str, str]:
        r = self.rng.random()
        if r < OWN_SHOP_SHARE:
            pool = self.own_products
        elif r < OWN_SHOP_SHARE + THIRD_PARTY_SHARE:
            pool = self.third_products
        else:
            pool = self.unknown_products
        return pool[self._below(len(pool))]

    def _instant(self, s: int) -> str:
        """occurred_at for epoch second `s`: usually Beijing time with +08:00, sometimes UTC."""
        if self.rng.random() < UTC_FORMAT_SHARE:
            return format_instant(s * 1000)
        day, rem = divmod(s + _CST_S, _DAY_S)
        prefix = self.day_prefix.get(day)
        if prefix is None:
            prefix = self.day_prefix[day] = format_instant(day * _DAY_S * 1000)[:11]
        h, rem = divmod(rem, 3600)
        m, sec = divmod(rem, 60)
        return f"{prefix}{h:02d}:{m:02d}:{sec:02d}+08:00"

    def _record_ms(self, s: int) -> int:
        """The Kafka timestamp: occurred_at, except for the few deliberately backdated events."""
        if self.rng.random() < BACKDATE_SHARE:
            return (s + self._between(BACKDATE_MIN_S, BACKDATE_MAX_S + 1)) * 1000
        return s * 1000

    def _add(self, topic: str, anchor: int, event: dict[str, Any], s: int) -> int:
        """Plan a valid record for the event at second `s`; returns its record timestamp."""
        record_ms = self._record_ms(s)
        self._plan(Planned(topic, self.anchor_keys[anchor], orjson.dumps(event), record_ms, True,
                           event))
        return record_ms

    def _plan(self, planned: Planned) -> None:
        records = self.records
        records.append((planned.timestamp_ms, TOPIC_RANK[planned.topic], len(records), planned))

    # -- Xingtu tasks ------------------------------------------------------------------------

    def _task_event(self, task: _Task, s: int, status: str) -> None:
        self._add(
            TASKS,
            task.anchor,
            {
                "event_id": self._next_id(),
                "occurred_at": self._instant(s),
                "task_id": task.task_id,
                "anchor_id": self.anchor_ids[task.anchor],
                "product_id": task.product[0],
                "status": status,
            },
            s,
        )

    def _tasks(self, count: int) -> None:
        """Matches, some cancelled later and a few of those matched again: `count` events."""
        rng = self.rng
        made = 0
        last_match = self.end_s - 2 * _DAY_S  # leave room for uses after every match
        while made < count:
            task = _Task(
                f"xt{self.seed}-{len(self.tasks)}",
                self._anchor(),
                self._product(),
                self._between(self.start_s, last_match),
            )
            self.tasks.append(task)
            self._task_event(task, task.match_s, "matched")
            made += 1
            if made < count and rng.random() < CANCEL_SHARE:
                cancel_s = self._between(task.match_s + 3600, self.end_s - _DAY_S)
                self._task_event(task, cancel_s, "cancelled")
                made += 1
                if made < count and rng.random() < REMATCH_SHARE:
                    self._task_event(task, self._between(cancel_s + 60, self.end_s), "matched")
                    made += 1

    # -- cart-adds and orders ----------------------------------------------------------------

    def _sale(self) -> tuple[int, tuple[str, str], str | None, int]:
        """(anchor, product, xingtu_task_id, earliest second) for one cart-add or paid order."""
        rng = self.rng
        r = rng.random()
        if self.tasks and r < VALID_TASK_SHARE + WRONG_TASK_SHARE:
            task = self.tasks[self._below(len(self.tasks))]
            anchor, product = task.anchor, task.product
            if r >= VALID_TASK_SHARE:  # a real task, but matched to another anchor or product
                if len(self.anchor_ids) > 1 and rng.random() < 0.5:
                    while anchor == task.anchor:
                        anchor = self._below(len(self.anchor_ids))
                else:
                    while product == task.product:
                        product = self._product()
            return anchor, product, task.task_id, task.match_s + 1
        return self._anchor(), self._product(), None, self.start_s

    def _place(self, anchor: int) -> dict[str, Any]:
        """channel and room_id; short videos have a null or absent room."""
        rng = self.rng
        if rng.random() < LIVE_SHARE:
            rooms = self.rooms[anchor]
            return {"room_id": rooms[self._below(len(rooms))], "channel": "live"}
        if rng.random() < 0.5:
            return {"room_id": None, "channel": "short_video"}
        return {"channel": "short_video"}

    def _with_task(self, event: dict[str, Any], task_id: str | None) -> dict[str, Any]:
        if task_id is not None:
            event["xingtu_task_id"] = task_id
        elif self.rng.random() < 0.5:
            event["xingtu_task_id"] = None
        return event

    def _cart_add(self) -> None:
        anchor, (product_id, source), task_id, earliest = self._sale()
        s = self._between(earliest, self.end_s)
        event: dict[str, Any] = {
            "event_id": self._next_id(),
            "occurred_at": self._instant(s),
            "anchor_id": self.anchor_ids[anchor],
            **self._place(anchor),
            "product_id": product_id,
            "product_source": source,
        }
        self._add(CART_ADDS, anchor, self._with_task(event, task_id), s)

    def _paid(self) -> None:
        rng = self.rng
        anchor, (product_id, source), task_id, earliest = self._sale()
        s = self._between(earliest, self.end_s)
        # Log-uniform 1..20,000 yuan, in fen.
        amount = int(math.exp(rng.uniform(math.log(100), math.log(2_000_000))))
        self.orders += 1
        event: dict[str, Any] = {
            "event_id": self._next_id(),
            "occurred_at": self._instant(s),
            "order_id": f"o{self.seed}-{self.orders}",
            "status": "paid",
            "anchor_id": self.anchor_ids[anchor],
            **self._place(anchor),
            "product_id": product_id,
            "product_source": source,
            "amount_fen": amount,
        }
        record_ms = self._add(ORDERS, anchor, self._with_task(event, task_id), s)
        # A refund comes after the payment in event time and in record time (a backdated payment
        # is stamped up to 2 h after its occurred_at).
        self.refundable.append(_Paid(event, max(s, record_ms // 1000), amount))

    def _refund(self) -> bool:
        """Refund (part of) an earlier paid order, later in time; False if none can be."""
        rng = self.rng
        if not self.refundable:
            return False
        i = self._below(len(self.refundable))
        paid = self.refundable[i]
        lo = paid.last_s + 60
        if lo >= self.end_s:
            return False
        s = self._between(lo, min(self.end_s, lo + 30 * _DAY_S))
        if paid.remaining < 2 or rng.random() < FULL_REFUND_SHARE:
            amount = paid.remaining
        else:
            amount = self._between(1, paid.remaining)
        event = dict(paid.event)
        event.update(
            event_id=self._next_id(), occurred_at=self._instant(s), status="refunded",
            amount_fen=amount,
        )
        record_ms = self._add(ORDERS, self.anchor_index[event["anchor_id"]], event, s)
        paid.remaining -= amount
        paid.last_s = max(s, record_ms // 1000)
        if paid.remaining == 0:
            self.refundable[i] = self.refundable[-1]
            self.refundable.pop()
        return True

    # -- malformed records -------------------------------------------------------------------

    def _malformed(self) -> None:
        """One record the worker must dead-letter, on a topic chosen like the valid mix."""
        rng = self.rng
        r = rng.random()
        topic = TASKS if r < TASK_EVENT_SHARE else CART_ADDS if r < 0.55 else ORDERS
        kind = MALFORMED_KINDS[self._below(len(MALFORMED_KINDS))]
        if kind == "negative_amount" and topic != ORDERS:
            kind = "wrong_type"
        anchor = self._anchor()
        s = self._between(self.start_s, self.end_s)
        base = self._template(topic, anchor, s)
        value: bytes
        if kind == "not_json":
            value = f"event {base['event_id']} for {base['anchor_id']}: not JSON".encode()
        elif kind == "truncated_json":
            full = orjson.dumps(base)
            value = full[: self._between(1, len(full) - 1)]
        elif kind == "non_utf8":
            value = orjson.dumps(base).replace(b'"anchor_id":"', b'"anchor_id":"\xff\xfe', 1)
        elif kind == "empty":
            value = b""
        elif kind == "json_array":
            value = orjson.dumps([base])
        elif kind == "missing_field":
            required = _REQUIRED[topic]
            del base[required[self._below(len(required))]]
            value = orjson.dumps(base)
        elif kind == "wrong_type":
            if topic == ORDERS:
                base["amount_fen"] = str(base["amount_fen"])
            elif topic == CART_ADDS:
                base["xingtu_task_id"] = 9001
            else:
                base["status"] = 1
            value = orjson.dumps(base)
        elif kind == "negative_amount":
            base["amount_fen"] = -base["amount_fen"]
            value = orjson.dumps(base)
        else:  # no_offset: a local time the worker must not guess the zone of
            base["occurred_at"] = format_instant(s * 1000 + _CST_MS)[:-5]
            value = orjson.dumps(base)
        self._plan(Planned(topic, self.anchor_keys[anchor], value, s * 1000, False, None))

    def _template(self, topic: str, anchor: int, s: int) -> dict[str, Any]:
        """A valid-looking event for `topic`, to be broken by the caller."""
        product_id, source = self._product()
        base: dict[str, Any] = {
            "event_id": self._next_id(),
            "occurred_at": self._instant(s),
            "anchor_id": self.anchor_ids[anchor],
            "product_id": product_id,
        }
        if topic == TASKS:
            base.update(task_id=f"xt{self.seed}-bad", status="matched")
            return base
        base.update(self._place(anchor), product_source=source)
        if topic == ORDERS:
            base.update(order_id=f"o{self.seed}-bad", status="paid", amount_fen=1990)
        return base

    # -- the plan ----------------------------------------------------------------------------

    def run(self, n: int, malformed_share: float) -> list[Planned]:
        rng = self.rng
        n_bad = round(n * malformed_share)
        n_good = n - n_bad
        n_tasks = round(n_good * TASK_EVENT_SHARE)
        self._tasks(n_tasks)
        order_share = 1.0 - CART_ADD_SHARE
        for _ in range(n_good - n_tasks):
            r = rng.random()
            if r < CART_ADD_SHARE:
                self._cart_add()
            elif r < CART_ADD_SHARE + order_share * REFUND_SHARE and self._refund():
                pass
            else:
                self._paid()
        for _ in range(n_bad):
            self._malformed()
        # (timestamp, rank, sequence) is unique, so sorting never compares two Planned.
        self.records.sort()
        return [p for _, _, _, p in self.records]
