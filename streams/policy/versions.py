"""Versioned policy documents and the book that picks one by event time (groundwork for #14).

A *policy document* is the policy file's fields (`streams/policy/default_policy.toml`) plus:

- `effective_from`: the instant from which the version applies, in the same format as the rule
  dates (a TOML offset datetime, or an RFC 3339 string with offset in JSON);
- `mode`: `"enforced"` (its decisions count) or `"shadow"` (evaluated beside, never enforced);
- `notice_window_days` (optional, default 14): how long before one of its rules takes effect an
  advance notice may be sent (`streams.policy.notices`).

The policy id (the record key on the compacted `policies` topic) is the document's `version`:
on a compacted topic only the latest record of a key survives, so two versions that must coexist
need two keys, and re-publishing a version (a correction, or a shadow promoted to enforced)
replaces it. `PolicyBook` keeps one document per id and answers, for a decision time `t`, which
enforced version applies and which shadow versions run beside it. Its answers depend only on the
set of documents it holds, never on the order they were added, so a replay decides alike.

Pure: no I/O. The rule fields are validated by `policy_file.parse_policy`, to which a document's
rule part is handed as TOML text, so one validator covers files and documents alike.
"""

from __future__ import annotations

import json
import re
import tomllib
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from streams.policy.clock import format_instant, parse_instant
from streams.policy.policy_file import (
    RULE_THIRD_PARTY_CART_BANNED,
    RULE_XINGTU_MATCH_REQUIRED,
    RULE_XINGTU_SERVICE_FEE,
    Policy,
    PolicyError,
    decode_text,
    parse_policy,
)

Mode = Literal["enforced", "shadow"]
MODES: tuple[Mode, ...] = ("enforced", "shadow")

DEFAULT_NOTICE_WINDOW_DAYS = 14
MAX_NOTICE_WINDOW_DAYS = 366
DOCUMENT_KEYS = ("effective_from", "mode", "notice_window_days")
"""Keys a document has beyond the policy file's; everything else goes to `parse_policy`."""

# The version is the record key and part of output ids ("shd:<version>:<event id>"), so it is
# restricted to characters that need no escaping and contain no ':'.
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}", re.ASCII)

RULE_DATE_FIELDS = {
    RULE_XINGTU_MATCH_REQUIRED: "xingtu_match_required_from_ms",
    RULE_THIRD_PARTY_CART_BANNED: "third_party_cart_banned_from_ms",
    RULE_XINGTU_SERVICE_FEE: "service_fee_from_ms",
}
"""Rule id -> the `Policy` field holding the instant that rule takes effect."""

_MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """One validated version: the `Policy` it decides with, and when and how it applies."""

    policy: Policy
    effective_from: str
    """As given (RFC 3339 with offset), for display and for the JSON form."""
    effective_from_ms: int
    mode: Mode
    notice_window_days: int
    fields: dict[str, Any]
    """The document as JSON-able data (instants as RFC 3339 strings): what `publish` sends."""

    @property
    def policy_id(self) -> str:
        return self.policy.version

    @property
    def version(self) -> str:
        return self.policy.version

    @property
    def notice_window_ms(self) -> int:
        return self.notice_window_days * _MS_PER_DAY

    def to_json(self) -> bytes:
        """The record value for the `policies` topic: canonical (sorted keys, UTF-8) JSON."""
        return json.dumps(self.fields, sort_keys=True, ensure_ascii=False).encode("utf-8")

    def rule_dates(self) -> dict[str, int]:
        """Rule id -> epoch ms at which that rule of this version takes effect."""
        return {rule: getattr(self.policy, attr) for rule, attr in RULE_DATE_FIELDS.items()}


