"""The audit service's answers to front ends: pages of the log and the chain check.

The console asks here (queue clearcard.audit.queries) instead of reading `audit_log` itself: the
table is the audit service's alone. A page holds at most PAGE_LIMIT records, so an export of the
whole log travels as many answers, never as one message.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import asyncpg

from services.audit import store
from services.audit.log import verify_chain
from services.audit.store import AuditScope
from shared.bus.rpc import Operation
from shared.config import Settings
from shared.db.pool import Database
from shared.messages.audit import PAGE_BYTES, AuditChainChecked, AuditPage, AuditQuery, VerifyAuditChain


async def _scope(conn: asyncpg.Connection, query: AuditQuery) -> AuditScope | None:
    if not query.scoped:
        return None
    # the devices of the reader's branches, from the view the gateway publishes for this service
    rows = await conn.fetch("SELECT device_id FROM devices_for_audit WHERE branch_id = ANY($1::text[])",
                            query.scope_branches)
    return AuditScope(tuple(query.scope_branches), tuple(sorted(r["device_id"] for r in rows)))


async def _page(conn: asyncpg.Connection, query: AuditQuery) -> list[dict[str, Any]]:
    return await store.select_records(conn, request_id=query.request_id, device_id=query.device_id,
                                      branch_id=query.branch_id, subject=query.subject, since=query.since,
                                      until=query.until, scope=await _scope(conn, query), after_seq=query.after_seq,
                                      limit=query.limit)


def within_bytes(items: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The leading items whose JSON fits in `budget` bytes (the first one always)."""
    kept: list[dict[str, Any]] = []
    size = 0
    for item in items:
        size += len(json.dumps(item, ensure_ascii=False, default=str).encode("utf-8")) + 1
        if kept and size > budget:
            break
        kept.append(item)
    return kept


async def records_page(db: Database, query: AuditQuery) -> AuditPage:
    """One page of matching records after `query.after_seq`, with the next page's cursor."""
    rows = await db.run(_page, query)
    kept = within_bytes(rows, PAGE_BYTES)
    # a page cut short by size, or a full one, may have more behind it; a short one is the last
    more = len(kept) < len(rows) or len(rows) == query.limit
    return AuditPage(records=kept, next_after_seq=kept[-1]["seq"] if more and kept else None)


async def check_chain(db: Database, settings: Settings, _: VerifyAuditChain) -> AuditChainChecked:
    report = await verify_chain(db, settings)
    return AuditChainChecked(ok=report.ok, count=report.count, checkpoint_seq=report.checkpoint_seq,
                             result=report.describe())


def operations(db: Database, settings: Settings) -> dict[str, Operation]:
    """The ops of queue clearcard.audit.queries (routing keys audit.query.<op>): reads, never remembered."""
    return {
        "records": Operation(AuditQuery, partial(records_page, db), remember=False),
        "verify": Operation(VerifyAuditChain, partial(check_chain, db, settings), remember=False),
    }

