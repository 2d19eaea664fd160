"""Login and tokens, the audit log, backups and emulated devices: the rest of what the CLI does."""

from __future__ import annotations

import importlib
import inspect
import json
from datetime import datetime
from typing import Any, Literal

import trio
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from services.audit.service import AuditScope, export, search, verify_chain
from services.backup.service import list_backups, restore_backup, verify_backup
from services.console.context import ConsoleContext, context
from services.console.restore import restore_target
from services.console.security import Can, branch_filter, capabilities, check_branch, require
from shared import audit
from shared.authz import Principal, Role
from shared.authz.delegation import SERVICE_MAX_TTL, Grant, delegate
from shared.authz.tokens import DEFAULT_TTL
from shared.errors import ClearCardError, ErrorCode

router = APIRouter(prefix="/api", tags=["administration"])


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)
    totp: str = Field(min_length=6, max_length=10, description="the current one-time code")


def _token_of(result: Any) -> str:
    """`users.login` may return the token, a mapping holding it, or an object with a `token`."""
    if isinstance(result, str):
        return result
    if isinstance(result, dict):
        return str(result.get("token") or result.get("access_token"))
    return str(result.token)


@router.post("/login", summary="Password + TOTP login; returns a bearer token",
             responses={501: {"description": "password login is not available in this installation"}})
async def login(body: Login, ctx: ConsoleContext = Depends(context)) -> Any:
    try:
        users = importlib.import_module("services.auth.users")
    except ImportError:
        users = None
    login_fn = getattr(users, "login", None)
    if login_fn is None:
        return JSONResponse({"error": {"code": "NOT_IMPLEMENTED", "message": "Password login is not available; "
                                       "sign in with a token from `clearcard token issue`."}}, status_code=501)
    result = login_fn(ctx.db, ctx.keys, body.username, body.password, body.totp)
    if inspect.isawaitable(result):
        result = await result
    token = _token_of(result)
    who = ctx.keys.verify(token)
    return {"token": token, "subject": who.subject, "role": who.role.value, "branches": list(who.branches),
            "expires_at": who.expires_at, "can": capabilities(who.role)}


class TokenRequest(BaseModel):
    subject: str = Field(min_length=1, max_length=128)
    role: Role
    branches: list[str] = Field(min_length=1, max_length=1000)
    kind: Literal["person", "service"] = Field("service", description="who will hold it: a service (script, "
                                               "ERP connector) or a person; the rules of that kind apply")
    ttl: int = Field(DEFAULT_TTL, ge=1, le=SERVICE_MAX_TTL,
                     description="seconds: at most 8 hours for a person, 7 days for a service")


@router.post("/tokens", summary="Issue a bearer token for a service or a person (admin with TOTP; audited)")
async def issue_token(body: TokenRequest, ctx: ConsoleContext = Depends(context),
                      who: Principal = Depends(require(Can.ADMIN))) -> dict[str, Any]:
    # never more than the issuer has: role, branches, no second factor, lifetime capped by kind
    token = delegate(ctx.keys, who, Grant(body.subject, body.role, tuple(body.branches), body.kind, body.ttl))
    issued = ctx.keys.verify(token)
    # audited (and confirmed by the broker) before anyone sees the token
    await audit.record(ctx.bus, service="console", subject=who.subject, action="auth.token_issued",
                       record_id=f"token-issued:{issued.token_id}", outcome="ok",
                       detail={"token_id": issued.token_id, "token_subject": issued.subject, "kind": body.kind,
                               "role": str(issued.role), "branches": list(issued.branches), "ttl": body.ttl,
                               "expires_at": issued.expires_at, "issuer_token_id": who.token_id})
    return {"token": token, "token_id": issued.token_id, "expires_at": issued.expires_at}


