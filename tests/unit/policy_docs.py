"""Helpers shared by the policy-version tests: documents as dicts, built from the default policy,
and the sale events, task state and record schemas the #14 tests decide and check against."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema_rs

from streams.policy import TaskState, parse_instant
from streams.policy.versions import PolicyDocument, parse_document

SCHEMAS = Path(__file__).parents[2] / "schemas"
NOW = parse_instant("2020-12-01T00:00:00Z")  # decision time, after every rule date
TASK = TaskState("xt-1", "anchor-1", "sku-1").with_transition(0, "matched")

BASE: dict[str, Any] = {
    "version": "douyin-2020-08-26.1",
    "effective_from": "2020-08-20T00:00:00+08:00",
    "mode": "enforced",
    "own_shop_sources": ["douyin_shop"],
    "max_backdate_seconds": 300,
    "dedup_retention_days": 7,
    "rules": {
        "xingtu-match-required": {
            "effective_from": "2020-09-06T00:00:00+08:00",
            "reason": "XINGTU_MATCH_REQUIRED",
        },
        "third-party-cart-banned": {
            "effective_from": "2020-10-09T00:00:00+08:00",
            "reason": "THIRD_PARTY_CART_BANNED",
        },
        "xingtu-service-fee": {
            "effective_from": "2020-08-20T00:00:00+08:00",
            "third_party_rate_bps": 2000,
            "own_shop_rate_bps": 500,
        },
    },
}


def doc_dict(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    for key, value in changes.items():
        d[key] = value
    return d


def make_doc(
    version: str, effective_from: str, mode: str = "enforced", **kw: Any
) -> PolicyDocument:
    d = doc_dict(version=version, effective_from=effective_from, mode=mode)
    ban = kw.pop("ban", None)
    rate = kw.pop("rate", None)
    if ban is not None:
        d["rules"]["third-party-cart-banned"]["effective_from"] = ban
    if rate is not None:
        d["rules"]["xingtu-service-fee"]["third_party_rate_bps"] = rate
    d.update(kw)
    return parse_document(d, version)


def schema_validator(file_name: str) -> Any:
    """The jsonschema-rs validator of `schemas/<file_name>`, formats checked as the worker does."""
    schema = json.loads((SCHEMAS / file_name).read_text("utf-8"))
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def sale_dict(at: str, event_id: str = "ca-1", **kw: Any) -> dict[str, Any]:
    """A live-room sale of a third-party product on task xt-1, as an input record's fields;
    `kw` overrides fields, and a field set to `...` is left out."""
    d = {
        "event_id": event_id,
        "occurred_at": at,
        "anchor_id": "anchor-1",
        "room_id": "room-1",
        "channel": "live",
        "product_id": "sku-1",
        "product_source": "taobao",
        "xingtu_task_id": "xt-1",
    }
    d.update(kw)
    return {k: v for k, v in d.items() if v is not ...}
