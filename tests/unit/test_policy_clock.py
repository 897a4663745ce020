"""RFC 3339 parsing/formatting as integers, and the backdating clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.policy import decision_time, format_instant, parse_instant

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T08:00:00+08:00", 0),
        ("2020-09-06T00:00:00+08:00", 1_599_321_600_000),
        ("2020-09-05T16:00:00Z", 1_599_321_600_000),
        ("2020-09-05T16:00:00z", 1_599_321_600_000),
        ("2020-09-05t16:00:00-00:00", 1_599_321_600_000),
        ("2020-09-05T11:00:00-05:00", 1_599_321_600_000),
        ("2020-09-05T16:00:00.5Z", 1_599_321_600_500),
        ("2020-09-05T16:00:00.123Z", 1_599_321_600_123),
        ("2020-09-05T16:00:00.123999999Z", 1_599_321_600_123),  # floored, not rounded
        ("1969-12-31T23:59:59.999Z", -1),
        ("2020-02-29T00:00:00Z", 1_582_934_400_000),
        ("0001-01-01T00:00:00Z", -62_135_596_800_000),
        ("9999-12-31T23:59:59.999Z", 253_402_300_799_999),
    ],
)
def test_parse_instant(text: str, expected: int) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2020-09-06T00:00:00",  # no offset
        "2020-09-06",
        "2020-09-06 00:00:00+08:00",
        "2020-09-06T00:00+08:00",
        "2020-13-01T00:00:00Z",
        "2020-00-01T00:00:00Z",
        "2019-02-29T00:00:00Z",
        "2020-04-31T00:00:00Z",
        "2020-09-06T24:00:00Z",
        "2020-09-06T00:60:00Z",
        "2016-12-31T23:59:60Z",
        "2020-09-06T00:00:00+24:00",
        "2020-09-06T00:00:00+08:60",
        "2020-09-06T00:00:00+0800",
        "0000-01-01T00:00:00Z",
        "20200-01-01T00:00:00Z",
        "2020-09-06T00:00:00.Z",
        "2020-09-06T00:00:00Z\n",
        " 2020-09-06T00:00:00Z",
        "２０２０-09-06T00:00:00Z",  # full-width digits
        "",
    ],
)
def test_parse_instant_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_parse_instant_rejects_non_string() -> None:
    with pytest.raises(ValueError):
        parse_instant(1_599_321_600_000)  # type: ignore[arg-type]


def test_format_instant() -> None:
    assert format_instant(0) == "1970-01-01T00:00:00.000Z"
    assert format_instant(1_599_321_600_123) == "2020-09-05T16:00:00.123Z"
    assert format_instant(-1) == "1969-12-31T23:59:59.999Z"
    with pytest.raises(ValueError):
        format_instant(253_402_300_800_000)
    with pytest.raises(TypeError):
        format_instant(1.5)  # type: ignore[arg-type]


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))]
        ),
    )
)
def test_parse_agrees_with_datetime(dt: datetime) -> None:
    expected = (dt - EPOCH) // timedelta(milliseconds=1)
    assert parse_instant(dt.isoformat()) == expected
    utc = dt.astimezone(UTC)
    assert format_instant(expected) == (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_format_parse_round_trip(ms: int) -> None:
    assert parse_instant(format_instant(ms)) == ms


def test_decision_time() -> None:
    assert decision_time(1_000_000, None, 300_000) == (1_000_000, "event")
    assert decision_time(1_000_000, 1_300_000, 300_000) == (1_000_000, "event")
    assert decision_time(1_000_000, 1_300_001, 300_000) == (1_000_001, "record")
    assert decision_time(2_000_000, 1_000_000, 300_000) == (2_000_000, "event")  # future kept
    assert decision_time(1_000_000, 1_000_001, 0) == (1_000_001, "record")


def test_an_hour_seen_before_does_not_let_a_bad_minute_second_or_offset_through() -> None:
    assert parse_instant("2020-09-06T07:59:59.999+08:00") == 1_599_350_399_999
    for bad in ("2020-09-06T07:60:00+08:00", "2020-09-06T07:00:60+08:00",
                "2020-09-06T07:00:00+08:60", "2020-09-06T07:00:00+24:00"):
        with pytest.raises(ValueError):
            parse_instant(bad)
    assert parse_instant("2020-09-06T07:00:00-01:30") == 1_599_381_000_000
