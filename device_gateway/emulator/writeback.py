"""WRITEBACK: the clear package the bureau sealed, checked and applied by the emulated device (pure).

The package must open with the device's key, agree with its clear copy, be for this device,
carry the outstanding random challenge (one use), be issued near the device clock and, on
families that need one, follow the clock calibration block. Applying it clears the types that
were reported and moves their lock dates; a package applied before answers what it did then.
"""

from __future__ import annotations

import hmac
from datetime import date
from typing import Any

from device_gateway.emulator.clock import (
    LOCK_DATE_SLACK,
    WRITEBACK_TIME_TOLERANCE,
    next_period,
    parse_instant,
    parse_period,
)
from device_gateway.emulator.device_rules import (
    Context,
    DeviceRefusal,
    lock_date,
    require_healthy,
    require_pin_usable,
    type_status,
)
from device_gateway.emulator.state import TypeState, WritebackEntry
from device_gateway.protocol import Status
from shared.writeback_package import PackageInvalid, emulated_device_key, open_sealed

# Fields a write-back package carries both in clear and sealed; the sealed copy must agree.
PACKAGE_FIELDS = ("package_id", "device_id", "taxpayer_id", "machine_no", "period", "invoice_types",
                  "issued_at", "challenge", "next_lock_date", "clock_block")
# Families that need a clock calibration block written before the clear block.
NEEDS_CLOCK_BLOCK = frozenset({"tax_control_disk"})


def writeback(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    state = ctx.state
    require_pin_usable(state)
    package_id = request["package_id"]
    if not isinstance(package_id, str):
        raise TypeError("package_id must be a string")
    key = emulated_device_key(state.device_id, state.taxpayer_id)
    try:
        sealed = open_sealed(package_id, str(request["ciphertext"]), str(request["checksum"]), key)
    except PackageInvalid as exc:
        raise DeviceRefusal(Status.WRITEBACK_REJECTED, f"write-back package refused: {exc}") from None
    for name in PACKAGE_FIELDS:
        if name in sealed and name in request and sealed[name] != request[name]:
            raise DeviceRefusal(Status.WRITEBACK_REJECTED,
                                f"package field {name} differs from its sealed content")
    if package_id in state.applied_packages:
        return {"applied": [], "already": state.applied_packages[package_id],
                "lock_date": lock_date(state).isoformat()}
    if (sealed.get("device_id"), sealed.get("taxpayer_id"), sealed.get("machine_no")) != (
        state.device_id, state.taxpayer_id, state.machine_no
    ):
        raise DeviceRefusal(Status.WRITEBACK_REJECTED,
                            "package is for another taxpayer id, device or machine number")
    require_healthy(ctx)
    issued_at = parse_instant(str(sealed["issued_at"]))
    if abs(issued_at - ctx.now) > WRITEBACK_TIME_TOLERANCE:
        raise DeviceRefusal(Status.WRITEBACK_REJECTED,
                            f"package time {issued_at.isoformat()} is too far from the device clock")
    outstanding, state.challenge = state.challenge, None  # one use, whatever the outcome
    ctx.changed = ctx.changed or outstanding is not None
    if outstanding is None or not hmac.compare_digest(str(sealed.get("challenge")), outstanding):
        raise DeviceRefusal(Status.WRITEBACK_REJECTED, "random challenge mismatch")
    if state.family in NEEDS_CLOCK_BLOCK and (
        not sealed.get("clock_block") or sealed.get("clock_block") != state.clock_block
    ):
        raise DeviceRefusal(Status.WRITEBACK_REJECTED,
                            "the clock calibration block was not written before the clear block")
    return _apply(ctx, package_id, sealed)


def _apply(ctx: Context, package_id: str, sealed: dict[str, Any]) -> dict[str, Any]:
    state = ctx.state
    period = str(sealed["period"])
    parse_period(period)
    types = sealed["invoice_types"]
    if not isinstance(types, list) or not types:
        raise DeviceRefusal(Status.WRITEBACK_REJECTED, "package names no invoice types")
    unknown = [t for t in types if t not in state.types]
    if unknown:
        raise DeviceRefusal(Status.WRITEBACK_REJECTED, f"the device does not hold types {unknown}")
    if period > state.open_period:
        raise DeviceRefusal(Status.NOT_IN_WINDOW, f"period {period} is not closed on the device")
    if period < state.open_period:
        already, due = list(types), []
    else:
        status = {t: type_status(state, t, ctx.today) for t in types}
        missing = [t for t in types if status[t] == 0]
        if missing:
            raise DeviceRefusal(Status.NOT_REPORTED, f"no summary reported for types {missing}")
        already = [t for t in types if status[t] == 2]
        due = [t for t in types if status[t] == 1]
    next_lock = ctx.calendar.next_lock_date(period)
    try:
        offered = date.fromisoformat(str(sealed.get("next_lock_date")))
    except ValueError:
        offered = None
    at = ctx.now.isoformat()
    for code in due:
        current = date.fromisoformat(state.types[code].lock_date)
        # the bureau's date wins when it moves the lock later (holidays), within reason
        sane = offered is not None and current < offered <= next_lock + LOCK_DATE_SLACK
        new_lock = offered if sane and offered is not None else next_lock
        state.types[code] = TypeState(period=period, status=2, lock_date=new_lock.isoformat())
        state.writebacks.append(
            WritebackEntry(invoice_type=code, package_id=package_id, period=period, at=at))
    state.applied_packages[package_id] = list(types)
    ctx.changed = True
    if all(t.period == state.open_period and t.status == 2 for t in state.types.values()):
        if state.offline_total:
            state.offline_closed[state.open_period] = state.offline_total
        state.open_period = next_period(state.open_period)
        state.offline_total = state.offline_pending = 0
        state.clock_block = None
    return {"applied": due, "already": already, "lock_date": lock_date(state).isoformat()}

