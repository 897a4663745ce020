"""Advance notices: an event accepted now that a published rule will reject soon (groundwork
for #14).

Example: a third-party live cart-add on 2020-10-01 is accepted (with a matched Xingtu task), but
the third-party cart ban takes effect on 2020-10-09, within the 14-day notice window: the
streamer gets one advisory for that anchor, product and rule before the ban starts failing
their cart-adds.

How "would reject" is judged: `decide` itself, on the same event and state, as if the event
occurred at each instant in (t, t + window] at which the enforced rules can change, under the
version enforced at that instant. `decide` takes its decision time from `clock.decision_time(
occurred_ms, record_ms, max_backdate_ms)`: with `record_ms=None` it is `occurred_ms`, so the
event is copied with `occurred_ms` set to that instant and decided with `record_ms=None`
(`occurred_at`, the text, is left as received; it only appears in records, which are
discarded). Rules only change at an enforced version's `effective_from` or at a rule date of an
enforced version, so those instants are the only ones to try. The state is the current one (the
task history as known now); nothing a trial decision returns is stored.

`t` is the enforced decision's own time (`Decision.t_ms`, which already applies the backdating
guard), and the window is the `notice_window_days` of the version enforced at `t` (default 14
days) unless the caller passes one.

Dedup (the worker's job, not wired yet): one advisory per `dedup_key` (anchor, product, rule,
instant the rejection starts); the key may be forgotten once that instant has passed
(`Notice.dedup_expires_ms`), after which the rule is in force and rejects instead. A date moved
by a new version gives a new key, so the streamer is told the new date.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.policy.clock import format_instant
from streams.policy.decide import Decision, decide
from streams.policy.events import CartAdd, Event, Order
from streams.policy.state import State
from streams.policy.versions import DEFAULT_NOTICE_WINDOW_DAYS, PolicyBook

ADVISORY_ID_PREFIX = "adv:"
DEFAULT_NOTICE_WINDOW_MS = DEFAULT_NOTICE_WINDOW_DAYS * 86_400_000


@dataclass(frozen=True, slots=True)
class Notice:
    """A rule that will reject this anchor's sales of this product from `effective_from_ms`."""

    anchor_id: str
    product_id: str
    rule_id: str
    effective_from_ms: int
    policy_version: str
    """The enforced version that would reject the event at `effective_from_ms`."""
    reason: str

    @property
    def dedup_key(self) -> str:
        """Unambiguous whatever the ids hold: length-prefixed, like `state.task_key`."""
        a, p = self.anchor_id, self.product_id
        return f"{len(a)}:{a}|{len(p)}:{p}|{self.rule_id}|{self.effective_from_ms}"

    @property
    def dedup_expires_ms(self) -> int:
        return self.effective_from_ms

    @property
    def effective_from(self) -> str:
        return format_instant(self.effective_from_ms)


def change_instants(book: PolicyBook, after_ms: int, until_ms: int) -> tuple[int, ...]:
    """Instants in (after_ms, until_ms] at which the enforced rules may change."""
    return book.change_instants(after_ms, until_ms)


def notices_for(
    event: Event,
    state: State,
    book: PolicyBook,
    decision: Decision,
    *,
    window_ms: int | None = None,
) -> tuple[Notice, ...]:
    """Notices for an event the enforced version accepted now (`decision`); () otherwise.

    One notice per rule id: the earliest instant in the window at which that rule would reject.
    Only cart-adds and paid orders can be rejected; refunds and Xingtu tasks never are.
    """
    if decision.outcome != "accepted":
        return ()
    if not isinstance(event, CartAdd) and not (isinstance(event, Order) and event.status == "paid"):
        return ()
    t = decision.t_ms
    if window_ms is None:
        current = book.enforced_doc_at(t)
        window_ms = current.notice_window_ms if current is not None else DEFAULT_NOTICE_WINDOW_MS
    found: dict[str, Notice] = {}
    for u in change_instants(book, t, t + window_ms):
        policy = book.enforced_at(u)
        if policy is None:
            continue
        trial = decide(event, state, policy, record_ms=None, now_ms=u, at_ms=u)
        if trial.outcome != "rejected" or trial.rule_id in found:
            continue
        reason = trial.reason or ""  # a rejection always has one
        found[trial.rule_id] = Notice(
            event.anchor_id, event.product_id, trial.rule_id, u, policy.version, reason
        )
    return tuple(found.values())


def advisory_id(notice: Notice) -> str:
    return ADVISORY_ID_PREFIX + notice.dedup_key


def advisory_record(event: CartAdd | Order, notice: Notice) -> dict[str, Any]:
    """The `advisories` record (key: anchor_id), see `schemas/advisories.schema.json`.

    No wall-clock field: a replay yields the same record.
    """
    return {
        "advisory_id": advisory_id(notice),
        "anchor_id": notice.anchor_id,
        "product_id": notice.product_id,
        "product_source": event.product_source,
        "rule_id": notice.rule_id,
        "reason": notice.reason,
        "policy_version": notice.policy_version,
        "effective_from": notice.effective_from,
        "event_id": event.event_id,
        "subject": "cart_add" if isinstance(event, CartAdd) else "order",
        "occurred_at": event.occurred_at,
    }
