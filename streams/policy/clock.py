"""Instants as integer epoch milliseconds.

The hot path compares instants per event, so parsing and formatting use integer civil-calendar
arithmetic instead of `datetime` objects, and the one regex is compiled at import.
"""

from __future__ import annotations

import re
from typing import Literal

Clock = Literal["event", "record"]
"""Which clock a decision used: the producer's `occurred_at` or the Kafka record timestamp."""

_MS_PER_DAY = 86_400_000
_MIN_FORMAT_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
_MAX_FORMAT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

# RFC 3339 `date-time`: the offset (or Z) is mandatory, so a producer cannot leave the time zone
# to guesswork. Leap seconds (":60") are not accepted: they have no distinct epoch millisecond.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 (H. Hinnant's algorithm); avoids datetime on the hot path."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


_HOURS: dict[str, int] = {}
"""Validated "YYYY-MM-DDTHH" prefixes -> epoch ms of that hour (UTC-naive): events of one
hour share it, so the calendar arithmetic runs once per hour seen, not per event."""
_MAX_HOURS = 1 << 14


def _hour_ms(m: re.Match[str], s: str) -> int:
    year, month, day, hour = int(m[1]), int(m[2]), int(m[3]), int(m[4])
    if year < 1:
        raise ValueError(f"year out of range: {s!r}")
    if not 1 <= month <= 12:
        raise ValueError(f"month out of range: {s!r}")
    dim = 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month]
    if not 1 <= day <= dim:
        raise ValueError(f"day out of range: {s!r}")
    if hour > 23:
        raise ValueError(f"time of day out of range: {s!r}")
    return (_days_from_civil(year, month, day) * 24 + hour) * 3_600_000


def parse_instant(s: str) -> int:
    """Parse an RFC 3339 date-time with a mandatory offset into epoch ms (sub-ms digits floored).

    Raises ValueError for anything else, so an ambiguous local time never reaches a rule.
    """
    if not isinstance(s, str):
        raise ValueError(f"instant must be a string, got {type(s).__name__}")
    m = _RFC3339.fullmatch(s)
    if m is None:
        raise ValueError(f"not an RFC 3339 date-time with offset: {s!r}")
    _, _, _, _, mi, se, frac, sign, oh, om = m.groups()
    head = s[:13]  # the pattern's fields have fixed widths up to the seconds
    base = _HOURS.get(head)
    if base is None:
        base = _hour_ms(m, s)
        if len(_HOURS) >= _MAX_HOURS:
            _HOURS.clear()
        _HOURS[head] = base
    minute, second = int(mi), int(se)
    if minute > 59 or second > 59:
        raise ValueError(f"time of day out of range: {s!r}")
    ms = base + (minute * 60 + second) * 1000
    if frac:
        ms += int((frac + "00")[:3])
    if sign is None:
        return ms
    oh_, om_ = int(oh), int(om)
    if oh_ > 23 or om_ > 59:
        raise ValueError(f"offset out of range: {s!r}")
    offset_ms = (oh_ * 60 + om_) * 60_000
    return ms - offset_ms if sign == "+" else ms + offset_ms


def format_instant(ms: int) -> str:
    """Format epoch ms as UTC RFC 3339 with milliseconds and 'Z' (one canonical form for output)."""
    if type(ms) is not int:
        raise TypeError(f"epoch ms must be an int, got {type(ms).__name__}")
    if not _MIN_FORMAT_MS <= ms <= _MAX_FORMAT_MS:
        raise ValueError(f"epoch ms out of the year 1..9999 range: {ms}")
    days, rem = divmod(ms, _MS_PER_DAY)
    y, mo, d = _civil_from_days(days)
    secs, millis = divmod(rem, 1000)
    h, secs = divmod(secs, 3600)
    mi, s = divmod(secs, 60)
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{millis:03d}Z"


def decision_time(
    occurred_ms: int, record_ms: int | None, max_backdate_ms: int
) -> tuple[int, Clock]:
    """Pick the instant the rules are judged at.

    The producer's clock is trusted unless it lies more than `max_backdate_ms` before the broker's
    record timestamp: then a backdated event could slip under an older rule, so the decision uses
    `record_ms - max_backdate_ms` instead. A future `occurred_ms` is kept: it can only be stricter.
    """
    if record_ms is not None and record_ms - occurred_ms > max_backdate_ms:
        return record_ms - max_backdate_ms, "record"
    return occurred_ms, "event"
