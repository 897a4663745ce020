"""The policy as data: a TOML file, validated once at start-up into a frozen `Policy`.

Dates become epoch ms here so that rule checks on the hot path are plain int comparisons.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from typing import Any

from streams.policy.state import SourceClass

RULE_XINGTU_MATCH_REQUIRED = "xingtu-match-required"
RULE_THIRD_PARTY_CART_BANNED = "third-party-cart-banned"
RULE_XINGTU_SERVICE_FEE = "xingtu-service-fee"

DEFAULT_POLICY_RESOURCE = "default_policy.toml"

_SOURCE_RE = re.compile(r"[a-z0-9_]{1,32}", re.ASCII)  # same as the input schemas' product_source
_REASON_RE = re.compile(r"[A-Z][A-Z0-9_]{0,63}", re.ASCII)  # same as rejections.schema.json
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

_TOP_KEYS = {"version", "own_shop_sources", "max_backdate_seconds", "dedup_retention_days", "rules"}
_RULE_KEYS = {
    RULE_XINGTU_MATCH_REQUIRED: {"effective_from", "reason"},
    RULE_THIRD_PARTY_CART_BANNED: {"effective_from", "reason"},
    RULE_XINGTU_SERVICE_FEE: {"effective_from", "third_party_rate_bps", "own_shop_rate_bps"},
}


class PolicyError(ValueError):
    """A policy file that cannot be trusted; the message names the file, the field and the fault."""

    def __init__(self, file: str, field: str, problem: str) -> None:
        super().__init__(f"{file}: {field}: {problem}")
        self.file = file
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Policy:
    """A loaded, validated policy. Instants are epoch ms; rates are basis points."""

    version: str
    own_shop_sources: frozenset[str]
    max_backdate_seconds: int
    dedup_retention_days: int
    xingtu_match_required_from_ms: int
    xingtu_match_required_reason: str
    third_party_cart_banned_from_ms: int
    third_party_cart_banned_reason: str
    service_fee_from_ms: int
    third_party_rate_bps: int
    own_shop_rate_bps: int
    source: str
    """Where the policy was loaded from, for logs and error messages."""

    @property
    def max_backdate_ms(self) -> int:
        return self.max_backdate_seconds * 1000

    @property
    def dedup_retention_ms(self) -> int:
        return self.dedup_retention_days * 86_400_000

    def source_class(self, product_source: str) -> SourceClass:
        """Fail closed: any source not listed as own-shop, even an unknown one, is third-party."""
        return "douyin_shop" if product_source in self.own_shop_sources else "third_party"


def load_policy(path: str | os.PathLike[str] | None = None) -> Policy:
    """Load and validate a policy file; None loads the one shipped in this package."""
    raw, name = read_policy_file(path)
    return parse_policy(raw, name)


def read_policy_file(path: str | os.PathLike[str] | None = None) -> tuple[bytes, str]:
    """A policy file's bytes and the name errors use; None reads the packaged one."""
    if path is None:
        resource = resources.files("streams.policy").joinpath(DEFAULT_POLICY_RESOURCE)
        name = str(resource)
        try:
            return resource.read_bytes(), name
        except OSError as e:
            raise PolicyError(name, "<file>", f"cannot read: {e}") from e
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            return f.read(), name
    except OSError as e:
        raise PolicyError(name, "<file>", f"cannot read: {e.strerror or e}") from e


