"""China time (Asia/Shanghai, UTC+8, no daylight saving): the one definition every date shown uses."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

CHINA = ZoneInfo("Asia/Shanghai")


def china_now() -> datetime:
    """Now, in China time."""
    return datetime.now(UTC).astimezone(CHINA)


def in_china(moment: datetime) -> datetime:
    """`moment` in China time (a naive moment is taken as UTC, as PostgreSQL hands them over)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(CHINA)


def format_china(moment: datetime | date | None, *, seconds: bool = False) -> str:
    """`2026-11-03 09:00` in China time (a date stays a date); empty for None."""
    if moment is None:
        return ""
    if not isinstance(moment, datetime):
        return moment.isoformat()
    return in_china(moment).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
