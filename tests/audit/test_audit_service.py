"""The audit service on the in-memory bus: records arrive by message, junk is dead-lettered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import trio

from clearcard.runtime import identified
from services.audit import export, run_audit, verify_chain
from shared import audit
from shared.bus.memory import MemoryBus
from shared.bus.topology import AUDIT, COMMANDS
from shared.config import Settings
from shared.db import Database
from shared.messages.audit import AuditRecord
from shared.messages.codec import encode


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll state another task changes through PostgreSQL (no event to wait on); give up after 10 s."""
    for _ in range(1000):
        if await check():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition not reached within 10 s")


async def _wait_for_records(db: Database, n: int) -> None:
    async def enough() -> bool:
        return len(await export(db, None)) >= n

    await _eventually(enough)


async def test_records_published_by_services_are_chained(database: Database, settings: Settings) -> None:
    bus = MemoryBus()
    auth, coordinator = identified(bus, "auth", settings), identified(bus, "coordinator", settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_audit, identified(bus, "audit", settings), database, settings)
        await audit.record(auth, service="auth", subject="alice", action="clear.requested",
                           request_id="req-1", branch_id="wuhan-hankou")
        await audit.record(coordinator, service="coordinator", subject="alice", action="clear.rejected",
                           request_id="req-1", outcome="rejected", error_code="PERMISSION_DENIED",
                           record_id="fixed-id")
        await audit.record(coordinator, service="coordinator", subject="alice", action="clear.rejected",
                           request_id="req-1", outcome="rejected", error_code="PERMISSION_DENIED",
                           record_id="fixed-id")
        await _wait_for_records(database, 2)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    rows = await export(database, None)
    assert [r["action"] for r in rows] == ["clear.requested", "clear.rejected"]
    assert [r["service"] for r in rows] == ["auth", "coordinator"]
    assert rows[1]["error_code"] == "PERMISSION_DENIED"
    report = await verify_chain(database, settings)
    assert report.ok and report.count == 2


async def test_service_subject_and_time_come_from_the_verified_identity(
    database: Database, settings: Settings
) -> None:
    """A service that writes another's name, or another time, into the body is stored as itself."""
    bus = MemoryBus()
    gateway = identified(bus, "gateway", settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_audit, identified(bus, "audit", settings), database, settings)
        claimed_at = datetime(2020, 1, 1, tzinfo=UTC)
        forged = AuditRecord(record_id="forged-1", service="auth", subject="admin", action="auth.login",
                             at=claimed_at, outcome="ok")
        # the body says auth/admin; the signed subject header says who the gateway acted for
        await gateway.publish(COMMANDS, audit.AUDIT_RECORD, encode(forged), message_id="forged-1",
                              headers={audit.SUBJECT_HEADER: "gateway-user"})
        await _wait_for_records(database, 1)
        nursery.cancel_scope.cancel()
    [row] = await export(database, None)
    assert (row["service"], row["subject"]) == ("gateway", "gateway-user")
    assert row["detail"]["claimed_subject"] == "admin"
    assert datetime.fromisoformat(row["at"]) > claimed_at + timedelta(days=365)


async def test_malformed_records_are_dead_lettered_and_the_service_keeps_going(
    database: Database, settings: Settings
) -> None:
    bus = MemoryBus()
    async with trio.open_nursery() as nursery:
        sender = identified(bus, "auth", settings)  # a signed sender: the bodies themselves are junk
        await nursery.start(run_audit, identified(bus, "audit", settings), database, settings)
        await sender.publish(COMMANDS, "audit.record", b"not json")
        await sender.publish(COMMANDS, "audit.record", b'{"record_id": "x"}')
        await sender.publish(COMMANDS, "audit.record",
                          b'{"record_id": "nul", "service": "s", "subject": "a", "action": "x\\u0000y"}')
        long_id = b'{"record_id": "' + b"y" * 300 + b'", "service": "s", "subject": "a", "action": "x"}'
        await sender.publish(COMMANDS, "audit.record", long_id)
        await audit.record(sender, service="auth", subject="bob",
                           action="clear.requested")
        await _wait_for_records(database, 1)

        async def all_dead_lettered() -> bool:
            return bus.depth(AUDIT.dead_letter_queue) == 4

        await _eventually(all_dead_lettered)
        nursery.cancel_scope.cancel()
    assert [r["subject"] for r in await export(database, None)] == ["bob"]