def parse_document(doc: object, name: str = "<policy document>") -> PolicyDocument:
    """Validate a document given as a dict (from TOML or JSON); raise PolicyError on any fault.

    The error names `name`, the field and the fault, in one line.
    """
    if not isinstance(doc, Mapping):
        raise PolicyError(name, "<document>", f"expected a table/object, got {_tname(doc)}")
    for key in doc:
        if not isinstance(key, str):
            raise PolicyError(name, repr(key), "keys must be strings")
    rest = {k: v for k, v in doc.items() if k not in DOCUMENT_KEYS}
    version = rest.get("version")
    if isinstance(version, str) and version.strip() and VERSION_RE.fullmatch(version) is None:
        raise PolicyError(
            name, "version", f"{version!r} does not match ^[A-Za-z0-9][A-Za-z0-9._+-]{{0,127}}$"
        )

    if "effective_from" not in doc:
        raise PolicyError(name, "effective_from", "missing")
    effective_from, effective_ms = _instant_field(name, "effective_from", doc["effective_from"])

    if "mode" not in doc:
        raise PolicyError(name, "mode", "missing")
    mode: Mode
    if doc["mode"] == "enforced":
        mode = "enforced"
    elif doc["mode"] == "shadow":
        mode = "shadow"
    else:
        raise PolicyError(name, "mode", f"must be one of {', '.join(MODES)}, got {doc['mode']!r}")

    window = doc.get("notice_window_days", DEFAULT_NOTICE_WINDOW_DAYS)
    if type(window) is not int:
        raise PolicyError(
            name, "notice_window_days", f"wrong type: expected an integer, got {_tname(window)}"
        )
    if not 0 <= window <= MAX_NOTICE_WINDOW_DAYS:
        raise PolicyError(
            name, "notice_window_days", f"must be 0..{MAX_NOTICE_WINDOW_DAYS}, got {window}"
        )

    fields = _jsonable(name, "", rest)
    policy = parse_policy(_to_toml(name, rest), name)
    fields.update(effective_from=effective_from, mode=mode, notice_window_days=window)
    return PolicyDocument(
        policy=policy,
        effective_from=effective_from,
        effective_from_ms=effective_ms,
        mode=mode,
        notice_window_days=window,
        fields=fields,
    )


def parse_document_json(raw: bytes | str, name: str = "<policy document>") -> PolicyDocument:
    """A document from JSON text (a `policies` record value)."""
    doc = decode_text(raw, name, "<document>", "JSON", json.loads, json.JSONDecodeError)
    return parse_document(doc, name)


def parse_document_toml(raw: bytes | str, name: str = "<policy document>") -> PolicyDocument:
    """A document from TOML text (a policy file with `effective_from` and `mode` added)."""
    doc = decode_text(raw, name, "<document>", "TOML", tomllib.loads, tomllib.TOMLDecodeError)
    return parse_document(doc, name)


SEED_EFFECTIVE_FROM = datetime(1970, 1, 1, tzinfo=UTC)
"""A policy file seeds the `policies` topic as in force from 1970: its rules carry their own
dates, so the file decides every event the way the worker did before versions existed."""


def seed_document(raw: bytes | str, name: str = "<policy file>") -> PolicyDocument:
    """The document a policy file (or a full document in TOML) seeds an empty topic with:
    enforced from `SEED_EFFECTIVE_FROM` unless the file says otherwise."""
    doc = decode_text(raw, name, "<document>", "TOML", tomllib.loads, tomllib.TOMLDecodeError)
    if isinstance(doc, dict):
        doc.setdefault("effective_from", SEED_EFFECTIVE_FROM)
        doc.setdefault("mode", "enforced")
    return parse_document(doc, name)


def book_of(policy: Policy, notice_window_days: int = DEFAULT_NOTICE_WINDOW_DAYS) -> PolicyBook:
    """A book of one version enforced from `SEED_EFFECTIVE_FROM`: what a worker holds whose
    policies topic was seeded from this policy and never changed (tests, benchmark)."""
    ms = int(SEED_EFFECTIVE_FROM.timestamp() * 1000)
    return PolicyBook(
        [
            PolicyDocument(
                policy=policy,
                effective_from=SEED_EFFECTIVE_FROM.isoformat(),
                effective_from_ms=ms,
                mode="enforced",
                notice_window_days=notice_window_days,
                fields={},
            )
        ]
    )


