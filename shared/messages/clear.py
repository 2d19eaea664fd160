"""The public clear request and its events (contract §3)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_serializer

from shared.errors import PLAIN_WORDS, ErrorCode
from shared.messages.base import (
    BranchId,
    DeviceId,
    Frozen,
    InvoiceType,
    Period,
    PlainText,
    RequestId,
    TraceId,
    utc_now,
)


class Step(StrEnum):
    """The per-device steps, in the order they happen."""

    AUTHORIZED = "authorized"
    PRECHECKED = "prechecked"
    BACKED_UP = "backed_up"
    OFFLINE_UPLOADED = "offline_uploaded"
    REPORTED = "reported"
    DECLARATION_CHECKED = "declaration_checked"
    WRITTEN_BACK = "written_back"
    VERIFIED = "verified"


STEPS: tuple[Step, ...] = tuple(Step)


def step_percent(step: Step) -> int:
    """How far along a device is once it has reached `step`."""
    return round(100 * (STEPS.index(step) + 1) / len(STEPS))


class Outcome(StrEnum):
    CLEARED = "cleared"
    ALREADY_CLEARED = "already_cleared"
    FAILED = "failed"
    SKIPPED = "skipped"


class RequestStatus(StrEnum):
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"


class ClearRequest(Frozen):
    """Published to exchange `clearcard`, routing key `clear.request`."""

    request_id: RequestId
    branch_id: BranchId
    device_ids: list[DeviceId] = Field(default_factory=list, max_length=10_000)
    period: Period
    invoice_types: list[InvoiceType] = Field(default_factory=list, max_length=6)
    mode: Literal["auto", "manual"] = "auto"
    preview: bool = False
    confirm: str | None = Field(default=None, max_length=128)


class Error(Frozen):
    code: ErrorCode
    message: PlainText  # often quotes a device or the bureau

    @classmethod
    def of(cls, code: ErrorCode, message: str | None = None) -> Error:
        return cls(code=code, message=message or PLAIN_WORDS[code])


class DeviceResult(Frozen):
    device_id: str
    outcome: Outcome
    error: Error | None = None
    backup_id: str | None = None


class Event(Frozen):
    event: str
    request_id: str
    at: datetime = Field(default_factory=utc_now)
    trace_id: TraceId

    @field_serializer("at")
    def _iso_utc(self, at: datetime) -> str:
        return at.isoformat().replace("+00:00", "Z")


class ClearAccepted(Event):
    event: Literal["clear.accepted"] = "clear.accepted"
    devices: list[str]


class ClearRejected(Event):
    event: Literal["clear.rejected"] = "clear.rejected"
    error: Error


class PlanTypeLine(Frozen):
    invoice_type: str
    status: str
    invoice_count: int
    amount: str
    tax: str


class PlanDevice(Frozen):
    device_id: str
    family: str
    action: Literal["clear", "already_cleared", "blocked"]
    types: list[PlanTypeLine]
    offline_pending: int = 0
    error: Error | None = None


class ClearPreview(Event):
    event: Literal["clear.preview"] = "clear.preview"
    plan: list[PlanDevice]
    confirmation: str


class ClearProgress(Event):
    event: Literal["clear.progress"] = "clear.progress"
    device_id: str
    step: Step
    percent: int


class ClearFinished(Event):
    event: Literal["clear.finished"] = "clear.finished"
    status: RequestStatus
    results: list[DeviceResult]
    # additive: whose clear it was, so a follower (notify) needs no lookup in the coordinator's tables
    branch_id: BranchId | None = None
    period: Period | None = None


def overall_status(results: list[DeviceResult]) -> RequestStatus:
    """succeeded only if every device cleared or was already clear."""
    good = {Outcome.CLEARED, Outcome.ALREADY_CLEARED}
    ok = sum(1 for r in results if r.outcome in good)
    if results and ok == len(results):
        return RequestStatus.SUCCEEDED
    return RequestStatus.PARTIAL if ok else RequestStatus.FAILED


__all__ = [
    "STEPS",
    "ClearAccepted",
    "ClearFinished",
    "ClearPreview",
    "ClearProgress",
    "ClearRejected",
    "ClearRequest",
    "DeviceResult",
    "Error",
    "Event",
    "Outcome",
    "PlanDevice",
    "PlanTypeLine",
    "RequestStatus",
    "Step",
    "overall_status",
    "step_percent",
]
