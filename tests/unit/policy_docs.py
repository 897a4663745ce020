"""Helpers shared by the policy-version tests: documents as dicts, built from the default policy."""

from __future__ import annotations

import copy
from typing import Any

from streams.policy.versions import PolicyDocument, parse_document

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
