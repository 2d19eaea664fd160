"""The emulated device clock and the calendar rules derived from it (pure).

Rules (docs/device-protocol.md): the device keeps China Standard Time. The reporting window
of an open period opens on the 1st of the following month; the lock date is the 15th of that
month. A device clock behind the real time by more than an hour or ahead by more than a day is
abnormal (the bureau refuses its data; the clock can only be moved forwards).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

CST = timezone(timedelta(hours=8), "CST")
CLOCK_BEHIND_LIMIT_S = 3600  # behind by more than this: abnormal
CLOCK_AHEAD_LIMIT_S = 86400  # ahead by more than this: abnormal
WRITEBACK_TIME_TOLERANCE = timedelta(hours=24)  # package issued_at vs device clock
CLOCK_BACKWARD_TOLERANCE = timedelta(hours=1)  # a clock block this far back is ignored, not refused
LOCK_DAY = 15
LOCK_DATE_SLACK = timedelta(days=16)  # how far past the 15th a bureau may move a lock date (holidays)


def clock_abnormal(skew_seconds: float) -> bool:
    """True when a clock this far off the real time is refused."""
    return skew_seconds < -CLOCK_BEHIND_LIMIT_S or skew_seconds > CLOCK_AHEAD_LIMIT_S


def device_now(clock_base: datetime, wall_base: datetime, wall_now: datetime) -> datetime:
    """The device clock: where it started plus the real time elapsed since, in CST."""
    return (clock_base + (wall_now - wall_base)).astimezone(CST)


def parse_period(period: str) -> tuple[int, int]:
    """(year, month) of a YYYY-MM period; ValueError otherwise."""
    year, sep, month = period.partition("-")
    if not sep or len(year) != 4 or len(month) != 2 or not (year + month).isdigit():
        raise ValueError(f"period {period!r} is not YYYY-MM")
    y, m = int(year), int(month)
    if not 1 <= m <= 12:
        raise ValueError(f"period {period!r} is not a real month")
    return y, m


def next_period(period: str) -> str:
    """The month after `period`."""
    y, m = parse_period(period)
    return f"{y + m // 12:04d}-{m % 12 + 1:02d}"


def window_start(period: str) -> date:
    """The day the reporting window of `period` opens (the 1st of the next month)."""
    y, m = parse_period(next_period(period))
    return date(y, m, 1)


def default_lock_date(period: str) -> date:
    """The lock date while `period` is open: the 15th of the month after it."""
    return window_start(period).replace(day=LOCK_DAY)


def parse_instant(value: str) -> datetime:
    """An ISO 8601 instant with an offset; ValueError otherwise."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return moment
