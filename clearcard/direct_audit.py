"""Auth decisions audited straight into the hash chain: the command line with no broker.

Only the command line (the operators' tool, which runs every service in-process) may call the
audit service's own log functions; the auth service publishes its records (services/auth/auditing.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from services.audit.log import advance_checkpoint, append
from services.auth.auditing import SERVICE
from shared import telemetry
from shared.config import Settings
from shared.db import Database
from shared.messages.audit import AuditRecord


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
        await append(self.db, AuditRecord(
            record_id=uuid.uuid4().hex, service=SERVICE, subject=subject, action=action,
            outcome=outcome, error_code=error_code, branch_id=branch_id, request_id=request_id,
            trace_id=telemetry.current_trace_id(), detail=detail or {},
        ))
        if self.settings is not None:
            await advance_checkpoint(self.db, self.settings)
