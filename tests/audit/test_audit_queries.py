"""Reading the log over the bus: pages that each fit in a message, the reader's scope, the chain check."""

from __future__ import annotations

from typing import Any

import trio

from clearcard.runtime import identified
from services.audit import export, run_audit
from services.audit.log import append
from shared.bus.memory import MemoryBus
from shared.bus.rpc import RpcClient
from shared.bus.topology import AUDIT_RECORDS, AUDIT_VERIFY, COMMANDS
from shared.config import Settings
from shared.db import Database
from shared.messages.audit import AuditChainChecked, AuditPage, AuditQuery, AuditRecord, VerifyAuditChain
from shared.messages.codec import MAX_MESSAGE_BYTES, encode


async def _all_pages(rpc: RpcClient, query: AuditQuery) -> list[AuditPage]:
    """Every page, each asked with the cursor the one before it ended on."""
    with trio.fail_after(60):
        pages = [await rpc.call(COMMANDS, AUDIT_RECORDS, query, AuditPage)]
        while (after := pages[-1].next_after_seq) is not None:
            pages.append(await rpc.call(COMMANDS, AUDIT_RECORDS, query.model_copy(update={"after_seq": after}),
                                        AuditPage))
    return pages


async def test_a_log_larger_than_a_message_comes_in_pages(database: Database, settings: Settings) -> None:
    filler = "票" * 700  # about 2 kB of JSON per record: 120 records are far over one message
    for n in range(120):
        await append(database, AuditRecord(record_id=f"r-{n}", service="coordinator", subject="ops",
                                           action="test.paged", branch_id="wuhan-hankou" if n % 2 else "beijing",
                                           detail={"n": n, "filler": filler}))
    await database.execute(
        "INSERT INTO devices (device_id, family, taxpayer_id, branch_id, gateway_id) "
        "VALUES ('661500000001', 'ukey', '91420100MA4K000001', 'wuhan-hankou', 'default')")
    await append(database, AuditRecord(record_id="dev", service="gateway", subject="gateway", action="test.device",
                                       device_id="661500000001"))
    bus = MemoryBus()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_audit, identified(bus, "audit", settings), database, settings)
        async with RpcClient.open(identified(bus, "console", settings), "console") as rpc:
            pages = await _all_pages(rpc, AuditQuery())
            scoped = await _all_pages(rpc, AuditQuery(scoped=True, scope_branches=["wuhan-hankou"]))
            with trio.fail_after(20):
                checked = await rpc.call(COMMANDS, AUDIT_VERIFY, VerifyAuditChain(), AuditChainChecked)
        nursery.cancel_scope.cancel()
    assert len(pages) > 2
    assert all(len(encode(p)) < MAX_MESSAGE_BYTES for p in pages)
    records: list[dict[str, Any]] = [r for p in pages for r in p.records]
    assert records == await export(database, None)  # every record once, in order
    seen = [r["record_id"] for p in scoped for r in p.records]
    assert seen == [f"r-{n}" for n in range(1, 120, 2)] + ["dev"]  # its branch, and a device of its branch
    assert checked.ok and checked.count == 121 and checked.result == "ok 121 records"
