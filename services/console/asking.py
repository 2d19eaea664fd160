"""Asking the services that own the audit log and the backups, over the bus.

The console reads neither `audit_log` nor `backups`: the audit and backup services answer
(services/audit/queries.py, services/backup/admin.py). Their answers come a page at a time, so
this module gathers pages up to what the caller asked for.
"""

from __future__ import annotations

from typing import Any, TypeVar

import trio
from pydantic import BaseModel

from services.console.context import ConsoleContext
from services.console.spec import ConsoleError
from shared.bus.topology import AUDIT_RECORDS, BACKUP_LIST, COMMANDS
from shared.errors import ErrorCode
from shared.messages.audit import PAGE_LIMIT, AuditPage, AuditQuery
from shared.messages.backup import BackupList, ListBackups

R = TypeVar("R", bound=BaseModel)

ANSWER_SECONDS = 30.0  # a page, a chain check or a verify
RESTORE_SECONDS = 900.0  # a restore decrypts a whole period onto disk


async def ask(ctx: ConsoleContext, routing_key: str, request: BaseModel, reply_model: type[R], *,
              seconds: float = ANSWER_SECONDS) -> R:
    """One answer from the service behind `routing_key`; TIMEOUT (504) when none comes in time."""
    if ctx.rpc is None:
        raise ConsoleError(ErrorCode.TIMEOUT, "The console has no bus connection to ask the services.")
    with trio.move_on_after(seconds):
        return await ctx.rpc.call(COMMANDS, routing_key, request, reply_model)
    service = routing_key.split(".", 1)[0]
    raise ConsoleError(ErrorCode.TIMEOUT, f"The {service} service did not answer in time.")


async def audit_records(ctx: ConsoleContext, query: AuditQuery, limit: int | None = None) -> list[dict[str, Any]]:
    """Records matching `query`, oldest first: every one, or the first `limit`."""
    found: list[dict[str, Any]] = []
    after = query.after_seq
    while limit is None or len(found) < limit:
        size = PAGE_LIMIT if limit is None else min(PAGE_LIMIT, limit - len(found))
        page = await ask(ctx, AUDIT_RECORDS, query.model_copy(update={"after_seq": after, "limit": size}), AuditPage)
        found += page.records
        if page.next_after_seq is None:
            break
        after = page.next_after_seq
    return found


async def backups(ctx: ConsoleContext, request: ListBackups) -> list[dict[str, Any]]:
    """Every backup matching `request`, oldest first, gathered page by page."""
    found: list[dict[str, Any]] = []
    while True:
        page = await ask(ctx, BACKUP_LIST, request, BackupList)
        found += page.backups
        if page.after is None:
            return found
        request = request.model_copy(update={"after": page.after})
