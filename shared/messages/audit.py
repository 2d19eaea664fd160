"""Audit records every service publishes (routing key audit.record)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from shared.messages.base import Frozen, utc_now


class AuditRecord(Frozen):
    """One fact for the append-only log: who did what, when, in which trace, with what result."""

    record_id: str  # unique; a redelivered record is stored once
    at: datetime = Field(default_factory=utc_now)
    service: str
    subject: str  # who asked (token subject) or the service itself
    action: str  # e.g. clear.requested, clear.rejected, step.reported, clear.finished
    request_id: str | None = None
    device_id: str | None = None
    branch_id: str | None = None
    outcome: str | None = None
    error_code: str | None = None
    trace_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
