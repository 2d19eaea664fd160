"""Publishing audit records: every service reports what it did to the audit service."""

from __future__ import annotations

import uuid
from typing import Any

from shared import telemetry
from shared.bus.api import Bus
from shared.bus.topology import COMMANDS
from shared.messages.audit import AuditRecord
from shared.messages.codec import encode

AUDIT_RECORD = "audit.record"
# Whom a record is about, signed with the sender's identity (shared/authz/identity.py): the audit
# service takes service, subject and time from the verified identity, not from the body.
SUBJECT_HEADER = "x-clearcard-subject"


async def record(
    bus: Bus,
    *,
    service: str,
    subject: str,
    action: str,
    record_id: str | None = None,
    request_id: str | None = None,
    device_id: str | None = None,
    branch_id: str | None = None,
    outcome: str | None = None,
    error_code: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Publish one audit record (confirmed by the broker before this returns).

    Give a stable `record_id` where the same fact may be reported twice (redeliveries); the
    audit service stores a record id once.
    """
    rec = AuditRecord(
        record_id=record_id or uuid.uuid4().hex,
        service=service,
        subject=subject,
        action=action,
        request_id=request_id,
        device_id=device_id,
        branch_id=branch_id,
        outcome=outcome,
        error_code=error_code,
        trace_id=telemetry.current_trace_id(),
        detail=detail or {},
    )
    await bus.publish(COMMANDS, AUDIT_RECORD, encode(rec), message_id=rec.record_id,
                      headers={SUBJECT_HEADER: subject})
