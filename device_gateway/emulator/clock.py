"""The emulated device clock and the calendar rules derived from it (pure).

Rules (docs/device-protocol.md): the device keeps China Standard Time. The reporting window
of an open period opens on the 1st of the following month; the lock date is the period's filing
deadline in the tax calendar (shared/tax_calendar.py: the 15th unless moved). A device
clock behind the real time by more than an hour or ahead by more than a day is
abnormal (the bureau refuses its data; the clock can only be moved forwards).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.china_time import CHINA
from shared.tax_calendar import next_period, parse_period, window_start

__all__ = ["next_period", "parse_period", "window_start"]  # the emulator's calendar words
CLOCK_BEHIND_LIMIT_S = 3600  # behind by more than this: abnormal
CLOCK_AHEAD_LIMIT_S = 86400  # ahead by more than this: abnormal
WRITEBACK_TIME_TOLERANCE = timedelta(hours=24)  # package issued_at vs device clock
CLOCK_BACKWARD_TOLERANCE = timedelta(hours=1)  # a clock block this far back is ignored, not refused
LOCK_DATE_SLACK = timedelta(days=16)  # how far past the calendar's date a bureau's package may move it


def clock_abnormal(skew_seconds: float) -> bool:
    """True when a clock this far off the real time is refused."""
    return skew_seconds < -CLOCK_BEHIND_LIMIT_S or skew_seconds > CLOCK_AHEAD_LIMIT_S


def device_now(clock_base: datetime, wall_base: datetime, wall_now: datetime) -> datetime:
    """The device clock: where it started plus the real time elapsed since, in CST."""
    return (clock_base + (wall_now - wall_base)).astimezone(CHINA)


def parse_instant(value: str) -> datetime:
    """An ISO 8601 instant with an offset; ValueError otherwise."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return moment
