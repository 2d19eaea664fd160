"""What operators do to the registry: import, retire, record a PIN, each change audited.

The CLI and the console's HTTP API both go through `Registry`; it is the one writer of the
enrolment table. Refusals are ClearCardErrors in plain words, and are audited too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from device_registry import store
from device_registry.enrolment import ImportRefused, read_rows
from device_registry.pins import PinVault, checked_pin
from shared import audit
from shared.bus.api import Bus
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode

SERVICE = "registry"


@dataclass(frozen=True)
class AuditEntry:
    """One registry change or refusal, as the audit log records it."""

    action: str
    subject: str
    outcome: str
    device_id: str | None = None
    branch_id: str | None = None
    error_code: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class AuditSink(Protocol):
    async def __call__(self, entries: list[AuditEntry]) -> None:
        """Record these entries, in order (an import of a whole fleet gives one per device)."""


PUBLISHING = 64  # audit records in flight at once: a 20,000-device import is not 20,000 round trips


@dataclass(frozen=True)
class BusAudit:
    """Publishes `audit.record` for the audit service (shared.audit.record), many at a time."""

    bus: Bus

    async def __call__(self, entries: list[AuditEntry]) -> None:
        limiter = trio.CapacityLimiter(PUBLISHING)

        async def one(entry: AuditEntry) -> None:
            async with limiter:
                await audit.record(self.bus, service=SERVICE, subject=entry.subject, action=entry.action,
                                   outcome=entry.outcome, device_id=entry.device_id, branch_id=entry.branch_id,
                                   error_code=entry.error_code, detail=entry.detail)

        async with trio.open_nursery() as nursery:
            for entry in entries:
                nursery.start_soon(one, entry)


def _scope_refusal(branches: set[str] | None, branch_id: str | None, device_id: str) -> ClearCardError | None:
    if branches is None or branch_id in branches:
        return None
    return ClearCardError(ErrorCode.PERMISSION_DENIED,
                          f"Device {device_id} is not in a branch you administer.")


@dataclass(frozen=True)
class Registry:
    """The registry's operations over one database, PIN vault and audit sink."""

    db: Database
    vault: PinVault
    audit: AuditSink

    async def import_file(self, lines: Iterable[str], *, actor: str, source: str, name: str = "",
                          branches: set[str] | None = None) -> store.ImportCounts:
        """Enrol every row of a CSV file or none (ImportRefused names each bad row)."""
        try:
            counts, changes = await self.db.run(store.import_enrolments, read_rows(lines), actor=actor,
                                                source=source, scope=branches)
        except ImportRefused as exc:
            await self.audit([AuditEntry("device.import", actor, "rejected", error_code=exc.code.value, detail={
                "file": name, "bad_rows": exc.total, "first": [str(e) for e in exc.errors[:20]]})])
            raise
        await self.audit([AuditEntry("device.import", actor, "ok", detail={
            "file": name, "enrolled": counts.enrolled, "updated": counts.updated,
            "reinstated": counts.reinstated, "unchanged": counts.unchanged})])
        await self.audit([AuditEntry(f"device.{c.kind}", actor, "ok", c.device_id, c.branch_id,
                                     detail={"source": source}) for c in changes])
        return counts

    async def _in_service(self, device_id: str, branches: set[str] | None) -> store.Standing:
        found = await self.db.run(store.standing, device_id)
        refusal = _scope_refusal(branches, found.branch_id, device_id)
        if refusal is None and not found.enrolled:
            refusal = ClearCardError(ErrorCode.UNKNOWN_DEVICE, unknown_words(device_id, found))
        if refusal is not None:
            raise refusal
        return found

    async def retire(self, device_id: str, *, actor: str, branches: set[str] | None = None) -> bool:
        """Take a device out of service; False if it already was. Refused while a clear runs on it."""
        try:
            found = await self._in_service(device_id, branches)
            running = await self.db.run(store.unfinished_clear, device_id)
            if running is not None and found.retired_at is None:
                raise ClearCardError(ErrorCode.DEVICE_BUSY,
                                     f"Device {device_id} is being cleared by request {running}; "
                                     "retire it once that clear has finished or been cancelled.")
        except ClearCardError as exc:
            await self.audit([AuditEntry("device.retire", actor, "rejected", device_id,
                                         error_code=exc.code.value, detail={"reason": exc.message})])
            raise
        changed = await self.db.run(store.retire, device_id, actor)
        if changed:
            await self.audit([AuditEntry("device.retired", actor, "ok", device_id, found.branch_id)])
        return changed

    async def set_pin(self, device_id: str, pin: str, *, actor: str, branches: set[str] | None = None) -> int:
        """Record the device's certificate PIN (encrypted); returns its revision.

        A new revision is tried on the device again even where the one before was refused.
        """
        try:
            checked = checked_pin(pin)
            found = await self._in_service(device_id, branches)
            if found.retired_at is not None:
                raise ClearCardError(ErrorCode.UNKNOWN_DEVICE, unknown_words(device_id, found))
            revision = await self.db.run(store.set_pin, device_id, self.vault.seal(checked))
            if revision is None:  # retired meanwhile
                raise ClearCardError(ErrorCode.UNKNOWN_DEVICE, f"Device {device_id} was retired.")
        except ClearCardError as exc:
            await self.audit([AuditEntry("device.set_pin", actor, "rejected", device_id,
                                         error_code=exc.code.value, detail={"reason": exc.message})])
            raise
        await self.audit([AuditEntry("device.pin_recorded", actor, "ok", device_id, found.branch_id,
                                     detail={"revision": revision})])
        return revision


def unknown_words(device_id: str, found: store.Standing) -> str:
    """Why the product does not drive `device_id`, and what an operator can do about it."""
    if found.retired_at is not None:
        return (f"Device {device_id} was retired on {found.retired_at.date().isoformat()}; "
                "import it again to bring it back into service.")
    if found.enrolled:
        return f"Device {device_id} is enrolled in branch {found.branch_id}."
    if found.gateway_id is not None:
        return (f"Device {device_id} ({found.family}) is connected to gateway {found.gateway_id} but is not "
                "enrolled: enrol it with `clearcard device import` and record its PIN with "
                "`clearcard device set-pin`.")
    return f"Device {device_id} is not enrolled and no gateway has seen it."
