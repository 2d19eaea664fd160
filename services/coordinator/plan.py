"""Previews of a clear and the confirmation value bound to exactly that plan."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from decimal import Decimal

import trio

from services.coordinator.machine import AlreadyCleared, Proceed, decide_after_precheck
from services.coordinator.ports import Ports
from services.coordinator.repository import RegisteredDevice
from shared.errors import ClearCardError
from shared.messages.clear import ClearRequest, Error, PlanDevice, PlanTypeLine
from shared.messages.device import PeriodCommand, PeriodData

_STATUS_WORDS = {0: "needs_report", 1: "reported", 2: "cleared"}


def plan_device(device: RegisteredDevice, data: PeriodData, request: ClearRequest) -> PlanDevice:
    """What a clear would do to one device, with the period's invoices per type."""
    decision = decide_after_precheck(data.info, request.period, tuple(request.invoice_types))
    types = [t for t in data.info.types if not request.invoice_types or t in request.invoice_types]
    counts: dict[str, int] = defaultdict(int)
    amounts: dict[str, Decimal] = defaultdict(Decimal)
    taxes: dict[str, Decimal] = defaultdict(Decimal)
    for invoice in data.invoices:
        counts[invoice.invoice_type] += 1
        sign = Decimal(-1) if invoice.kind == "negative" else Decimal(0 if invoice.kind == "void" else 1)
        amounts[invoice.invoice_type] += sign * Decimal(invoice.amount)
        taxes[invoice.invoice_type] += sign * Decimal(invoice.tax)
    lines = [
        PlanTypeLine(invoice_type=t, status=_STATUS_WORDS[data.info.types[t]], invoice_count=counts[t],
                     amount=f"{amounts[t]:.2f}", tax=f"{taxes[t]:.2f}")
        for t in types
    ]
    if isinstance(decision, Proceed):
        action, error = "clear", None
    elif isinstance(decision, AlreadyCleared):
        action, error = "already_cleared", None
    else:
        action, error = "blocked", Error.of(decision.code, decision.message)
    return PlanDevice(device_id=device.device_id, family=device.family, action=action, types=lines,
                      offline_pending=data.info.offline_pending, error=error)


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
            data = await ports.gateway(device.gateway_id, "read_period", PeriodCommand(
                device_id=device.device_id, period=request.period,
                invoice_types=list(request.invoice_types), request_id=request.request_id), PeriodData)
        except ClearCardError as exc:
            plan[device.device_id] = blocked(device, exc)
            return
        plan[device.device_id] = plan_device(device, data, request)

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
