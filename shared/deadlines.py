"""The one set of lock-date thresholds: risk colours, escalation levels and abandonment.

The console's colours, `clearcard status`, the metrics' risk labels and the scheduler's
warnings all classify a device here, so an amber device is exactly one that has had its
first warning and a red one its second. The days count from the device's lock date in the
tax calendar (shared/tax_calendar.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Literal

from shared.tax_calendar import parse_period

Level = Literal["warning", "critical"]
Risk = Literal["red", "amber", "green", "unknown", "abandoned"]
RISKS: tuple[Risk, ...] = ("red", "amber", "green", "unknown", "abandoned")


@dataclass(frozen=True)
class Thresholds:
    """Days to the lock date that raise a warning and then a critical alarm; days that abandon."""

    warning_days: int = 5  # first escalation; amber
    critical_days: int = 2  # second escalation; red
    abandoned_days: int = 90  # no report for longer than this: abandoned (domain.md)

    def __post_init__(self) -> None:
        if not 0 <= self.critical_days < self.warning_days:
            raise ValueError("the critical threshold must be below the warning threshold (days)")
        if self.abandoned_days < 31:
            raise ValueError("a device is abandoned after at least 31 days without a report")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Thresholds:
        """CLEARCARD_LOCK_WARNING_DAYS, CLEARCARD_LOCK_CRITICAL_DAYS, CLEARCARD_ABANDONED_DAYS."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for name, variable in (("warning_days", "CLEARCARD_LOCK_WARNING_DAYS"),
                               ("critical_days", "CLEARCARD_LOCK_CRITICAL_DAYS"),
                               ("abandoned_days", "CLEARCARD_ABANDONED_DAYS")):
            raw = env.get(variable, "").strip()
            if raw:
                if not raw.isdigit():
                    raise ValueError(f"{variable} must be a whole number of days, got {raw!r}")
                values[name] = int(raw)
        return cls(**values)

    def level(self, days_left: int | None) -> Level | None:
        """The escalation a device with `days_left` to its lock date has reached, if any."""
        if days_left is None:
            return None
        if days_left <= self.critical_days:
            return "critical"
        if days_left <= self.warning_days:
            return "warning"
        return None

    def risk(self, days_left: int | None, *, cleared: bool = False, abandoned: bool = False) -> Risk:
        """The colour of a device: red (critical), amber (warning), green, unknown or abandoned."""
        if abandoned:
            return "abandoned"
        if days_left is None:
            return "unknown"
        if cleared and days_left >= 0:
            return "green"  # nothing left to do before this lock date
        level = self.level(days_left)
        return "red" if level == "critical" else "amber" if level == "warning" else "green"

    def last_report(self, latest_report_date: date | None, open_period: str | None) -> date | None:
        """When the device last reported: its own record, else when its open period's window opened.

        A device that holds period P open has cleared P-1, which it could do from the 1st of P.
        """
        if latest_report_date is not None:
            return latest_report_date
        if open_period is None:
            return None
        return _first_day(open_period)

    def abandoned(self, latest_report_date: date | None, open_period: str | None, today: date) -> bool:
        """No report for more than `abandoned_days`: the device is treated as abandoned."""
        last = self.last_report(latest_report_date, open_period)
        return last is not None and (today - last).days > self.abandoned_days


def _first_day(period: str) -> date:
    year, month = parse_period(period)
    return date(year, month, 1)


DEFAULT = Thresholds()
