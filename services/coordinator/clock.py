"""The time the scheduler plans by: the devices' clock (an emulated fleet's clock when set)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from shared.config import Settings

CHINA = timezone(timedelta(hours=8))


@dataclass
class Clock:
    """Real time in China, or an emulated start instant that then runs in real time."""

    start: datetime | None = None
    _origin: float = field(default_factory=time.monotonic)

    def now(self) -> datetime:
        if self.start is None:
            return datetime.now(CHINA)
        return (self.start + timedelta(seconds=time.monotonic() - self._origin)).astimezone(CHINA)


def clock_for(settings: Settings) -> Clock:
    """The fleet file's `clock` when emulating, real time otherwise."""
    if settings.fleet_file is not None and settings.fleet_file.exists():
        from shared.fleet import load_fleet

        return Clock(load_fleet(settings.fleet_file).clock)
    return Clock()


def previous_period(now: datetime) -> str:
    """The last closed tax period (month) at `now`."""
    first = now.replace(day=1)
    last = first - timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"
