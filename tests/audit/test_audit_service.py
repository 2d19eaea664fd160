"""The audit service on the in-memory bus: records arrive by message, junk is dead-lettered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from services.audit import export, run_audit, verify_chain
from shared import audit
from shared.bus.memory import MemoryBus
from shared.bus.topology import AUDIT, COMMANDS
from shared.config import Settings
from shared.db import Database


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
    async with trio.open_nursery() as nursery:
        await nursery.start(run_audit, bus, database, settings)
        await audit.record(bus, service="auth", subject="alice", action="clear.requested",
                           request_id="req-1", branch_id="wuhan-hankou")
        await audit.record(bus, service="coordinator", subject="alice", action="clear.rejected",
                           request_id="req-1", outcome="rejected", error_code="PERMISSION_DENIED",
                           record_id="fixed-id")
        await audit.record(bus, service="coordinator", subject="alice", action="clear.rejected",
                           request_id="req-1", outcome="rejected", error_code="PERMISSION_DENIED",
                           record_id="fixed-id")
        await _wait_for_records(database, 2)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    rows = await export(database, None)
    assert [r["action"] for r in rows] == ["clear.requested", "clear.rejected"]
    assert rows[1]["error_code"] == "PERMISSION_DENIED"
    report = await verify_chain(database, settings)
    assert report.ok and report.count == 2


async def test_malformed_records_are_dead_lettered_and_the_service_keeps_going(
    database: Database, settings: Settings
) -> None:
    bus = MemoryBus()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_audit, bus, database, settings)
        await bus.publish(COMMANDS, "audit.record", b"not json")
        await bus.publish(COMMANDS, "audit.record", b'{"record_id": "x"}')
        await bus.publish(COMMANDS, "audit.record",
                          b'{"record_id": "nul", "service": "s", "subject": "a\\u0000b", "action": "x"}')
        long_id = b'{"record_id": "' + b"y" * 300 + b'", "service": "s", "subject": "a", "action": "x"}'
        await bus.publish(COMMANDS, "audit.record", long_id)
        await audit.record(bus, service="auth", subject="bob", action="clear.requested")
        await _wait_for_records(database, 1)

        async def all_dead_lettered() -> bool:
            return bus.depth(AUDIT.dead_letter_queue) == 4

        await _eventually(all_dead_lettered)
        nursery.cancel_scope.cancel()
    assert [r["subject"] for r in await export(database, None)] == ["bob"]
