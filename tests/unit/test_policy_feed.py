"""The policies topic reader's record handling (no broker): what is applied, what is refused."""

from __future__ import annotations

import logging

import pytest

from streams import metrics
from streams.engine.policies import PolicyFeed
from streams.policy.versions import PolicyBook
from tests.unit.policy_docs import make_doc

SEED = make_doc("seed", "1970-01-01T00:00:00Z")
V2 = make_doc("v2", "2020-11-01T00:00:00+08:00")


def feed() -> PolicyFeed:
    return PolicyFeed(PolicyBook(), "p-policies", SEED, {}, client_id="t", code_version="0",
                      timeout=1.0)


def refused() -> float:
    return metrics.POLICY_REFUSED._value.get()


def test_valid_records_are_applied_in_order_and_the_latest_of_a_key_wins() -> None:
    f = feed()
    f.apply(b"seed", SEED.to_json(), "p@0:0")
    f.apply(b"v2", V2.to_json(), "p@0:1")
    assert [d.version for d in f.book.documents()] == ["seed", "v2"]
    shadow = make_doc("v2", "2020-11-01T00:00:00+08:00", "shadow")
    f.apply(b"v2", shadow.to_json(), "p@0:2")
    assert f.book.get("v2") is not None and f.book.get("v2").mode == "shadow"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        (b"broken", b"{not json", "invalid JSON"),
        (b"not-v2", V2.to_json(), "is not the document's version"),
        (None, V2.to_json(), "<key>"),
        (b"v3", b'{"version": "v3"}', "effective_from"),
    ],
)
def test_bad_records_are_refused_with_one_line_and_counted(
    key: bytes | None, value: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    f = feed()
    f.apply(b"seed", SEED.to_json(), "p@0:0")
    before = refused()
    with caplog.at_level(logging.ERROR, "streams.engine.policies"):
        f.apply(key, value, "p@0:9")
    assert refused() == before + 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert "refused" in line and why in line and "p@0:9" in line
    assert [d.version for d in f.book.documents()] == ["seed"]


def test_a_tombstone_may_not_withdraw_the_last_enforced_version() -> None:
    f = feed()
    f.apply(b"seed", SEED.to_json(), "p@0:0")
    f.apply(b"v2", V2.to_json(), "p@0:1")
    f.apply(b"v2", None, "p@0:2")
    assert [d.version for d in f.book.documents()] == ["seed"]
    before = refused()
    f.apply(b"seed", None, "p@0:3")
    assert refused() == before + 1
    assert [d.version for d in f.book.documents()] == ["seed"]
    f.apply(b"unknown", None, "p@0:4")  # nothing to withdraw: not an error
    assert refused() == before + 1
