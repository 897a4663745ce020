"""Fee arithmetic properties: integers only, never negative, reversals bounded by the charge."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.policy import fee_fen, reversal_fen

AMOUNT = st.integers(min_value=0, max_value=1_000_000_000_000)
RATE = st.integers(min_value=0, max_value=10_000)


@given(AMOUNT, RATE)
def test_fee_is_half_up_int_and_non_negative(amount: int, rate: int) -> None:
    fee = fee_fen(amount, rate)
    assert type(fee) is int
    assert 0 <= fee <= amount
    # Half up: within half a fen of the exact value, ties going up.
    exact2 = 2 * amount * rate  # twice the exact fee, in 1/10000 fen
    assert 2 * fee * 10_000 - 10_000 <= exact2 < 2 * fee * 10_000 + 10_000


@given(AMOUNT, RATE, st.data())
def test_reversal_never_exceeds_what_is_left(amount: int, rate: int, data: st.DataObject) -> None:
    charged = fee_fen(amount, rate)
    reversed_ = data.draw(st.integers(min_value=0, max_value=charged))
    refund = data.draw(AMOUNT)
    rev = reversal_fen(refund, rate, charged, reversed_)
    assert type(rev) is int
    assert 0 <= rev <= charged - reversed_


@st.composite
def split_refunds(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    amount = draw(st.integers(min_value=0, max_value=10_000_000_000))
    rate = draw(RATE)
    n = draw(st.integers(min_value=1, max_value=20))
    cuts = sorted(draw(st.lists(st.integers(0, amount), min_size=n - 1, max_size=n - 1)))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, amount], strict=True)]
    return amount, rate, parts


@given(split_refunds())
def test_split_full_refund_reverses_the_charge_within_rounding(
    case: tuple[int, int, list[int]],
) -> None:
    amount, rate, parts = case
    assert sum(parts) == amount
    charged = fee_fen(amount, rate)
    reversed_ = 0
    for part in parts:
        rev = reversal_fen(part, rate, charged, reversed_)
        assert rev >= 0
        reversed_ += rev
        assert reversed_ <= charged
    assert abs(reversed_ - charged) <= len(parts)


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        ((1.0, 2000), TypeError),
        ((100, 2000.0), TypeError),
        ((True, 2000), TypeError),
        ((100, True), TypeError),
        (("100", 2000), TypeError),
        ((-1, 2000), ValueError),
        ((100, -1), ValueError),
        ((100, 10_001), ValueError),
    ],
)
def test_fee_fen_rejects_non_int_and_negative(args: tuple[Any, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        fee_fen(*args)


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        ((100, 2000, 20.0, 0), TypeError),
        ((100, 2000, 20, False), TypeError),
        ((100.0, 2000, 20, 0), TypeError),
        ((100, 2000, -1, 0), ValueError),
        ((100, 2000, 20, -1), ValueError),
        ((100, 2000, 20, 21), ValueError),
        ((-100, 2000, 20, 0), ValueError),
    ],
)
def test_reversal_fen_rejects_bad_input(args: tuple[Any, ...], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        reversal_fen(*args)


def test_known_values() -> None:
    assert fee_fen(19_900, 2000) == 3980
    assert fee_fen(19_999, 2000) == 4000
    assert fee_fen(10_010, 500) == 501  # 500.5 rounds up
    assert fee_fen(10_009, 500) == 500
    assert fee_fen(1_000_000_000_000, 10_000) == 1_000_000_000_000
    assert reversal_fen(19_900, 2000, 3980, 3000) == 980
