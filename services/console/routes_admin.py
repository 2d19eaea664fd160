"""Tokens, the audit log, backups and emulated devices: the rest of what the CLI does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import trio
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.audit.service import export, search, verify_chain
from services.auth.roles import Role
from services.auth.tokens import DEFAULT_TTL, MAX_TTL, Principal
from services.backup.service import list_backups, restore_backup, verify_backup
from services.console.context import ConsoleContext, context
from services.console.security import Can, branch_filter, check_branch, require
from services.console.spec import (
    DEVICE_PATTERN,
    ID_PATTERN,
    NOT_FOUND,
    TEXT_PATTERN,
    IsoDateTime,
    NotFound,
    responses,
)
from shared.errors import ClearCardError, ErrorCode
from shared.messages.base import BranchId

router = APIRouter(prefix="/api", tags=["administration"], responses=responses())


class TokenRequest(BaseModel):
    subject: str = Field(min_length=1, max_length=128, pattern=TEXT_PATTERN)
    role: Role
    branches: list[BranchId | Literal["*"]] = Field(min_length=1, max_length=1000)
    ttl: int = Field(DEFAULT_TTL, ge=1, le=MAX_TTL)


@router.post("/tokens", summary="Issue a bearer token (as `clearcard token issue`)")
async def issue_token(body: TokenRequest, ctx: ConsoleContext = Depends(context),
                      who: Principal = Depends(require(Can.ADMIN))) -> dict[str, str]:
    for branch in body.branches:
        check_branch(who, branch)
    return {"token": ctx.keys.issue(body.subject, body.role, body.branches, ttl=body.ttl)}


@router.get("/audit", summary="Search the audit log (oldest first)")
async def audit_search(
    request_id: str | None = Query(None, pattern=ID_PATTERN),
    device_id: str | None = Query(None, pattern=DEVICE_PATTERN),
    branch_id: str | None = Query(None, pattern=ID_PATTERN),
    subject: str | None = Query(None, max_length=128, pattern=TEXT_PATTERN),
    since: IsoDateTime | None = None, until: IsoDateTime | None = None,
    limit: int = Query(500, ge=1, le=10_000),
    ctx: ConsoleContext = Depends(context), who: Principal = Depends(require(Can.AUDIT)),
) -> list[dict[str, Any]]:
    return await search(ctx.db, request_id=request_id, device_id=device_id, branch_id=branch_id,
                        subject=subject, since=since, until=until, limit=limit)


@router.get("/audit/export", summary="The audit log as JSON Lines, oldest first (as `clearcard audit export`)",
            response_class=Response,
            responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}})
async def audit_export(since: IsoDateTime | None = None, ctx: ConsoleContext = Depends(context),
                       who: Principal = Depends(require(Can.AUDIT))) -> Response:
    records = await export(ctx.db, since)
    lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    return Response(lines, media_type="application/x-ndjson")


@router.get("/audit/verify", summary="Check the audit chain (as `clearcard audit verify`)")
async def audit_verify(ctx: ConsoleContext = Depends(context),
                       who: Principal = Depends(require(Can.AUDIT))) -> dict[str, Any]:
    report = await verify_chain(ctx.db, ctx.settings)
    return {"ok": report.ok, "count": report.count, "checkpoint_seq": report.checkpoint_seq,
            "result": report.describe()}


async def _backup_scope(ctx: ConsoleContext, who: Principal) -> set[str] | None:
    """Device ids a branch-scoped caller may see backups of (None: every device)."""
    branches = branch_filter(who)
    if branches is None:
        return None
    rows = await ctx.db.fetch("SELECT device_id FROM devices WHERE branch_id = ANY($1::text[])", sorted(branches))
    return {r["device_id"] for r in rows}


@router.get("/backups", summary="Every backup (as `clearcard backup list --json`)")
async def backups(device_id: str | None = None, ctx: ConsoleContext = Depends(context),
                  who: Principal = Depends(require(Can.BACKUPS))) -> list[dict[str, Any]]:
    scope = await _backup_scope(ctx, who)
    return [b for b in await list_backups(ctx.db)
            if (scope is None or b["device_id"] in scope) and (device_id is None or b["device_id"] == device_id)]


async def _visible_backup(ctx: ConsoleContext, who: Principal, backup_id: str) -> dict[str, Any]:
    found = next((b for b in await list_backups(ctx.db) if b["backup_id"] == backup_id), None)
    scope = await _backup_scope(ctx, who)
    if found is None or (scope is not None and found["device_id"] not in scope):
        raise NotFound(f"There is no backup {backup_id!r} you may see.")
    return found


@router.post("/backups/{backup_id}/verify", summary="Read every copy back (as `clearcard backup verify`)",
             responses=NOT_FOUND)
async def backup_verify(backup_id: str, ctx: ConsoleContext = Depends(context),
                        who: Principal = Depends(require(Can.BACKUPS))) -> dict[str, Any]:
    await _visible_backup(ctx, who, backup_id)
    result = await verify_backup(ctx.db, ctx.settings, backup_id)
    return {"backup_id": result.backup_id, "ok": result.ok, "damaged": result.damaged}


class RestoreRequest(BaseModel):
    to: str = Field(min_length=1, description="a folder on the console's machine")
    force: bool = False


@router.post("/backups/{backup_id}/restore", summary="Restore into a folder on the console's machine (admin)")
async def backup_restore(backup_id: str, body: RestoreRequest, ctx: ConsoleContext = Depends(context),
                         who: Principal = Depends(require(Can.ADMIN))) -> dict[str, str]:
    where = await restore_backup(ctx.db, ctx.settings, backup_id, Path(body.to), force=body.force)
    return {"backup_id": backup_id, "restored_to": str(where)}


@router.get("/emulator/{device_id}", summary="An emulated device's full state (as `clearcard emulator show`)")
async def emulator_show(device_id: str, ctx: ConsoleContext = Depends(context),
                        who: Principal = Depends(require(Can.STATUS))) -> dict[str, Any]:
    from device_gateway.emulator.admin import show_device

    state: dict[str, Any] = await trio.to_thread.run_sync(show_device, ctx.settings, device_id)
    check_branch(who, state["branch"])
    return state


@router.post("/emulator/{device_id}/{action}", summary="Plug or unplug an emulated device (admin)")
async def emulator_plug(device_id: str, action: str, ctx: ConsoleContext = Depends(context),
                        who: Principal = Depends(require(Can.ADMIN))) -> dict[str, str]:
    from device_gateway.emulator import admin

    if action not in ("plug", "unplug"):
        raise ClearCardError(ErrorCode.INVALID_REQUEST, "action must be plug or unplug")
    await trio.to_thread.run_sync(admin.plug if action == "plug" else admin.unplug, ctx.settings, device_id)
    return {"device_id": device_id, "done": action}
