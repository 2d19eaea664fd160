"""The emulated device's firmware: the rules of domain.md applied to its state (pure).

`run_command` takes the device state, a command and its JSON request, and the real wall time
(the device derives its own clock from it); it mutates the state and says whether it changed,
so the caller can persist before answering. Nothing here does I/O.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from device_gateway.emulator.clock import (
    CLOCK_BACKWARD_TOLERANCE,
    device_now,
    parse_instant,
    parse_period,
    window_start,
)
from device_gateway.emulator.device_rules import (
    OFFLINE_AMOUNT_LIMIT,
    Context,
    DeviceRefusal,
    device_info,
    require_healthy,
    require_pin_usable,
    type_status,
)
from device_gateway.emulator.invoices import (
    build_summary,
    invoice_book,
    iter_invoices,
    signed_summary,
)
from device_gateway.emulator.state import DeviceState, ReportEntry, TypeState
from device_gateway.emulator.writeback import writeback
from device_gateway.protocol import Command, Status
from shared.tax_calendar import DEFAULT, TaxCalendar

# Invoices in one READ_INVOICES answer at most (the host asks for fewer or as many).
MAX_PAGE_INVOICES = 200


@dataclass
class Outcome:
    status: Status
    body: dict[str, Any]
    changed: bool = False


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
    ctx = Context(state, device_now(state.clock_base, state.wall_base, wall_now), random_bytes, calendar)
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


def _stored_summary(state: DeviceState, period: str, invoice_type: str) -> dict[str, Any] | None:
    return state.summaries.get(f"{period}/{invoice_type}")


# --- commands ------------------------------------------------------------------------------


def _info(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    return device_info(ctx.state, ctx.now, ctx.calendar)


def _verify_pin(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    state = ctx.state
    pin = request["pin"]
    if not isinstance(pin, str):
        raise TypeError("pin must be a string")
    require_pin_usable(state)
    if hmac.compare_digest(pin.encode(), state.pin.encode()):
        return {"pin_tries_left": state.pin_tries_left}
    state.pin_tries_left -= 1
    ctx.changed = True
    if state.pin_tries_left <= 0:
        raise DeviceRefusal(Status.PIN_LOCKED, "wrong PIN; no tries left, the certificate is locked",
                            pin_tries_left=0)
    raise DeviceRefusal(Status.PIN_INVALID, f"wrong PIN; {state.pin_tries_left} tries left",
                        pin_tries_left=state.pin_tries_left)


def _readable_period(ctx: Context, request: dict[str, Any]) -> str:
    require_pin_usable(ctx.state)
    period = _period(request)
    if period > ctx.state.open_period:
        raise DeviceRefusal(Status.NOT_IN_WINDOW, f"period {period} is not closed on the device")
    return period


def _read_period(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    """The period without its invoices: info, summaries and how many invoices each type holds."""
    state = ctx.state
    period = _readable_period(ctx, request)
    types = _types(state, request)
    summaries = [_stored_summary(state, period, t) or build_summary(state, period, t) for t in types]
    counts = {t: invoice_book(state, period, t).count for t in types}
    return {"info": device_info(state, ctx.now, ctx.calendar), "summaries": summaries, "invoice_counts": counts}


def _read_invoices(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
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


def _upload_offline(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    state = ctx.state
    require_pin_usable(state)
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


def _report(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    state = ctx.state
    require_pin_usable(state)
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
        require_healthy(ctx)
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


def _challenge(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    require_pin_usable(ctx.state)
    ctx.state.challenge = ctx.random_bytes(16).hex()
    ctx.changed = True
    return {"device_id": ctx.state.device_id, "challenge": ctx.state.challenge}


def _write_clock(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    state = ctx.state
    require_pin_usable(state)
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


_HANDLERS: dict[Command, Callable[[Context, dict[str, Any]], dict[str, Any]]] = {
    Command.INFO: _info,
    Command.VERIFY_PIN: _verify_pin,
    Command.READ_PERIOD: _read_period,
    Command.READ_INVOICES: _read_invoices,
    Command.UPLOAD_OFFLINE: _upload_offline,
    Command.REPORT: _report,
    Command.CHALLENGE: _challenge,
    Command.WRITE_CLOCK: _write_clock,
    Command.WRITEBACK: writeback,
}
