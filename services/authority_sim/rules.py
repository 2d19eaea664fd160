"""The simulated bureau's rules, without I/O: its clock and declaration status.

Lock dates come from the tax calendar (shared/tax_calendar.py), the same one the devices use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.china_time import CHINA
from shared.messages.authority import DeclarationStatus

# A fleet device with `comparison = "pending"`: the bureau's comparison passes this long after
# the device's summary reached it, unless the fleet entry says otherwise.
DEFAULT_PENDING_MINUTES = 30


def bureau_now(fleet_clock: str | None, started_at: datetime, real_now: datetime) -> datetime:
    """The bureau's time: the fleet's clock advancing in real time since the first start, else real time."""
    if fleet_clock is None:
        return real_now.astimezone(CHINA)
    return datetime.fromisoformat(fleet_clock) + (real_now - started_at)


@dataclass(frozen=True)
class Registration:
    """What the bureau knows of a device's taxpayer for the fleet's period."""

    taxpayer_id: str
    machine_no: int
    period: str
    declared: bool
    comparison: str  # pass | fail | pending
    pending_minutes: int | None = None  # pending: passes this long after the report; None = never


def declaration_status(
    registration: Registration | None, taxpayer_id: str, period: str, reported_at: datetime | None,
    real_now: datetime,
) -> DeclarationStatus:
    """Filing and comparison as the bureau shows them.

    Periods before the fleet's period count as filed and passed; later ones as not filed yet.
    The comparison stays pending until the device's summary for the period was reported; a
    device seeded `pending` stays pending until `pending_minutes` after that report.
    """
    if registration is None or registration.taxpayer_id != taxpayer_id or period > registration.period:
        return DeclarationStatus(declared=False, comparison="pending")
    if period < registration.period:
        return DeclarationStatus(declared=True, comparison="pass")
    if not registration.declared or reported_at is None:
        return DeclarationStatus(declared=registration.declared, comparison="pending")
    if registration.comparison == "pending":
        minutes = registration.pending_minutes
        done = minutes is not None and real_now >= reported_at + timedelta(minutes=minutes)
        return DeclarationStatus(declared=True, comparison="pass" if done else "pending")
    return DeclarationStatus(declared=True, comparison="pass" if registration.comparison == "pass" else "fail")


def utc_now() -> datetime:
    return datetime.now(UTC)
