"""The emulated device's memory: everything it keeps across power cycles, as JSON."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.fleet import FleetDevice
from shared.tax_calendar import DEFAULT, TaxCalendar

STATE_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TypeState(_Model):
    """One invoice type: its status refers to `period` (0 needs report, 1 reported, 2 cleared)."""

    period: str
    status: int
    lock_date: str  # YYYY-MM-DD


class ReportEntry(_Model):
    invoice_type: str
    period: str
    at: str  # device clock


class WritebackEntry(_Model):
    invoice_type: str
    package_id: str
    period: str
    at: str  # device clock


class DeviceState(_Model):
    """An emulated device's persistent state (saved after every change)."""

    version: int = STATE_VERSION
    device_id: str
    family: str
    taxpayer_id: str
    branch: str
    machine_no: int
    pin: str  # the device's own certificate PIN (its secret; never shown)
    pin_tries_left: int
    open_period: str
    invoice_types: list[str]
    types: dict[str, TypeState]
    invoices_per_type: int
    offline_total: int  # invoices of the open period issued offline
    offline_pending: int  # ... of which not yet uploaded
    # closed periods' offline invoices: they stay part of that period's invoices after it closes
    offline_closed: dict[str, int] = Field(default_factory=dict)
    latency_ms: int
    clock_skew_seconds: float  # how far the device clock is off the real (emulated) time
    clock_base: datetime  # device clock at `wall_base`
    wall_base: datetime  # real wall time when the clock was seeded or last calibrated
    challenge: str | None = None  # outstanding write-back challenge
    clock_block: str | None = None  # last clock calibration block written
    summaries: dict[str, dict[str, Any]] = Field(default_factory=dict)  # "period/type" -> signed summary
    applied_packages: dict[str, list[str]] = Field(default_factory=dict)  # package id -> types it cleared
    reports: list[ReportEntry] = Field(default_factory=list)
    writebacks: list[WritebackEntry] = Field(default_factory=list)


def seed_state(device: FleetDevice, fleet_clock: datetime | None, wall_now: datetime,
               calendar: TaxCalendar = DEFAULT) -> DeviceState:
    """A device's first state from its fleet entry; its clock starts now (or at the fleet clock)."""
    skew = timedelta(seconds=device.clock_skew_seconds)
    start = (fleet_clock if fleet_clock is not None else wall_now) + skew
    lock = calendar.lock_date(device.period).isoformat()
    return DeviceState(
        device_id=device.id,
        family=device.family,
        taxpayer_id=device.taxpayer_id,
        branch=device.branch,
        machine_no=device.machine_no,
        pin=device.pin,
        pin_tries_left=device.pin_tries_left,
        open_period=device.period,
        invoice_types=list(device.invoice_types),
        types={t: TypeState(period=device.period, status=0, lock_date=lock)
               for t in device.invoice_types},
        invoices_per_type=device.invoices_per_type,
        offline_total=device.offline_pending,
        offline_pending=device.offline_pending,
        latency_ms=device.latency_ms,
        clock_skew_seconds=device.clock_skew_seconds,
        clock_base=start,
        wall_base=wall_now,
    )