def decode_text(
    raw: bytes | str,
    name: str,
    where: str,
    syntax: str,
    loads: Callable[[str], Any],
    syntax_error: type[ValueError],
) -> Any:
    """`raw` as UTF-8 text handed to `loads`; a PolicyError at `where` if it is not UTF-8 or
    not valid `syntax` (the `syntax_error` that `loads` raises). Shared by policy files (TOML)
    and policy documents (TOML or JSON), so both report a bad input alike."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return loads(text)
    except UnicodeDecodeError as e:
        raise PolicyError(name, where, f"not UTF-8: {e}") from e
    except syntax_error as e:
        raise PolicyError(name, where, f"invalid {syntax}: {e}") from e


def parse_policy(raw: bytes | str, name: str = "<policy>") -> Policy:
    """Validate policy TOML text; `name` is only used in error messages."""
    doc: dict[str, Any] = decode_text(
        raw, name, "<file>", "TOML", tomllib.loads, tomllib.TOMLDecodeError
    )

    _no_unknown_keys(name, "", doc, _TOP_KEYS)
    version = _required(name, doc, "version", "")
    if not isinstance(version, str):
        raise PolicyError(name, "version", f"wrong type: expected a string, got {_tname(version)}")
    if not version.strip():
        raise PolicyError(name, "version", "must not be empty")

    sources = _required(name, doc, "own_shop_sources", "")
    if not isinstance(sources, list):
        raise PolicyError(
            name, "own_shop_sources", f"wrong type: expected an array, got {_tname(sources)}"
        )
    for i, src in enumerate(sources):
        field = f"own_shop_sources[{i}]"
        if not isinstance(src, str):
            raise PolicyError(name, field, f"wrong type: expected a string, got {_tname(src)}")
        if _SOURCE_RE.fullmatch(src) is None:
            raise PolicyError(name, field, f"{src!r} does not match ^[a-z0-9_]{{1,32}}$")
    if len(set(sources)) != len(sources):
        raise PolicyError(name, "own_shop_sources", "contains duplicates")

    max_backdate = _int(name, doc, "max_backdate_seconds", "", minimum=0)
    retention = _int(name, doc, "dedup_retention_days", "", minimum=1)

    rules = _required(name, doc, "rules", "")
    if not isinstance(rules, dict):
        raise PolicyError(name, "rules", f"wrong type: expected a table, got {_tname(rules)}")
    _no_unknown_keys(name, "rules.", rules, set(_RULE_KEYS))
    tables: dict[str, dict[str, Any]] = {}
    for rule_id, keys in _RULE_KEYS.items():
        table = _required(name, rules, rule_id, "rules.")
        if not isinstance(table, dict):
            raise PolicyError(
                name, f"rules.{rule_id}", f"wrong type: expected a table, got {_tname(table)}"
            )
        _no_unknown_keys(name, f"rules.{rule_id}.", table, keys)
        tables[rule_id] = table

    match_p = f"rules.{RULE_XINGTU_MATCH_REQUIRED}."
    ban_p = f"rules.{RULE_THIRD_PARTY_CART_BANNED}."
    fee_p = f"rules.{RULE_XINGTU_SERVICE_FEE}."
    match_t = tables[RULE_XINGTU_MATCH_REQUIRED]
    ban_t = tables[RULE_THIRD_PARTY_CART_BANNED]
    fee_t = tables[RULE_XINGTU_SERVICE_FEE]
    return Policy(
        version=version,
        own_shop_sources=frozenset(sources),
        max_backdate_seconds=max_backdate,
        dedup_retention_days=retention,
        xingtu_match_required_from_ms=_instant(name, match_t, "effective_from", match_p),
        xingtu_match_required_reason=_reason(name, match_t, match_p),
        third_party_cart_banned_from_ms=_instant(name, ban_t, "effective_from", ban_p),
        third_party_cart_banned_reason=_reason(name, ban_t, ban_p),
        service_fee_from_ms=_instant(name, fee_t, "effective_from", fee_p),
        third_party_rate_bps=_int(name, fee_t, "third_party_rate_bps", fee_p, 0, 10_000),
        own_shop_rate_bps=_int(name, fee_t, "own_shop_rate_bps", fee_p, 0, 10_000),
        source=name,
    )


def _tname(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, datetime):
        return "offset-less datetime" if value.tzinfo is None else "datetime"
    return {
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
        date: "date",
        time: "time",
    }.get(type(value), type(value).__name__)


def _no_unknown_keys(name: str, prefix: str, table: dict[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            raise PolicyError(name, f"{prefix}{key}", "unknown key")


def _required(name: str, table: dict[str, Any], key: str, prefix: str) -> Any:
    if key not in table:
        raise PolicyError(name, f"{prefix}{key}", "missing")
    return table[key]


def _int(
    name: str,
    table: dict[str, Any],
    key: str,
    prefix: str,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = _required(name, table, key, prefix)
    field = f"{prefix}{key}"
    if type(value) is not int:
        raise PolicyError(name, field, f"wrong type: expected an integer, got {_tname(value)}")
    if minimum is not None and value < minimum:
        raise PolicyError(name, field, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise PolicyError(name, field, f"must be <= {maximum}, got {value}")
    return value


def _instant(name: str, table: dict[str, Any], key: str, prefix: str) -> int:
    value = _required(name, table, key, prefix)
    field = f"{prefix}{key}"
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise PolicyError(
                name, field, "offset-less datetime: write an offset, e.g. 2020-09-06T00:00:00+08:00"
            )
        return (value - _EPOCH) // _ONE_MS
    raise PolicyError(name, field, f"wrong type: expected an offset datetime, got {_tname(value)}")


def _reason(name: str, table: dict[str, Any], prefix: str) -> str:
    value = _required(name, table, "reason", prefix)
    field = f"{prefix}reason"
    if not isinstance(value, str):
        raise PolicyError(name, field, f"wrong type: expected a string, got {_tname(value)}")
    if _REASON_RE.fullmatch(value) is None:
        raise PolicyError(name, field, f"{value!r} does not match ^[A-Z][A-Z0-9_]{{0,63}}$")
    return value
