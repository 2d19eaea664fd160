"""The emulated device's firmware: the rules of domain.md applied to its state (pure).

`run_command` takes the device state, a command and its JSON request, and the real wall time
(the device derives its own clock from it); it mutates the state and says whether it changed,
so the caller can persist before answering. Nothing here does I/O.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from device_gateway.emulator.clock import (
    CLOCK_BACKWARD_TOLERANCE,
    LOCK_DATE_SLACK,
    WRITEBACK_TIME_TOLERANCE,
    clock_abnormal,
    device_now,
    next_period,
    parse_instant,
    parse_period,
    window_start,
)
from device_gateway.emulator.invoices import (
    build_summary,
    invoice_book,
    iter_invoices,
    signed_summary,
)
from device_gateway.emulator.state import DeviceState, ReportEntry, TypeState, WritebackEntry
from device_gateway.protocol import Command, Status
from shared.tax_calendar import DEFAULT, TaxCalendar
from shared.writeback_package import PackageInvalid, emulated_device_key, open_sealed

# Fields a write-back package carries both in clear and sealed; the sealed copy must agree.
PACKAGE_FIELDS = ("package_id", "device_id", "taxpayer_id", "machine_no", "period", "invoice_types",
                  "issued_at", "challenge", "next_lock_date", "clock_block")
# Offline limits (离线开票总金额): offline invoices beyond this total cannot be uploaded by the
# device; the invoices stay pending and the device cannot report until the tax office acts.
OFFLINE_AMOUNT_LIMIT = Decimal("500000.00")
# Invoices in one READ_INVOICES answer at most (the host asks for fewer or as many).
MAX_PAGE_INVOICES = 200
# Families that need a clock calibration block written before the clear block.
NEEDS_CLOCK_BLOCK = frozenset({"tax_control_disk"})


class DeviceRefusal(Exception):
    """The device answers with a non-OK status (and a message for a person)."""

    def __init__(self, status: Status, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass
class Outcome:
    status: Status
    body: dict[str, Any]
    changed: bool = False


@dataclass
class _Context:
    state: DeviceState
    now: datetime
    random_bytes: Callable[[int], bytes]
    calendar: TaxCalendar = DEFAULT
    changed: bool = field(default=False)

    @property
    def today(self) -> date:
        return self.now.date()


def run_command(
    state: DeviceState,
    command: int,
    request: dict[str, Any],
    wall_now: datetime,
    random_bytes: Callable[[int], bytes] = os.urandom,
    calendar: TaxCalendar = DEFAULT,
) -> Outcome:
    """Execute one command against the device state; never raises on bad input.

    The tax calendar gives the reporting window's end and the lock date a clear moves to.
    """
    ctx = _Context(state, device_now(state.clock_base, state.wall_base, wall_now), random_bytes, calendar)
    try:
        handler = _HANDLERS[Command(command)]
    except ValueError:
        return Outcome(Status.UNKNOWN_COMMAND, {"message": f"unknown command {command:#04x}"})
    try:
        body = handler(ctx, request)
    except DeviceRefusal as refusal:
        return Outcome(refusal.status, {"message": refusal.message, **refusal.extra}, ctx.changed)
    except (KeyError, TypeError, ValueError) as exc:
        # garbage in a request is answered like a device would: refused, nothing changed
        return Outcome(Status.BAD_REQUEST, {"message": f"malformed request: {exc!r}"}, ctx.changed)
    return Outcome(Status.OK, body, ctx.changed)


# --- derived state -------------------------------------------------------------------------


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


# --- request helpers -----------------------------------------------------------------------


def _period(request: dict[str, Any]) -> str:
    period = request["period"]
    if not isinstance(period, str):
        raise TypeError("period must be a string")
    parse_period(period)
    return period


def _types(state: DeviceState, request: dict[str, Any]) -> list[str]:
    wanted = request.get("invoice_types") or []
    if not isinstance(wanted, list) or not all(isinstance(t, str) for t in wanted):
        raise TypeError("invoice_types must be a list of type codes")
    for code in wanted:
        if code not in state.types:
            raise DeviceRefusal(Status.BAD_REQUEST, f"the device does not hold invoice type {code}")
    return list(dict.fromkeys(wanted)) or list(state.invoice_types)


def _require_pin_usable(state: DeviceState) -> None:
    if state.pin_tries_left <= 0:
        raise DeviceRefusal(Status.PIN_LOCKED, "no PIN tries left; the certificate is locked")


def _require_healthy(ctx: _Context) -> None:
    if is_locked(ctx.state, ctx.today):
        raise DeviceRefusal(Status.DEVICE_LOCKED,
                            f"the device passed its lock date {lock_date(ctx.state)} uncleared")
    if clock_abnormal(ctx.state.clock_skew_seconds):
        raise DeviceRefusal(Status.CLOCK_ABNORMAL, "the device clock is abnormal")


def _stored_summary(state: DeviceState, period: str, invoice_type: str) -> dict[str, Any] | None:
    return state.summaries.get(f"{period}/{invoice_type}")


# --- commands ------------------------------------------------------------------------------


def _info(ctx: _Context, request: dict[str, Any]) -> dict[str, Any]:
    return device_info(ctx.state, ctx.now, ctx.calendar)


def _verify_pin(ctx: _Context, request: dict[str, Any]) -> dict[str, Any]:
    state = ctx.state
    pin = request["pin"]
    if not isinstance(pin, str):
        raise TypeError("pin must be a string")
    _require_pin_usable(state)
    if hmac.compare_digest(pin.encode(), state.pin.encode()):
        return {"pin_tries_left": state.pin_tries_left}
    state.pin_tries_left -= 1
    ctx.changed = True
    if state.pin_tries_left <= 0:
        raise DeviceRefusal(Status.PIN_LOCKED, "wrong PIN; no tries left, the certificate is locked",
                            pin_tries_left=0)
    raise DeviceRefusal(Status.PIN_INVALID, f"wrong PIN; {state.pin_tries_left} tries left",
                        pin_tries_left=state.pin_tries_left)


def _readable_period(ctx: _Context, request: dict[str, Any]) -> str:
    _require_pin_usable(ctx.state)
    period = _period(request)
    if period > ctx.state.open_period:
        raise DeviceRefusal(Status.NOT_IN_WINDOW, f"period {period} is not closed on the device")
    return period


def _read_period(ctx: _Context, request: dict[str, Any]) -> dict[str, Any]:
    """The period without its invoices: info, summaries and how many invoices each type holds."""
    state = ctx.state
    period = _readable_period(ctx, request)
    types = _types(state, request)
    summaries = [_stored_summary(state, period, t) or build_summary(state, period, t) for t in types]
    counts = {t: invoice_book(state, period, t).count for t in types}
    return {"info": device_info(state, ctx.now, ctx.calendar), "summaries": summaries, "invoice_counts": counts}


def _read_invoices(ctx: _Context, request: dict[str, Any]) -> dict[str, Any]:
    """One page of one type's invoices; the cursor is the next invoice's index, in decimal."""
    state = ctx.state
    period = _readable_period(ctx, request)
    [invoice_type] = _types(state, {"invoice_types": [request["invoice_type"]]})
    cursor, limit = request.get("cursor"), request.get("limit", MAX_PAGE_INVOICES)
    if cursor is not None and not (isinstance(cursor, str) and cursor.isdigit() and len(cursor) <= 9):
        raise DeviceRefusal(Status.BAD_REQUEST, f"cursor {cursor!r} was not given by this device")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_INVOICES:
        raise DeviceRefusal(Status.BAD_REQUEST, f"limit must be 1 to {MAX_PAGE_INVOICES}")
    book = invoice_book(state, period, invoice_type)
    start = int(cursor or 0)
    stop = min(start + limit, book.count)
    invoices = [inv.as_dict() for inv in iter_invoices(book, start, stop)]
    return {"invoice_type": invoice_type, "invoices": invoices,
            "next_cursor": str(stop) if stop < book.count else None}


def _upload_offline(ctx: _Context, request: dict[str, Any]) -> dict[str, Any]:
    state = ctx.state
    _require_pin_usable(state)
    period = _period(request)
    if period != state.open_period or not state.offline_total:
        return {"device_id": state.device_id, "invoices": []}
    book = invoice_book(state, period, state.invoice_types[0])
    issued = list(iter_invoices(book, book.issued))  # the offline ones are numbered last
    total = sum((i.amount for i in issued if i.kind == "normal"), Decimal("0.00"))
    if state.offline_pending and total > OFFLINE_AMOUNT_LIMIT:
        raise DeviceRefusal(
            Status.OFFLINE_PENDING,
            f"{state.offline_pending} offline invoices total {total}, over the offline amount limit "
            f"{OFFLINE_AMOUNT_LIMIT}; they cannot be uploaded from the device (the tax office must act)")
    offline = [i.as_dict() for i in issued]
    if state.offline_pending:
        state.offline_pending = 0
        ctx.changed = True
    # answering with every offline invoice of the period (uploaded or not) keeps this retryable
    return {"device_id": state.device_id, "invoices": offline}


def _report(ctx: _Context, request: dict[str, Any]) -> dict[str, Any]:
    state = ctx.state
    _require_pin_usable(state)
    period, types = _period(request), _types(state, request)
    if period < state.open_period:
        stored = [_stored_summary(state, period, t) for t in types]
        if any(s is None for s in stored):
            raise DeviceRefusal(Status.NOT_IN_WINDOW, f"period {period} is already closed on the device")
        return {"device_id": state.device_id, "summaries": stored}
    if period > state.open_period or ctx.today < window_start(period):
        raise DeviceRefusal(
            Status.NOT_IN_WINDOW,
            f"the reporting window for {period} opens on {window_start(period)} (device clock "
            f"{ctx.today}); the device's open period is {state.open_period}",
        )
    due = [t for t in types if type_status(state, t, ctx.today) == 0]
    if due:
        _require_healthy(ctx)
        if state.offline_pending:
            raise DeviceRefusal(Status.OFFLINE_PENDING,
                                f"{state.offline_pending} offline invoices are not uploaded")
    at = ctx.now.isoformat()
    for code in due:
        state.summaries[f"{period}/{code}"] = signed_summary(state, period, code)
        state.types[code] = TypeState(period=period, status=1, lock_date=state.types[code].lock_date)
        state.reports.append(ReportEntry(invoice_type=code, period=period, at=at))
        ctx.changed = True
    return {"device_id": state.device_id,
            "summaries": [_stored_summary(state, period, t) for t in types]}


def _challenge(ctx: _Context, request: dict[str, Any]) -> dict[str, Any]:
    _require_pin_usable(ctx.state)
    ctx.state.challenge = ctx.random_bytes(16).hex()
    ctx.changed = True
    return {"device_id": ctx.state.device_id, "challenge": ctx.state.challenge}


def _write_clock(ctx: _Context, request: dict[str, Any]) -> dict[str, Any]:
    state = ctx.state
    _require_pin_usable(state)
    block = request["clock_block"]
    if not isinstance(block, str):
        raise TypeError("clock_block must be a string")
    target = parse_instant(block)
    if target < ctx.now - CLOCK_BACKWARD_TOLERANCE:
        raise DeviceRefusal(Status.CLOCK_ABNORMAL,
                            "the clock block would move the device clock backwards")
    if target > ctx.now:  # calibrate forwards only
        delta = target - ctx.now
        state.clock_base += delta
        state.clock_skew_seconds += delta.total_seconds()
        ctx.now = target
    state.clock_block = block
    ctx.changed = True
    return {"clock": ctx.now.isoformat()}


def _writeback(ctx: _Context, request: dict[str, Any]) -> dict[str, Any]:
    state = ctx.state
    _require_pin_usable(state)
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
    _require_healthy(ctx)
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


def _apply(ctx: _Context, package_id: str, sealed: dict[str, Any]) -> dict[str, Any]:
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


_HANDLERS: dict[Command, Callable[[_Context, dict[str, Any]], dict[str, Any]]] = {
    Command.INFO: _info,
    Command.VERIFY_PIN: _verify_pin,
    Command.READ_PERIOD: _read_period,
    Command.READ_INVOICES: _read_invoices,
    Command.UPLOAD_OFFLINE: _upload_offline,
    Command.REPORT: _report,
    Command.CHALLENGE: _challenge,
    Command.WRITE_CLOCK: _write_clock,
    Command.WRITEBACK: _writeback,
}