@router.get("/audit", summary="Search the audit log (oldest first)")
async def audit_search(
    request_id: str | None = None, device_id: str | None = None, branch_id: str | None = None,
    subject: str | None = None, since: datetime | None = None, until: datetime | None = None,
    limit: int = Query(500, ge=1, le=10_000),
    ctx: ConsoleContext = Depends(context), who: Principal = Depends(require(Can.AUDIT)),
) -> list[dict[str, Any]]:
    if branch_id is not None:
        check_branch(who, branch_id)
    return await search(ctx.db, request_id=request_id, device_id=device_id, branch_id=branch_id,
                        subject=subject, since=since, until=until, limit=limit, scope=await _audit_scope(ctx, who))


@router.get("/audit/export", summary="The audit log as JSON Lines, oldest first (as `clearcard audit export`)",
            response_class=Response, responses={200: {"content": {"application/x-ndjson": {}}}})
async def audit_export(since: datetime | None = None, ctx: ConsoleContext = Depends(context),
                       who: Principal = Depends(require(Can.AUDIT))) -> Response:
    records = await export(ctx.db, since, scope=await _audit_scope(ctx, who))
    lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    return Response(lines, media_type="application/x-ndjson")


@router.get("/audit/verify", summary="Check the audit chain (as `clearcard audit verify`)")
async def audit_verify(ctx: ConsoleContext = Depends(context),
                       who: Principal = Depends(require(Can.AUDIT))) -> dict[str, Any]:
    # the chain spans every branch: its length alone tells of other branches' activity
    if branch_filter(who) is not None:
        raise ClearCardError(ErrorCode.PERMISSION_DENIED, "Checking the whole audit chain needs an every-branch token.")
    report = await verify_chain(ctx.db, ctx.settings)
    return {"ok": report.ok, "count": report.count, "checkpoint_seq": report.checkpoint_seq,
            "result": report.describe()}


async def _devices_of(ctx: ConsoleContext, branches: set[str]) -> set[str]:
    rows = await ctx.db.fetch("SELECT device_id FROM devices WHERE branch_id = ANY($1::text[])", sorted(branches))
    return {r["device_id"] for r in rows}


async def _audit_scope(ctx: ConsoleContext, who: Principal) -> AuditScope | None:
    """What a branch-scoped caller may read of the log: records of its branches or their devices."""
    branches = branch_filter(who)
    if branches is None:
        return None
    return AuditScope(branches=tuple(sorted(branches)), device_ids=tuple(sorted(await _devices_of(ctx, branches))))


async def _backup_scope(ctx: ConsoleContext, who: Principal) -> set[str] | None:
    """Device ids a branch-scoped caller may see backups of (None: every device)."""
    branches = branch_filter(who)
    return None if branches is None else await _devices_of(ctx, branches)


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
        raise ClearCardError(ErrorCode.INVALID_REQUEST, f"There is no backup {backup_id!r} you may see.")
    return found


@router.post("/backups/{backup_id}/verify", summary="Read every copy back (as `clearcard backup verify`)")
async def backup_verify(backup_id: str, ctx: ConsoleContext = Depends(context),
                        who: Principal = Depends(require(Can.BACKUPS))) -> dict[str, Any]:
    await _visible_backup(ctx, who, backup_id)
    result = await verify_backup(ctx.db, ctx.settings, backup_id)
    return {"backup_id": result.backup_id, "ok": result.ok, "damaged": result.damaged}


class RestoreRequest(BaseModel):
    to: str = Field(min_length=1, max_length=1024,
                    description="a folder under the console's restore root (CLEARCARD_RESTORE_ROOT); "
                                "relative paths are taken from the root")
    force: bool = False


@router.post("/backups/{backup_id}/restore",
             summary="Restore into a folder under the restore root on the console's machine (admin with TOTP)")
async def backup_restore(backup_id: str, body: RestoreRequest, ctx: ConsoleContext = Depends(context),
                         who: Principal = Depends(require(Can.ADMIN))) -> dict[str, str]:
    found = await _visible_backup(ctx, who, backup_id)
    target = restore_target(ctx.settings.restore_root, body.to)
    where = await restore_backup(ctx.db, ctx.settings, backup_id, target, force=body.force)
    await audit.record(ctx.bus, service="console", subject=who.subject, action="backup.restored",
                       device_id=found["device_id"], outcome="ok",
                       detail={"backup_id": backup_id, "restored_to": str(where), "force": body.force})
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
