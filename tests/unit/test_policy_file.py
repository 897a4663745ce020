"""The policy file: the packaged default loads; every defect names the file and the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streams.policy import Policy, PolicyError, load_policy, parse_instant

DEFAULT = (Path(__file__).parents[2] / "streams" / "policy" / "default_policy.toml").read_text(
    encoding="utf-8"
)


def test_default_policy_loads() -> None:
    p = load_policy()
    assert isinstance(p, Policy)
    assert p.version == "douyin-2020-08-26.1"
    assert p.own_shop_sources == frozenset({"douyin_shop"})
    assert p.max_backdate_seconds == 300 and p.max_backdate_ms == 300_000
    assert p.dedup_retention_days == 7 and p.dedup_retention_ms == 7 * 86_400_000
    assert p.xingtu_match_required_from_ms == parse_instant("2020-09-06T00:00:00+08:00")
    assert p.xingtu_match_required_reason == "XINGTU_MATCH_REQUIRED"
    assert p.third_party_cart_banned_from_ms == parse_instant("2020-10-09T00:00:00+08:00")
    assert p.third_party_cart_banned_reason == "THIRD_PARTY_CART_BANNED"
    assert p.service_fee_from_ms == parse_instant("2020-08-20T00:00:00+08:00")
    assert (p.third_party_rate_bps, p.own_shop_rate_bps) == (2000, 500)
    assert p.source.endswith("default_policy.toml")
    assert p.source_class("douyin_shop") == "douyin_shop"
    assert p.source_class("zzz_new") == "third_party"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.version = "x"  # type: ignore[misc]


def test_same_file_by_path_and_str(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(DEFAULT, encoding="utf-8")
    by_path = load_policy(f)
    assert dataclasses.replace(by_path, source="") == dataclasses.replace(load_policy(), source="")
    assert load_policy(str(f)) == by_path


def edit(old: str, new: str) -> str:
    assert old in DEFAULT, old
    return DEFAULT.replace(old, new, 1)


FEE = "rules.xingtu-service-fee"
MATCH = "rules.xingtu-match-required"
BAN = "rules.third-party-cart-banned"


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        (edit('version = "douyin-2020-08-26.1"\n', ""), "version", "missing"),
        (edit('version = "douyin-2020-08-26.1"', 'version = ""'), "version", "empty"),
        (edit('version = "douyin-2020-08-26.1"', "version = 1"), "version", "wrong type"),
        (
            edit('own_shop_sources = ["douyin_shop"]', 'own_shop_sources = "douyin_shop"'),
            "own_shop_sources",
            "wrong type",
        ),
        (
            edit('own_shop_sources = ["douyin_shop"]', 'own_shop_sources = ["Douyin Shop"]'),
            "own_shop_sources[0]",
            "does not match",
        ),
        (
            edit('own_shop_sources = ["douyin_shop"]', 'own_shop_sources = ["a", "a"]'),
            "own_shop_sources",
            "duplicates",
        ),
        (
            edit("max_backdate_seconds = 300", "max_backdate_seconds = -1"),
            "max_backdate_seconds",
            ">= 0",
        ),
        (
            edit("max_backdate_seconds = 300", "max_backdate_seconds = 300.0"),
            "max_backdate_seconds",
            "wrong type",
        ),
        (
            edit("max_backdate_seconds = 300", 'max_backdate_seconds = "300"'),
            "max_backdate_seconds",
            "wrong type",
        ),
        (
            edit("dedup_retention_days = 7", "dedup_retention_days = 0"),
            "dedup_retention_days",
            ">= 1",
        ),
        (
            edit("dedup_retention_days = 7", "dedup_retention_days = true"),
            "dedup_retention_days",
            "boolean",
        ),
        (
            edit("dedup_retention_days = 7", "dedup_retention_days = 7\nsurprise = 1"),
            "surprise",
            "unknown key",
        ),
        (
            edit(
                "effective_from = 2020-09-06T00:00:00+08:00", "effective_from = 2020-09-06T00:00:00"
            ),
            f"{MATCH}.effective_from",
            "offset-less datetime",
        ),
        (
            edit("effective_from = 2020-10-09T00:00:00+08:00", "effective_from = 2020-10-09"),
            f"{BAN}.effective_from",
            "wrong type",
        ),
        (
            edit(
                "effective_from = 2020-10-09T00:00:00+08:00",
                'effective_from = "2020-10-09T00:00:00+08:00"',
            ),
            f"{BAN}.effective_from",
            "wrong type",
        ),
        (
            edit("effective_from = 2020-08-20T00:00:00+08:00\n", ""),
            f"{FEE}.effective_from",
            "missing",
        ),
        (
            edit('reason = "XINGTU_MATCH_REQUIRED"', 'reason = "match required"'),
            f"{MATCH}.reason",
            "does not match",
        ),
        (edit('reason = "THIRD_PARTY_CART_BANNED"\n', ""), f"{BAN}.reason", "missing"),
        (
            edit("third_party_rate_bps = 2000", "third_party_rate_bps = -1"),
            f"{FEE}.third_party_rate_bps",
            ">= 0",
        ),
        (
            edit("third_party_rate_bps = 2000", "third_party_rate_bps = 10001"),
            f"{FEE}.third_party_rate_bps",
            "<= 10000",
        ),
        (
            edit("own_shop_rate_bps = 500", "own_shop_rate_bps = 0.05"),
            f"{FEE}.own_shop_rate_bps",
            "wrong type",
        ),
        (
            edit("own_shop_rate_bps = 500", "own_shop_rate_bps = 500\nrate = 1"),
            f"{FEE}.rate",
            "unknown key",
        ),
        (
            edit("\n[rules.xingtu-match-required]\n", "\n[rules.xingtu-match-requird]\n"),
            "rules.xingtu-match-requird",
            "unknown key",
        ),
        (edit("\n[rules.third-party-cart-banned]\n", "\n[other]\n"), "other", "unknown key"),
        ("version = 'x'\n[rules\n", "<file>", "invalid TOML"),
    ],
)
def test_defects_name_file_and_field(tmp_path: Path, text: str, field: str, problem: str) -> None:
    f = tmp_path / "broken.toml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    msg = str(info.value)
    assert msg.startswith(f"{f}: {field}: "), msg
    assert problem in msg, msg
    assert info.value.file == str(f)
    assert info.value.field == field


def test_missing_rule_table(tmp_path: Path) -> None:
    head, _, _ = DEFAULT.partition("\n[rules.xingtu-service-fee]\n")
    f = tmp_path / "p.toml"
    f.write_text(head, encoding="utf-8")
    with pytest.raises(PolicyError, match=r"p\.toml: rules\.xingtu-service-fee: missing"):
        load_policy(f)


def test_missing_file_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope\.toml: <file>: cannot read"):
        load_policy(tmp_path / "nope.toml")
    f = tmp_path / "latin1.toml"
    f.write_bytes(b'version = "\xe9"\n')
    with pytest.raises(PolicyError, match=r"latin1\.toml: <file>: not UTF-8"):
        load_policy(f)


def test_rules_in_any_date_order_and_other_rates_are_allowed(tmp_path: Path) -> None:
    text = edit("third_party_rate_bps = 2000", "third_party_rate_bps = 10000")
    text = text.replace("2020-10-09T00:00:00+08:00", "2020-09-01T00:00:00+08:00")
    f = tmp_path / "p.toml"
    f.write_text(text, encoding="utf-8")
    p = load_policy(f)
    assert p.third_party_rate_bps == 10_000
    assert p.third_party_cart_banned_from_ms < p.xingtu_match_required_from_ms