def parse_record(key: bytes | str | None, value: bytes | None, name: str) -> PolicyDocument | None:
    """One `policies` record: None for a tombstone (the id is withdrawn), else the document.

    The key must be the document's version: a record whose key and version disagree would let
    two keys hold one version, and the book could not tell which one a later record replaces.
    """
    if key is None:
        raise PolicyError(name, "<key>", "missing: the key must be the document's version")
    key_s = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    if value is None:
        return None
    doc = parse_document_json(value, name)
    if doc.version != key_s:
        raise PolicyError(name, "<key>", f"{key_s!r} is not the document's version {doc.version!r}")
    return doc


class PolicyBook:
    """All known versions, one per policy id; picks versions by decision time.

    Ties: two enforced versions with the same `effective_from` are ordered by version string (the
    greatest wins), so the choice never depends on the order records were read in. The worker
    asks it several times per event, so the orderings are kept until the next change.
    """

    __slots__ = ("_docs", "_enforced", "_enforced_from", "_instants", "_shadows", "only_enforced")

    def __init__(self, docs: Iterable[PolicyDocument] = ()) -> None:
        self._docs: dict[str, PolicyDocument] = {}
        self._changed()
        for doc in docs:
            self.add(doc)

    def _changed(self) -> None:
        ordered = sorted(self._docs.values(), key=_order)
        self._enforced = [d for d in ordered if d.mode == "enforced"]
        self._enforced_from = [d.effective_from_ms for d in self._enforced]
        self.only_enforced = self._enforced[0] if len(self._enforced) == 1 else None
        """The enforced version when there is exactly one: it decides every event."""
        self._shadows = tuple(d for d in ordered if d.mode == "shadow")
        instants: set[int] = set()
        for doc in self._enforced:
            instants.add(doc.effective_from_ms)
            instants.update(doc.rule_dates().values())
        self._instants = sorted(instants)

    def add(self, doc: PolicyDocument) -> PolicyDocument | None:
        """Hold `doc`, replacing the record of the same policy id; returns the replaced one.

        "Newer" is the later record of the key on the topic (what compaction keeps): the reader
        adds records in offset order.
        """
        old = self._docs.get(doc.policy_id)
        self._docs[doc.policy_id] = doc
        self._changed()
        return old

    def remove(self, policy_id: str) -> PolicyDocument | None:
        """Forget a policy id (a tombstone on the topic)."""
        old = self._docs.pop(policy_id, None)
        self._changed()
        return old

    def apply_record(self, key: bytes | str | None, value: bytes | None, where: str) -> str | None:
        """One `policies` record, in offset order: what changed, in words (None: nothing).

        Raises PolicyError, leaving the book as it was, for a record that is not a valid
        document, whose key is not its version, or a tombstone that would withdraw the last
        enforced version. Workers and `python -m streams.policy list` read the topic through
        this one rule, so they hold the same versions.
        """
        doc = parse_record(key, value, where)
        if doc is None:
            policy_id = key.decode("utf-8", "replace") if isinstance(key, bytes) else key or ""
            old = self._docs.get(policy_id)
            if old is None:
                return None
            if old.mode == "enforced" and len(self._enforced) == 1:
                raise PolicyError(
                    where, "<tombstone>", f"withdrawing {policy_id} would leave no enforced version"
                )
            self.remove(policy_id)
            return f"withdrew {policy_id}"
        old = self.add(doc)
        if old is not None and old.fields == doc.fields:
            return None
        return (
            f"{'replaced' if old else 'added'} {doc.version} ({doc.mode}, effective from "
            f"{doc.effective_from}, notice window {doc.notice_window_days} days)"
        )

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, policy_id: object) -> bool:
        return policy_id in self._docs

    def get(self, policy_id: str) -> PolicyDocument | None:
        return self._docs.get(policy_id)

    def documents(self) -> tuple[PolicyDocument, ...]:
        """Every document, in (effective_from, version) order."""
        return tuple(sorted(self._docs.values(), key=_order))

    def enforced_doc_at(self, t_ms: int) -> PolicyDocument | None:
        """The enforced document whose effective_from is the latest at or before `t_ms`."""
        i = bisect_right(self._enforced_from, t_ms)
        return self._enforced[i - 1] if i else None

    def earliest_enforced(self) -> PolicyDocument | None:
        return self._enforced[0] if self._enforced else None

    def enforced_at(self, t_ms: int) -> Policy | None:
        doc = self.enforced_doc_at(t_ms)
        return None if doc is None else doc.policy

    def shadows_at(self, t_ms: int) -> tuple[PolicyDocument, ...]:
        """Shadow documents in effect at `t_ms` (effective_from at or before it), in order.

        Every such shadow runs: a shadow stops only when it is withdrawn (tombstone) or
        re-published as enforced.
        """
        if not self._shadows:
            return ()
        return tuple(d for d in self._shadows if d.effective_from_ms <= t_ms)

    def change_instants(self, after_ms: int, until_ms: int) -> tuple[int, ...]:
        """Instants in (after_ms, until_ms] at which the enforced rules may change: an enforced
        version's effective_from or one of its rule dates."""
        lo = bisect_right(self._instants, after_ms)
        hi = bisect_right(self._instants, until_ms)
        return tuple(self._instants[lo:hi])


