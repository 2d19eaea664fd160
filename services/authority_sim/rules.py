"""The simulated bureau's rules, without I/O: its clock, lock dates and declaration status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

from shared.messages.authority import DeclarationStatus

CHINA_STANDARD_TIME = timezone(timedelta(hours=8))
NORMAL_LOCK_DAY = 15  # the 15th; the real bureau moves it later around public holidays


def bureau_now(fleet_clock: str | None, started_at: datetime, real_now: datetime) -> datetime:
    """The bureau's time: the fleet's clock advancing in real time since the first start, else real time."""
    if fleet_clock is None:
        return real_now.astimezone(CHINA_STANDARD_TIME)
    return datetime.fromisoformat(fleet_clock) + (real_now - started_at)


def _add_months(period: str, months: int) -> tuple[int, int]:
    year, month = int(period[:4]), int(period[5:7])
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def lock_date(period: str) -> date:
    """The day a device locks if `period` is not cleared: the 15th of the month after the period."""
    year, month = _add_months(period, 1)
    return date(year, month, NORMAL_LOCK_DAY)


def next_lock_date(period: str) -> date:
    """After clearing `period` the device runs until the next period's lock date."""
    year, month = _add_months(period, 2)
    return date(year, month, NORMAL_LOCK_DAY)


@dataclass(frozen=True)
class Registration:
    """What the bureau knows of a device's taxpayer for the fleet's period."""

    taxpayer_id: str
    machine_no: int
    period: str
    declared: bool
    comparison: str  # pass | fail


def declaration_status(
    registration: Registration | None, taxpayer_id: str, period: str, reported: bool
) -> DeclarationStatus:
    """Filing and comparison as the bureau shows them.

    Periods before the fleet's period count as filed and passed; later ones as not filed yet.
    The comparison stays pending until the device's summary for the period was reported.
    """
    if registration is None or registration.taxpayer_id != taxpayer_id or period > registration.period:
        return DeclarationStatus(declared=False, comparison="pending")
    if period < registration.period:
        return DeclarationStatus(declared=True, comparison="pass")
    if not registration.declared or not reported:
        return DeclarationStatus(declared=registration.declared, comparison="pending")
    return DeclarationStatus(declared=True, comparison="pass" if registration.comparison == "pass" else "fail")


def utc_now() -> datetime:
    return datetime.now(UTC)
