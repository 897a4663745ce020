"""Deciding with a book of policy versions (#14): which version decides an event, which shadow
versions are compared with it, and which advance notices it earns.

Which enforced version decides: the one in force (`PolicyBook.enforced_doc_at`) at the event's
decision time. The decision time depends on the backdating guard (`clock.decision_time`), which
is itself a policy setting; the guard of the version in force at the record's broker timestamp
(the producer's clock cannot move that one) is used to find it. An event earlier than every
enforced version's `effective_from` is decided by the earliest enforced version: the packaged
policy seeds the topic as in force from 1970, so this only matters to a topic whose first
enforced version was published with a later date, and failing closed under its rules is what
its publisher asked for. The choice depends only on the event and the book, so a replay from
the beginning with the same book gives the same decisions.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.policy.clock import decision_time
from streams.policy.decide import Decision, decide
from streams.policy.events import Event
from streams.policy.notices import Notice, notices_for
from streams.policy.state import State
from streams.policy.versions import PolicyBook, PolicyDocument


class NoEnforcedPolicy(LookupError):
    """The book holds no enforced version (the worker never decides with such a book)."""


@dataclass(slots=True, unsafe_hash=True)
class Verdict:
    decision: Decision
    """The enforced version's decision: the only one emitted and stored."""
    shadows: tuple[Decision, ...] = ()
    """Each shadow version's decision of the same event on the same state (never stored)."""
    notices: tuple[Notice, ...] = ()
    """Rules already published that will reject this (accepted) event soon."""


def enforced_for(book: PolicyBook, occurred_ms: int, record_ms: int | None) -> PolicyDocument:
    only = book.only_enforced
    if only is not None:  # in force at every instant, or the earliest: decides every event
        return only
    anchor = occurred_ms if record_ms is None else record_ms
    guard = book.enforced_doc_at(anchor) or book.earliest_enforced()
    if guard is None:
        raise NoEnforcedPolicy("no enforced policy version is known")
    t, _ = decision_time(occurred_ms, record_ms, guard.policy.max_backdate_ms)
    doc = book.enforced_doc_at(t)
    return doc if doc is not None else guard


def judge(
    event: Event,
    state: State,
    book: PolicyBook,
    *,
    record_ms: int | None,
    now_ms: int,
    with_notices: bool = True,
) -> Verdict:
    """The enforced decision, the shadow decisions beside it, and the notices it earns."""
    doc = enforced_for(book, event.occurred_ms, record_ms)
    d = decide(event, state, doc.policy, record_ms=record_ms, now_ms=now_ms)
    shadows = tuple(
        decide(event, state, s.policy, record_ms=record_ms, now_ms=now_ms)
        for s in book.shadows_at(d.t_ms)
    )
    notices = notices_for(event, state, book, d) if with_notices else ()
    return Verdict(d, shadows, notices)
