"""The tax calendar (`CLEARCARD_TAX_CALENDAR`): each period's filing deadline, which is the lock date.

A period (month) is reported from the 1st of the following month until its filing deadline,
normally the 15th of that month and moved later around public holidays by the State Taxation
Administration's yearly notice. The deadline is also the lock date (开票截止日期) of a device
holding the period uncleared. Every part of ClearCard takes these dates from one `TaxCalendar`:
the emulated devices, the bureau simulator, the coordinator's scheduler, the status views.

The file is TOML: `[deadlines]` maps `"YYYY-MM"` to `"YYYY-MM-DD"`; an optional `[calendar]`
table names it and its source. Periods it does not list fall due on the 15th. A bad file is
refused whole with an error naming its line.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from shared.china_time import CHINA  # devices, bureau and deadlines keep China Standard Time

NORMAL_DEADLINE_DAY = 15
_PERIOD = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


class CalendarError(ValueError):
    """The tax calendar file cannot be used; the message names the file and line."""


def parse_period(period: str) -> tuple[int, int]:
    """(year, month) of a YYYY-MM period; ValueError otherwise."""
    if not isinstance(period, str) or not _PERIOD.match(period):
        raise ValueError(f"period {period!r} is not YYYY-MM")
    return int(period[:4]), int(period[5:7])


def add_months(period: str, months: int) -> str:
    """The period `months` after (or before, when negative) `period`."""
    year, month = parse_period(period)
    index = year * 12 + (month - 1) + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def next_period(period: str) -> str:
    """The month after `period`."""
    return add_months(period, 1)


def period_of(day: date) -> str:
    """The period (month) a date belongs to."""
    return f"{day.year:04d}-{day.month:02d}"


def window_start(period: str) -> date:
    """The day the reporting window of `period` opens: the 1st of the following month."""
    year, month = parse_period(next_period(period))
    return date(year, month, 1)


@dataclass(frozen=True)
class TaxCalendar:
    """Filing deadlines by period; periods not listed are due on the 15th of the next month."""

    deadlines: Mapping[str, date] = field(default_factory=dict)
    name: str = "default"
    source: str | None = None

    def deadline(self, period: str) -> date:
        """The filing deadline of `period`: also the lock date of a device holding it."""
        listed = self.deadlines.get(period)
        return listed if listed is not None else window_start(period).replace(day=NORMAL_DEADLINE_DAY)

    def lock_date(self, period: str) -> date:
        """The day a device holding `period` uncleared locks (after it, not on it)."""
        return self.deadline(period)

    def next_lock_date(self, period: str) -> date:
        """After clearing `period`, the device runs until the next period's deadline."""
        return self.deadline(next_period(period))

    def window(self, period: str) -> tuple[date, date]:
        """The reporting window of `period`: from the 1st of the next month to its deadline."""
        return window_start(period), self.deadline(period)

    def moved(self) -> dict[str, date]:
        """The periods whose deadline is not the 15th (holidays, weekends)."""
        default = TaxCalendar()
        return {p: d for p, d in sorted(self.deadlines.items()) if d != default.deadline(p)}


DEFAULT = TaxCalendar()


def _line_of(lines: list[str], key: str) -> int:
    pattern = re.compile(rf"""^\s*(["']?{re.escape(key)}["']?\s*=|\[\s*{re.escape(key)}\s*\])""")
    return next((n for n, line in enumerate(lines, 1) if pattern.match(line)), 1)


def _deadline(value: Any) -> date:
    if isinstance(value, datetime):
        raise ValueError("a deadline is a date, not a date and time")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return date.fromisoformat(value)
    raise ValueError(f"{value!r} is not a date YYYY-MM-DD")


def parse_calendar(text: str, source: str = "<tax calendar>") -> TaxCalendar:
    """Validate a calendar file's text; raises CalendarError naming the first bad line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CalendarError(f"{source}: not valid TOML: {exc}") from None
    lines = text.splitlines()
    unknown = sorted(set(raw) - {"deadlines", "calendar"})
    if unknown:
        raise CalendarError(f"{source}, line {_line_of(lines, unknown[0])}: unknown key {unknown[0]!r} "
                            "(a calendar has [calendar] and [deadlines])")
    table = raw.get("deadlines")
    if not isinstance(table, dict) or not table:
        raise CalendarError(f"{source}: no [deadlines] table mapping \"YYYY-MM\" to \"YYYY-MM-DD\"")
    deadlines: dict[str, date] = {}
    for period, value in table.items():
        where = f"{source}, line {_line_of(lines, period)}"
        try:
            parse_period(period)
        except ValueError:
            raise CalendarError(f"{where}: {period!r} is not a period YYYY-MM") from None
        try:
            deadline = _deadline(value)
        except ValueError as exc:
            raise CalendarError(f"{where}: period {period}: {exc}") from None
        if period_of(deadline) != next_period(period):
            raise CalendarError(f"{where}: period {period} falls due in {next_period(period)}, "
                                f"not on {deadline.isoformat()}")
        deadlines[period] = deadline
    meta = raw.get("calendar", {})
    if not isinstance(meta, dict):
        raise CalendarError(f"{source}, line {_line_of(lines, 'calendar')}: 'calendar' must be a table")
    return TaxCalendar(deadlines=deadlines, name=str(meta.get("name") or Path(source).stem),
                       source=str(meta["source"]) if meta.get("source") else None)


def shipped() -> list[str]:
    """Names of the published calendars shipped inside ClearCard (e.g. `cn-2026`)."""
    folder = resources.files("shared.calendars")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_calendar(value: str | Path) -> TaxCalendar:
    """A calendar from a file path, or a shipped calendar by name (`cn-2026`)."""
    path = Path(value)
    if not path.exists() and str(value) in shipped():
        resource = resources.files("shared.calendars") / f"{value}.toml"
        return parse_calendar(resource.read_text(encoding="utf-8"), f"{value} (shipped)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        names = ", ".join(shipped())
        raise CalendarError(f"{path}: cannot read the tax calendar: {exc.strerror} "
                            f"(shipped calendars: {names})") from None
    return parse_calendar(text, str(path))


def today_in_china(now: datetime | None = None) -> date:
    """China's date now (or at `now`)."""
    return (now or datetime.now(CHINA)).astimezone(CHINA).date()
