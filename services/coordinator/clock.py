"""The time the scheduler plans by: the devices' clock (an emulated fleet's clock when set)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.china_time import CHINA
from shared.config import Settings


@dataclass
class Clock:
    """Real time in China, or an emulated start instant that then runs on `source` (seconds).

    `source` is `time.monotonic` in production; tests pass `trio.current_time` under trio's
    MockClock (or any counter) to run the scheduler over emulated weeks without waiting.
    """

    start: datetime | None = None
    source: Callable[[], float] = time.monotonic
    _origin: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._origin = self.source()

    def now(self) -> datetime:
        if self.start is None:
            return datetime.now(CHINA)
        return (self.start + timedelta(seconds=self.source() - self._origin)).astimezone(CHINA)


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
