"""Times typed by users (pipeline/cli/timeparse.py). ``now`` is always injected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipeline.cli.timeparse import parse_duration, parse_time
from pipeline.errors import ConfigError

NOW = datetime(2026, 11, 27, 10, 30, 15, 123456, tzinfo=UTC)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type,misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T02:14:00Z", at(2026, 11, 27, 2, 14)),
        ("2026-11-27T02:14:00.5Z", at(2026, 11, 27, 2, 14, 0, 500000)),
        ("2026-11-27T02:14:00.123456Z", at(2026, 11, 27, 2, 14, 0, 123456)),
        ("2026-11-27T02:14:00+00:00", at(2026, 11, 27, 2, 14)),
        ("2026-11-27T04:14:00+02:00", at(2026, 11, 27, 2, 14)),
        ("2026-11-26T21:14:00-05:00", at(2026, 11, 27, 2, 14)),
        ("2026-11-27T07:44:00+05:30", at(2026, 11, 27, 2, 14)),
        ("2026-11-27t02:14:00z", at(2026, 11, 27, 2, 14)),
        ("2026-11-27 02:14:00Z", at(2026, 11, 27, 2, 14)),
        ("  2026-11-27T02:14:00Z\n", at(2026, 11, 27, 2, 14)),
        ("2027-01-01T01:00:00+02:00", at(2026, 12, 31, 23, 0)),
    ],
    ids=[
        "zulu",
        "fraction",
        "micros",
        "plus-zero",
        "plus-two",
        "minus-five",
        "half-hour-offset",
        "lowercase",
        "space-separator",
        "surrounding-space",
        "offset-crosses-year",
    ],
)
def test_rfc3339(text: str, expected: datetime) -> None:
    got = parse_time(text, NOW)
    assert got == expected
    assert got.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T02:14:00", at(2026, 11, 27, 2, 14)),
        ("2026-11-27 02:14", at(2026, 11, 27, 2, 14)),
        ("2026-11-27 02:14:09", at(2026, 11, 27, 2, 14, 9)),
        ("2026-11-27 02:14:09.25", at(2026, 11, 27, 2, 14, 9, 250000)),
        ("2026-11-27", at(2026, 11, 27)),
    ],
    ids=["naive-T", "date-space-hhmm", "date-space-hhmmss", "date-space-fraction", "date-only"],
)
def test_naive_times_are_utc(text: str, expected: datetime) -> None:
    got = parse_time(text, NOW)
    assert got == expected
    assert got.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "now", "expected"),
    [
        ("02:14", NOW, at(2026, 11, 27, 2, 14)),
        ("2:14", NOW, at(2026, 11, 27, 2, 14)),
        ("23:59:59", NOW, at(2026, 11, 27, 23, 59, 59)),
        ("00:00", NOW, at(2026, 11, 27, 0, 0)),
        # now is 2026-11-28 02:00 in UTC+05:00, i.e. still the 27th in UTC.
        ("02:14", datetime(2026, 11, 28, 2, 0, tzinfo=timezone(timedelta(hours=5))), at(2026, 11, 27, 2, 14)),
        # now is 2026-11-27 20:00 in UTC-05:00, i.e. already the 28th in UTC.
        (
            "02:14",
            datetime(2026, 11, 27, 20, 0, tzinfo=timezone(timedelta(hours=-5))),
            at(2026, 11, 28, 2, 14),
        ),
    ],
    ids=["hh-mm", "h-mm", "hh-mm-ss", "midnight", "now-ahead-of-utc", "now-behind-utc"],
)
def test_clock_time_is_today_in_utc(text: str, now: datetime, expected: datetime) -> None:
    got = parse_time(text, now)
    assert got == expected
    assert got.tzinfo is UTC
    assert got.microsecond == 0


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30m", timedelta(minutes=30)),
        ("6h", timedelta(hours=6)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("90s", timedelta(seconds=90)),
        ("6h ago", timedelta(hours=6)),
        ("6 h", timedelta(hours=6)),
        ("  2d   ago ", timedelta(days=2)),
        ("6H", timedelta(hours=6)),
        ("6h AGO", timedelta(hours=6)),
        ("1.5h", timedelta(minutes=90)),
        ("0m", timedelta(0)),
    ],
    ids=[
        "minutes",
        "hours",
        "days",
        "weeks",
        "seconds",
        "ago",
        "space-before-unit",
        "spaced-ago",
        "uppercase-unit",
        "uppercase-ago",
        "fractional",
        "zero",
    ],
)
def test_relative_times_count_back_from_now(text: str, ago: timedelta) -> None:
    got = parse_time(text, NOW)
    assert got == NOW - ago
    assert got.tzinfo is UTC


def test_relative_time_with_non_utc_now_is_returned_in_utc() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    got = parse_time("1h", now)
    assert got == at(2026, 11, 27, 9, 0)
    assert got.tzinfo is UTC


INVALID = [
    "",
    "   ",
    "yesterday",
    "now",
    "6x",
    "-6h",
    "6h later",
    "ago",
    "h",
    "24:00",
    "12:60",
    "12:30:60",
    "123:00",
    "2026-13-01",
    "2026-02-30 10:00",
    "27/11/2026",
    "2026-11-27T02:14:00+25:00",
    "99999999w",
    "9" * 400 + "s",
]


@pytest.mark.parametrize("text", INVALID, ids=[ascii(t)[1:-1][:20] or "empty" for t in INVALID])
def test_invalid_times_raise_config_error_with_the_input(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_time(text, NOW)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("6h", timedelta(hours=6)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(days=7)),
        ("0.5d", timedelta(hours=12)),
        (" 6H ", timedelta(hours=6)),
        ("10 m", timedelta(minutes=10)),
    ],
    ids=["seconds", "minutes", "hours", "days", "week", "fraction", "spaces-uppercase", "space-before-unit"],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


INVALID_DURATIONS = ["", "6", "h", "6y", "-1h", "1h30m", "six hours", "1e3s", "99999999999w"]


@pytest.mark.parametrize("text", INVALID_DURATIONS, ids=[t or "empty" for t in INVALID_DURATIONS])
def test_invalid_durations_raise_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text)
    assert repr(text) in str(info.value)
