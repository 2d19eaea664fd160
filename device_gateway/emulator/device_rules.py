"""The emulated device's own view of its state, and the checks every command starts with (pure).

Shared by the firmware's commands (firmware.py, writeback.py) and the emulator's admin view
(admin.py): what a type's status is today, the lock date, what INFO answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from device_gateway.emulator.clock import clock_abnormal, window_start
from device_gateway.emulator.state import DeviceState
from device_gateway.protocol import Status
from shared.tax_calendar import DEFAULT, TaxCalendar

# Offline limits (离线开票总金额): offline invoices beyond this total cannot be uploaded by the
# device; the invoices stay pending and the device cannot report until the tax office acts.
OFFLINE_AMOUNT_LIMIT = Decimal("500000.00")


class DeviceRefusal(Exception):
    """The device answers with a non-OK status (and a message for a person)."""

    def __init__(self, status: Status, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass
class Context:
    """One command's run: the state, the device's clock, and whether anything changed."""

    state: DeviceState
    now: datetime
    random_bytes: Callable[[int], bytes]
    calendar: TaxCalendar = DEFAULT
    changed: bool = field(default=False)

    @property
    def today(self) -> date:
        return self.now.date()


def type_status(state: DeviceState, invoice_type: str, today: date) -> int:
    """0/1/2 of a type for the open period (cleared types wait at 2 until the next window opens)."""
    entry = state.types[invoice_type]
    if entry.period == state.open_period:
        return entry.status
    return 0 if today >= window_start(state.open_period) else 2


def lock_date(state: DeviceState) -> date:
    """The device's lock date: the earliest lock date of its types."""
    return min(date.fromisoformat(t.lock_date) for t in state.types.values())


def is_locked(state: DeviceState, today: date) -> bool:
    """Past the lock date, some type is not cleared: only the tax office can unlock."""
    return today > lock_date(state)


def device_info(state: DeviceState, now: datetime, calendar: TaxCalendar = DEFAULT) -> dict[str, Any]:
    """What INFO answers: DeviceInfo fields plus the device's own health flags."""
    today = now.date()
    lock = lock_date(state)
    window_end = calendar.deadline(state.open_period).isoformat()
    latest = max((r.at for r in state.reports), default=None)
    return {
        "device_id": state.device_id,
        "family": state.family,
        "taxpayer_id": state.taxpayer_id,
        "machine_no": state.machine_no,
        "clock": now.isoformat(),
        "open_period": state.open_period,
        "types": {t: type_status(state, t, today) for t in state.invoice_types},
        "offline_pending": state.offline_pending,
        "pin_tries_left": state.pin_tries_left,
        "monitoring": {
            "lock_date": lock.isoformat(),
            "report_window_start": window_start(state.open_period).isoformat(),
            "report_window_end": window_end,
            "latest_report_date": latest[:10] if latest else None,
            "upload_deadline": window_end,
            "single_invoice_limit": "1000000.00",
            "positive_cumulative_limit": "50000000.00",
            "negative_cumulative_limit": "5000000.00",
            "offline_hours_limit": 72,
            "offline_amount_limit": str(OFFLINE_AMOUNT_LIMIT),
        },
        "clock_abnormal": clock_abnormal(state.clock_skew_seconds),
        "locked": today > lock,
    }


def require_pin_usable(state: DeviceState) -> None:
    if state.pin_tries_left <= 0:
        raise DeviceRefusal(Status.PIN_LOCKED, "no PIN tries left; the certificate is locked")


def require_healthy(ctx: Context) -> None:
    if is_locked(ctx.state, ctx.today):
        raise DeviceRefusal(Status.DEVICE_LOCKED,
                            f"the device passed its lock date {lock_date(ctx.state)} uncleared")
    if clock_abnormal(ctx.state.clock_skew_seconds):
        raise DeviceRefusal(Status.CLOCK_ABNORMAL, "the device clock is abnormal")