def _order(doc: PolicyDocument) -> tuple[int, str]:
    return doc.effective_from_ms, doc.version


# ------------------------------------------------------------------ dict -> JSON-able / TOML


def _instant_field(name: str, field: str, value: object) -> tuple[str, int]:
    """(text as given, epoch ms) of an instant given as a TOML datetime or an RFC 3339 string."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise PolicyError(
                name, field, "offset-less datetime: write an offset, e.g. 2020-09-06T00:00:00+08:00"
            )
        value = value.isoformat()
    if not isinstance(value, str):
        raise PolicyError(
            name, field, f"wrong type: expected an offset date-time, got {_tname(value)}"
        )
    try:
        ms = parse_instant(value)
        format_instant(ms)  # in the year 1..9999 range the outputs can show
    except ValueError as e:
        raise PolicyError(name, field, str(e)) from None
    return value, ms


def _is_rule_date(path: str) -> bool:
    return path.startswith("rules.") and path.endswith(".effective_from")


def _jsonable(name: str, path: str, value: Any) -> Any:
    """The document as JSON data: rule dates become RFC 3339 strings, the rest is copied."""
    if isinstance(value, Mapping):
        return {k: _jsonable(name, f"{path}{k}.", v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(name, path, v) for v in value]
    if isinstance(value, datetime) and _is_rule_date(path.rstrip(".")):
        return _instant_field(name, path.rstrip("."), value)[0]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return value


def _to_toml(name: str, doc: Mapping[str, Any]) -> str:
    """TOML text for `parse_policy`: rule dates given as strings become TOML datetimes (after
    the RFC 3339 check), everything else keeps its type so `parse_policy` names type faults."""
    lines = []
    for key, value in doc.items():
        lines.append(f"{_key(key)} = {_value(name, key, value)}")
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return _string(key)


def _string(s: str) -> str:
    # JSON escapes are TOML basic-string escapes; DEL must be escaped in TOML, not in JSON.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(name: str, path: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"nan": "nan", "inf": "inf", "-inf": "-inf"}[repr(value)]
        return repr(value)
    if isinstance(value, str):
        if _is_rule_date(path):
            _, ms = _instant_field(name, path, value)
            return format_instant(ms)
        return _string(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()  # TOML local date/time literals: parse_policy names the fault
    if isinstance(value, list):
        return "[" + ", ".join(_value(name, path, v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{_key(str(k))} = {_value(name, f'{path}.{k}', v)}" for k, v in value.items()
        )
        return "{" + items + "}"
    if value is None:
        raise PolicyError(name, path, "wrong type: null is not allowed")
    raise PolicyError(name, path, f"wrong type: {_tname(value)}")


def _tname(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Mapping):
        return "table"
    return {int: "integer", float: "float", str: "string", list: "array"}.get(
        type(value), type(value).__name__
    )
