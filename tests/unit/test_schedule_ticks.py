"""Schedule times without a database: intervals, cron in a time zone across DST, run ids."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

import durapipe as dp
from durapipe import _schedules as sch

BERLIN = ZoneInfo("Europe/Berlin")


def _at(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()


def _local(ts: float) -> str:
    return datetime.fromtimestamp(ts, BERLIN).strftime("%m-%d %H:%M%z")


def test_intervals_are_multiples_of_the_interval_since_the_epoch() -> None:
    assert sch.parse_every("1h30m") == 5400 and sch.parse_every("90") == 90
    assert sch.next_tick("every", "900", "UTC", 1000.0) == 1800.0
    assert sch.next_tick("every", "900", "UTC", 1800.0) == 2700.0  # strictly after
    assert sch.last_tick("every", "900", "UTC", 1800.0) == 1800.0
    assert sch.ticks_between("every", "60", "UTC", 60.0, 240.0) == [60.0, 120.0, 180.0, 240.0]
    assert sch.count_ticks("every", "60", "UTC", 60.0, 240.0) == 4
    assert sch.describe("every", "5400", "UTC") == "every 1h30m"


def test_cron_in_a_time_zone_across_dst_changes() -> None:
    # Spring forward (29 March 2026, 02:00 -> 03:00): 02:30 does not exist; it fires once at 03:00.
    t = sch.next_tick("cron", "30 2 * * *", "Europe/Berlin", _at(2026, 3, 28, 12))
    assert _local(t) == "03-29 03:00+0200"
    assert _local(sch.next_tick("cron", "30 2 * * *", "Europe/Berlin", t)) == "03-30 02:30+0200"
    # Fall back (25 October 2026, 03:00 -> 02:00): a fixed 02:30 fires once ...
    t = sch.next_tick("cron", "30 2 * * *", "Europe/Berlin", _at(2026, 10, 24, 12))
    assert _local(t) == "10-25 02:30+0200"
    assert _local(sch.next_tick("cron", "30 2 * * *", "Europe/Berlin", t)) == "10-26 02:30+0100"
    # ... and a wildcard hour fires in both passes of the repeated hour.
    ticks = sch.ticks_between(
        "cron", "*/30 * * * *", "Europe/Berlin", _at(2026, 10, 25, 2, 0), _at(2026, 10, 25, 3, 0)
    )
    assert [_local(x) for x in ticks] == [
        "10-25 02:00+0200",
        "10-25 02:30+0200",
        "10-25 02:00+0100",
        "10-25 02:30+0100",
        "10-25 03:00+0100",
    ]
    # A nightly job in Berlin is at 03:00 local time, summer and winter.
    assert sch.next_tick("cron", "0 3 * * *", "Europe/Berlin", _at(2026, 7, 1)) == _at(
        2026, 7, 1, 3
    )
    assert sch.next_tick("cron", "0 3 * * *", "Europe/Berlin", _at(2026, 12, 1)) == _at(
        2026, 12, 1, 3
    )


def test_tick_run_ids_are_derived_from_schedule_and_tick() -> None:
    assert sch.tick_run_id("nightly", _at(2026, 7, 1, 3)) == "nightly:20260701T010000Z"
    assert sch.tick_run_id("x" * 100, 0.0) == "x" * 100 + ":19700101T000000Z"  # a valid run id


def test_bad_specs_say_which_part_is_wrong() -> None:
    with pytest.raises(dp.ConfigError, match="the month field '13'"):
        dp.Cron("0 3 * 13 *")
    with pytest.raises(dp.ConfigError, match="a schedule fires at most once a second"):
        dp.Every("0s")
    with pytest.raises(dp.ConfigError, match="give whole seconds"):
        dp.Every(0.5)
    with pytest.raises(dp.ConfigError, match="catch-up 'some' is unknown"):
        dp.Cron("* * * * *", catch_up="some")
    with pytest.raises(dp.ConfigError, match="give dp.Cron"):
        dp.pipeline(schedule="0 3 * * *")  # type: ignore[call-overload]
