"""Internal fleet commands (`fleet.clear`, `clear.cancel`) and the coordinator's own events."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.messages.base import BranchId, Frozen, InvoiceType, Period, RequestId
from shared.messages.clear import Event
from shared.status_words import StatusWord

FLEET_CLEAR = "fleet.clear"
CLEAR_CANCEL = "clear.cancel"


class FleetFilters(Frozen):
    """Which devices a fleet operation covers; every filter narrows the selection."""

    branches: list[BranchId | Literal["*"]] = Field(default_factory=lambda: ["*"], max_length=10_000)
    families: list[Literal["ukey", "golden_tax_disk", "tax_control_disk"]] = Field(default_factory=list)
    invoice_types: list[InvoiceType] = Field(default_factory=list, max_length=6)
    statuses: list[StatusWord] = Field(default_factory=list)
    within_days: int | None = Field(default=None, ge=0, le=400)  # lock date within N days


class FleetClear(Frozen):
    """Routing key `fleet.clear` on `clearcard`: one operation fanned out into per-branch clears."""

    fleet_id: RequestId
    period: Period | None = None  # None: each device's last closed period (auto mode)
    filters: FleetFilters = Field(default_factory=FleetFilters)


class ClearCancel(Frozen):
    """Routing key `clear.cancel` on `clearcard`: stop a request before any write-back."""

    request_id: RequestId


class FleetAccepted(Event):
    event: Literal["fleet.accepted"] = "fleet.accepted"
    requests: list[str]
    devices: int


class FleetRejected(Event):
    event: Literal["fleet.rejected"] = "fleet.rejected"
    error_code: str
    message: str


class ClearCancelled(Event):
    event: Literal["clear.cancelled"] = "clear.cancelled"
    accepted: bool
    message: str = ""


class LockWarning(Event):
    """A device nears its lock date uncleared (the scheduler's escalation)."""

    event: Literal["device.lock_warning"] = "device.lock_warning"
    device_id: str
    branch_id: str
    lock_date: str
    days_left: int
    level: Literal["warning", "critical"]
    last_result: str | None = None


class DeviceAbandoned(Event):
    """A device not reported for longer than the abandonment threshold (~90 days, domain.md)."""

    event: Literal["device.abandoned"] = "device.abandoned"
    device_id: str
    branch_id: str
    open_period: str | None = None
    last_report: str  # YYYY-MM-DD: its latest report, or when its open period's window opened
    days_since: int
    lock_date: str | None = None


FLEET_PREVIEW = "coordinator.fleet_preview"  # RPC: what a fleet clear with these filters would do
PREVIEW_GROUPS = 500  # (branch, period) groups a preview lists; the totals always count them all


class FleetPreview(Frozen):
    """RPC `coordinator.fleet_preview`: the devices a `fleet.clear` would take, changing nothing.

    `scope` is the caller's branch scope, already checked by the front end that asks ('*' = all)."""

    period: Period | None = None
    filters: FleetFilters = Field(default_factory=FleetFilters)
    scope: list[BranchId | Literal["*"]] = Field(min_length=1, max_length=10_000)


class FleetGroup(Frozen):
    """One per-branch request the fleet clear would submit."""

    branch_id: str
    period: str
    devices: int
    families: dict[str, int]


class FleetPlan(Frozen):
    """The answer to a preview: totals, the first PREVIEW_GROUPS groups, and a confirmation that
    names exactly this selection (devices and periods)."""

    devices: int
    requests: int
    branches: int
    groups: list[FleetGroup]
    truncated: bool
    confirmation: str
