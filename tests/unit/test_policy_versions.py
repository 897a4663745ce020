"""Policy documents and the book that picks a version by decision time (#14 groundwork)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.policy import PolicyError, format_instant, parse_instant
from streams.policy.versions import (
    PolicyBook,
    PolicyDocument,
    parse_document,
    parse_document_json,
    parse_document_toml,
    parse_record,
)
from streams.resources import default_policy_path
from tests.unit.policy_docs import BASE, doc_dict, make_doc

EXAMPLES = Path(__file__).parents[2] / "schemas" / "examples" / "policies"


def test_toml_document_is_the_policy_file_plus_three_keys() -> None:
    text = default_policy_path().read_text("utf-8")
    doc = parse_document_toml(
        'effective_from = 2020-08-20T00:00:00+08:00\nmode = "shadow"\n' + text, "x.toml"
    )
    assert doc.mode == "shadow" and doc.notice_window_days == 14
    assert doc.effective_from_ms == parse_instant("2020-08-20T00:00:00+08:00")
    assert doc.policy_id == doc.version == "douyin-2020-08-26.1"
    # The JSON form parses back to the same document.
    again = parse_document_json(doc.to_json(), "y")
    assert again.fields == doc.fields
    assert (
        again.policy.third_party_cart_banned_from_ms == doc.policy.third_party_cart_banned_from_ms
    )
    assert json.loads(doc.to_json())["rules"]["third-party-cart-banned"]["effective_from"] == (
        "2020-10-09T00:00:00+08:00"
    )


def test_json_document_matches_the_toml_policy() -> None:
    doc = parse_document(doc_dict(), "d")
    assert doc.policy.third_party_rate_bps == 2000
    assert doc.policy.third_party_cart_banned_from_ms == parse_instant("2020-10-09T00:00:00+08:00")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "dry_run"}, "mode: must be one of enforced, shadow"),
        ({"mode": None}, "mode: must be one of"),
        ({"effective_from": "2020-08-20"}, "effective_from: not an RFC 3339"),
        ({"effective_from": 5}, "effective_from: wrong type"),
        ({"version": ""}, "version: must not be empty"),
        ({"version": "a:b"}, "version: 'a:b' does not match"),
        ({"notice_window_days": -1}, "notice_window_days: must be 0..366"),
        ({"notice_window_days": True}, "notice_window_days: wrong type"),
        ({"max_backdate_seconds": "300"}, "max_backdate_seconds: wrong type"),
        ({"own_shop_sources": None}, "own_shop_sources: wrong type: null"),
        ({"author": "ops"}, "author: unknown key"),
    ],
)
def test_invalid_documents_give_one_line(change: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_document(doc_dict(**change), "doc")
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert str(e.value).startswith("doc: ")


def test_missing_keys_and_bad_rule_dates() -> None:
    for key in ("effective_from", "mode", "rules", "version"):
        d = doc_dict()
        d.pop(key)
        with pytest.raises(PolicyError, match=f"{key}: missing"):
            parse_document(d, "doc")
    d = doc_dict()
    d["rules"]["third-party-cart-banned"]["effective_from"] = "2020-10-09T00:00:00"
    with pytest.raises(PolicyError, match=r"rules\.third-party-cart-banned\.effective_from"):
        parse_document(d, "doc")
    with pytest.raises(PolicyError, match="expected a table/object"):
        parse_document([], "doc")
    with pytest.raises(PolicyError, match="invalid JSON"):
        parse_document_json(b"{", "doc")


def test_schema_examples_agree_with_the_parser() -> None:
    for path in sorted(EXAMPLES.glob("*/*.json")):
        d = json.loads(path.read_text("utf-8"))
        if path.parent.name == "valid":
            parse_document(d, path.name)
        else:
            with pytest.raises(PolicyError):
                parse_document(d, path.name)


def test_record_key_must_be_the_version_and_none_is_a_tombstone() -> None:
    doc = make_doc("v1", "2020-08-20T00:00:00Z")
    assert parse_record(b"v1", doc.to_json(), "r").version == "v1"  # type: ignore[union-attr]
    assert parse_record(b"v1", None, "r") is None
    with pytest.raises(PolicyError, match="is not the document's version"):
        parse_record(b"v2", doc.to_json(), "r")
    with pytest.raises(PolicyError, match="<key>: missing"):
        parse_record(None, doc.to_json(), "r")


def test_book_picks_latest_enforced_at_or_before_t() -> None:
    v1 = make_doc("v1", "2020-08-20T00:00:00+08:00")
    v2 = make_doc("v2", "2020-10-01T00:00:00+08:00", ban="2020-11-01T00:00:00+08:00")
    s1 = make_doc("s1", "2020-09-15T00:00:00+08:00", "shadow", rate=1500)
    book = PolicyBook([v2, s1, v1])
    assert book.enforced_at(parse_instant("2020-08-19T23:59:59.999+08:00")) is None
    assert book.enforced_at(parse_instant("2020-08-20T00:00:00+08:00")) is v1.policy
    assert book.enforced_at(parse_instant("2020-09-30T23:59:59.999+08:00")) is v1.policy
    assert book.enforced_at(parse_instant("2020-10-01T00:00:00+08:00")) is v2.policy
    assert book.shadows_at(parse_instant("2020-09-14T00:00:00+08:00")) == ()
    assert book.shadows_at(parse_instant("2020-09-15T00:00:00+08:00")) == (s1,)
    # A later record of the same id replaces it: promoting the shadow.
    promoted = make_doc("s1", "2020-09-15T00:00:00+08:00", rate=1500)
    assert book.add(promoted) is s1
    assert book.shadows_at(parse_instant("2020-09-20T00:00:00+08:00")) == ()
    assert book.enforced_at(parse_instant("2020-09-20T00:00:00+08:00")) is promoted.policy
    assert book.remove("s1") is promoted
    assert book.enforced_at(parse_instant("2020-09-20T00:00:00+08:00")) is v1.policy


def test_equal_effective_from_tie_is_broken_by_version() -> None:
    a = make_doc("a", "2020-09-01T00:00:00Z")
    b = make_doc("b", "2020-09-01T00:00:00Z")
    t = parse_instant("2020-09-02T00:00:00Z")
    assert PolicyBook([a, b]).enforced_at(t) is b.policy
    assert PolicyBook([b, a]).enforced_at(t) is b.policy


# ------------------------------------------------------------------------- properties

T0 = parse_instant("2020-01-01T00:00:00Z")
DAY = 86_400_000


@st.composite
def books(draw: st.DrawFn) -> list[PolicyDocument]:
    n = draw(st.integers(1, 6))
    days = draw(st.lists(st.integers(0, 60), min_size=n, max_size=n))
    modes = draw(st.lists(st.sampled_from(["enforced", "shadow"]), min_size=n, max_size=n))
    return [
        make_doc(f"v{i}", format_instant(T0 + d * DAY), m)
        for i, (d, m) in enumerate(zip(days, modes, strict=True))
    ]


_times = st.integers(T0 - 5 * DAY, T0 + 70 * DAY)


@settings(max_examples=60, deadline=None)
@given(books(), _times, _times)
def test_choice_is_monotone_in_t(docs: list[PolicyDocument], t1: int, t2: int) -> None:
    book = PolicyBook(docs)
    lo, hi = sorted((t1, t2))
    a, b = book.enforced_doc_at(lo), book.enforced_doc_at(hi)
    if a is not None:
        assert b is not None
        assert (a.effective_from_ms, a.version) <= (b.effective_from_ms, b.version)
    assert {s.version for s in book.shadows_at(lo)} <= {s.version for s in book.shadows_at(hi)}


@settings(max_examples=60, deadline=None)
@given(books(), _times, st.randoms(use_true_random=False))
def test_choice_is_independent_of_insertion_order(
    docs: list[PolicyDocument], t: int, rnd: random.Random
) -> None:
    shuffled = list(docs)
    rnd.shuffle(shuffled)
    a, b = PolicyBook(docs), PolicyBook(shuffled)
    assert a.enforced_doc_at(t) is b.enforced_doc_at(t)
    assert a.shadows_at(t) == b.shadows_at(t)
    assert a.documents() == b.documents()


@settings(max_examples=60, deadline=None)
@given(books(), _times)
def test_never_picks_a_version_effective_after_t(docs: list[PolicyDocument], t: int) -> None:
    book = PolicyBook(docs)
    chosen = book.enforced_doc_at(t)
    eligible = [d for d in docs if d.mode == "enforced" and d.effective_from_ms <= t]
    if chosen is None:
        assert eligible == []
    else:
        assert chosen.mode == "enforced" and chosen.effective_from_ms <= t
        assert chosen.effective_from_ms == max(d.effective_from_ms for d in eligible)
    assert all(s.effective_from_ms <= t and s.mode == "shadow" for s in book.shadows_at(t))


def test_base_is_not_mutated() -> None:
    make_doc("x", "2020-01-01T00:00:00Z", ban="2021-01-01T00:00:00Z")
    assert BASE["rules"]["third-party-cart-banned"]["effective_from"] == "2020-10-09T00:00:00+08:00"
