"""Previews of a clear and the confirmation value bound to exactly that plan."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import trio

from services.coordinator.machine import AlreadyCleared, Proceed, decide_after_precheck
from services.coordinator.ports import Ports
from services.coordinator.repository import RegisteredDevice
from shared.errors import ClearCardError
from shared.messages.clear import ClearRequest, Error, PlanDevice, PlanTypeLine
from shared.messages.device import PeriodCommand, PeriodHeader, TypeSummary
from shared.status_words import STATUS_WORDS


def _line(summary: TypeSummary, status: int, count: int) -> PlanTypeLine:
    """One type's line: every invoice of the period counted, the amounts net of red-letter invoices."""
    # red-letter amounts reduce the period whichever sign a device writes them with
    amount = Decimal(summary.normal_amount) - abs(Decimal(summary.negative_amount))
    tax = Decimal(summary.normal_tax) - abs(Decimal(summary.negative_tax))
    return PlanTypeLine(invoice_type=summary.invoice_type, status=STATUS_WORDS[status], invoice_count=count,
                        amount=f"{amount:.2f}", tax=f"{tax:.2f}")


def plan_device(device: RegisteredDevice, header: PeriodHeader, request: ClearRequest) -> PlanDevice:
    """What a clear would do to one device, with the period's invoices per type.

    Counts and amounts come from the device's period summaries (what would be reported), so a
    preview costs one small read per device whatever the period holds; a backup proves the
    invoices add up to those summaries (services/backup/pages.py).
    """
    info = header.info
    decision = decide_after_precheck(info, request.period, tuple(request.invoice_types))
    summaries = {s.invoice_type: s for s in header.summaries}
    types = [t for t in info.types if not request.invoice_types or t in request.invoice_types]
    lines = [_line(summaries[t], info.types[t], header.invoice_counts.get(t, 0)) for t in types if t in summaries]
    if isinstance(decision, Proceed):
        action, error = "clear", None
    elif isinstance(decision, AlreadyCleared):
        action, error = "already_cleared", None
    else:
        action, error = "blocked", Error.of(decision.code, decision.message)
    return PlanDevice(device_id=device.device_id, family=device.family, action=action, types=lines,
                      offline_pending=info.offline_pending, error=error)


def blocked(device: RegisteredDevice, exc: ClearCardError) -> PlanDevice:
    return PlanDevice(device_id=device.device_id, family=device.family, action="blocked", types=[],
                      error=Error.of(exc.code, exc.message))


async def build_plan(
    ports: Ports, devices: list[RegisteredDevice], request: ClearRequest
) -> list[PlanDevice]:
    """Read every device's period (in parallel) and plan it; changes nothing on any device."""
    plan: dict[str, PlanDevice] = {}

    async def one(device: RegisteredDevice) -> None:
        try:
            header = await ports.gateway(device.gateway_id, "read_period", PeriodCommand(
                device_id=device.device_id, period=request.period,
                invoice_types=list(request.invoice_types), request_id=request.request_id), PeriodHeader)
        except ClearCardError as exc:
            plan[device.device_id] = blocked(device, exc)
            return
        plan[device.device_id] = plan_device(device, header, request)

    async with trio.open_nursery() as nursery:
        for device in devices:
            nursery.start_soon(one, device)
    return [plan[d.device_id] for d in devices]


def confirmation(request: ClearRequest, plan: list[PlanDevice]) -> str:
    """A value identifying this exact plan: branch, devices, period, types and what they hold."""
    canonical = {
        "branch": request.branch_id,
        "period": request.period,
        "types": sorted(request.invoice_types),
        "devices": [p.model_dump(mode="json", exclude={"error"}) for p in plan],
    }
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
    return f"cc1-{digest[:40]}"
