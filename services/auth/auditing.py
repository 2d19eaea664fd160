"""Where auth decisions are audited: through the bus (services) or straight into the chain (CLI)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from shared import audit, telemetry
from shared.bus.api import Bus
from shared.config import Settings
from shared.db import Database
from shared.messages.audit import AuditRecord

SERVICE = "auth"


class AuditSink(Protocol):
    async def __call__(self, *, action: str, subject: str, outcome: str, error_code: str | None = None,
                       branch_id: str | None = None, request_id: str | None = None,
                       detail: dict[str, Any] | None = None) -> None:
        """Record one auth decision."""


@dataclass(frozen=True)
class BusAudit:
    """Publishes `audit.record` (shared.audit.record) for the audit service to append; `bus` signs
    it as `service` (the audit service stores the signer's name, clearcard.runtime.identified)."""

    bus: Bus
    service: str = SERVICE

    async def __call__(self, *, action: str, subject: str, outcome: str, error_code: str | None = None,
                       branch_id: str | None = None, request_id: str | None = None,
                       detail: dict[str, Any] | None = None) -> None:
        await audit.record(self.bus, service=self.service, subject=subject, action=action, outcome=outcome,
                           error_code=error_code, branch_id=branch_id, request_id=request_id,
                           detail=detail)


@dataclass(frozen=True)
class DirectAudit:
    """Appends to the hash chain in PostgreSQL itself: for a CLI with no broker to the audit service.

    With `settings` it also moves the chain of signed checkpoints to the new head, as the audit
    service does after its appends (the CLI then holds the audit signing key on this host)."""

    db: Database
    settings: Settings | None = None

    async def __call__(self, *, action: str, subject: str, outcome: str, error_code: str | None = None,
                       branch_id: str | None = None, request_id: str | None = None,
                       detail: dict[str, Any] | None = None) -> None:
        from services.audit.log import advance_checkpoint, append

        await append(self.db, AuditRecord(
            record_id=uuid.uuid4().hex, service=SERVICE, subject=subject, action=action,
            outcome=outcome, error_code=error_code, branch_id=branch_id, request_id=request_id,
            trace_id=telemetry.current_trace_id(), detail=detail or {},
        ))
        if self.settings is not None:
            await advance_checkpoint(self.db, self.settings)
