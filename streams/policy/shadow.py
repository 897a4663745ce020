"""Shadow runs: where a shadow version would have decided differently (groundwork for #14).

The worker (not wired yet) decides every event with the enforced version, and, for each shadow
version in effect (`PolicyBook.shadows_at`), again with the same state; only the enforced
decision is emitted and stored. `compare` says whether the two differ in what matters to the
platform and its merchants: accept vs reject, the rejection reason, the fee amount. A difference
in rule id alone (e.g. `no-rule-in-force` vs an accepting `xingtu-match-required`) is not a
disagreement. `shadow_record` is the value for the `policy-shadow` topic (key: anchor_id), see
`schemas/policy-shadow.schema.json`.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Literal

from streams.policy.decide import Decision
from streams.policy.events import CartAdd, Event, Order
from streams.policy.policy_file import RULE_XINGTU_SERVICE_FEE

SHADOW_ID_PREFIX = "shd:"

Subject = Literal["cart_add", "order", "xingtu_task"]


def fee_amount(d: Decision) -> int | None:
    """The fee a decision charges (positive) or gives back (negative); None when no fee."""
    if d.fee is None:
        return None
    fen = int(d.fee["fee_fen"])
    return -fen if d.fee.get("kind") == "reversal" else fen


def compare(enforced: Decision, shadow: Decision) -> dict[str, Any] | None:
    """None when the decisions agree; else the differing aspects, each as [enforced, shadow].

    Keys: `rule` (the rule behind the difference, for the metric's label: the fee rule when only
    the fee differs, else the rule of the decision that rejects, the shadow's first), and any of
    `outcome`, `reason`, `fee_fen` that differ.
    """
    diff: dict[str, Any] = {}
    if enforced.outcome != shadow.outcome:
        diff["outcome"] = [enforced.outcome, shadow.outcome]
    if enforced.reason != shadow.reason:
        diff["reason"] = [enforced.reason, shadow.reason]
    e_fee, s_fee = fee_amount(enforced), fee_amount(shadow)
    if e_fee != s_fee:
        diff["fee_fen"] = [e_fee, s_fee]
    if not diff:
        return None
    if "outcome" not in diff and "reason" not in diff:
        rule = RULE_XINGTU_SERVICE_FEE
    elif shadow.outcome == "rejected":
        rule = shadow.rule_id
    elif enforced.outcome == "rejected":
        rule = enforced.rule_id
    else:
        rule = shadow.rule_id
    return {"rule": rule, **diff}


def decision_summary(d: Decision) -> dict[str, Any]:
    """What a shadow record shows of one decision."""
    return {
        "policy_version": d.policy_version,
        "outcome": d.outcome,
        "rule_id": d.rule_id,
        "reason": d.reason,
        "fee_fen": fee_amount(d),
    }


def shadow_id(event_id: str, shadow_version: str) -> str:
    """Deterministic output id; versions contain no ':' (`versions.VERSION_RE`), so the id is
    unambiguous whatever the event id holds."""
    return f"{SHADOW_ID_PREFIX}{shadow_version}:{event_id}"


def subject_of(event: Event) -> Subject:
    if isinstance(event, CartAdd):
        return "cart_add"
    if isinstance(event, Order):
        return "order"
    return "xingtu_task"


def shadow_record(event: Event, enforced: Decision, shadow: Decision) -> dict[str, Any] | None:
    """The `policy-shadow` record for one event and one shadow version, or None if they agree.

    No wall-clock field: a replay of the same inputs yields byte-identical records.
    """
    diff = compare(enforced, shadow)
    if diff is None:
        return None
    rec: dict[str, Any] = {
        "shadow_id": shadow_id(event.event_id, shadow.policy_version),
        "event_id": event.event_id,
        "subject": subject_of(event),
        "anchor_id": event.anchor_id,
        "occurred_at": event.occurred_at,
        "enforced_version": enforced.policy_version,
        "shadow_version": shadow.policy_version,
        "rule": diff.pop("rule"),
        "differences": sorted(diff),
        "enforced": decision_summary(enforced),
        "shadow": decision_summary(shadow),
    }
    return rec
