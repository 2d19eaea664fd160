"""Where auth decisions are audited: through the bus, for the audit service to append.

The command line without a broker appends straight into the chain (clearcard/direct_audit.py):
the auth service never writes the audit service's table itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from shared import audit
from shared.bus.api import Bus

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
