"""Tokens, the audit log, backups and emulated devices: the rest of what the CLI does."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.console.asking import RESTORE_SECONDS, ask, audit_records
from services.console.asking import backups as backup_list
from services.console.context import ConsoleContext, context
from services.console.security import Can, branch_filter, check_branch, require
from services.console.spec import (
    DEVICE_PATTERN,
    ID_PATTERN,
    NOT_FOUND,
    TEXT_PATTERN,
    ConsoleError,
    ErrorBody,
    IsoDateTime,
    NotFound,
    responses,
)
from shared import audit
from shared.authz import Principal, Role
from shared.authz.delegation import SERVICE_MAX_TTL, Grant, delegate
from shared.authz.tokens import DEFAULT_TTL
from shared.bus.topology import AUDIT_VERIFY, BACKUP_RESTORE, BACKUP_VERIFY, gateway_routing_key
from shared.errors import ClearCardError, ErrorCode
from shared.messages.audit import AuditChainChecked, AuditQuery, VerifyAuditChain
from shared.messages.backup import BackupRestored, BackupVerified, ListBackups, RestoreBackup, VerifyBackup
from shared.messages.base import BranchId
from shared.messages.device import DeviceCommand, EmulatorDone, EmulatorState

router = APIRouter(prefix="/api", tags=["administration"], responses=responses())


class TokenRequest(BaseModel):
    subject: str = Field(min_length=1, max_length=128, pattern=TEXT_PATTERN)
    role: Role
    branches: list[BranchId | Literal["*"]] = Field(min_length=1, max_length=1000)
    kind: Literal["person", "service"] = Field("service", description="who will hold it: a service (script, "
                                               "ERP connector) or a person; the rules of that kind apply")
    ttl: int = Field(DEFAULT_TTL, ge=1, le=SERVICE_MAX_TTL,
                     description="seconds: at most 8 hours for a person, 7 days for a service")


@router.post("/tokens", summary="Issue a bearer token for a service or a person (admin with TOTP; audited)",
             responses={409: {"model": ErrorBody, "description": "a grant the rules refuse: a service holding "
                              "admin, a lifetime over the kind's cap (INVALID_REQUEST)"}})
async def issue_token(body: TokenRequest, ctx: ConsoleContext = Depends(context),
                      who: Principal = Depends(require(Can.ADMIN))) -> dict[str, Any]:
    # never more than the issuer has: role, branches, no second factor, lifetime capped by kind
    try:
        token = delegate(ctx.keys, who, Grant(body.subject, body.role, tuple(body.branches), body.kind, body.ttl))
    except ClearCardError as exc:
        if exc.code is not ErrorCode.INVALID_REQUEST:
            raise
        # a schema-valid grant the rules refuse (a service holding admin, a person's 8-hour cap)
        raise ConsoleError(exc.code, exc.message, status=409) from None
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
    request_id: str | None = Query(None, pattern=ID_PATTERN),
    device_id: str | None = Query(None, pattern=DEVICE_PATTERN),
    branch_id: str | None = Query(None, pattern=ID_PATTERN),
    subject: str | None = Query(None, max_length=128, pattern=TEXT_PATTERN),
    since: IsoDateTime | None = None, until: IsoDateTime | None = None,
    limit: int = Query(500, ge=1, le=10_000),
    ctx: ConsoleContext = Depends(context), who: Principal = Depends(require(Can.AUDIT)),
) -> list[dict[str, Any]]:
    if branch_id is not None:
        check_branch(who, branch_id)
    query = AuditQuery(request_id=request_id, device_id=device_id, branch_id=branch_id, subject=subject,
                       since=since, until=until, **_audit_scope(who))
    return await audit_records(ctx, query, limit)


@router.get("/audit/export", summary="The audit log as JSON Lines, oldest first (as `clearcard audit export`)",
            response_class=Response,
            responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}})
async def audit_export(since: IsoDateTime | None = None, ctx: ConsoleContext = Depends(context),
                       who: Principal = Depends(require(Can.AUDIT))) -> Response:
    # the audit service answers page by page: a whole log never travels as one message
    records = await audit_records(ctx, AuditQuery(since=since, **_audit_scope(who)))
    lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    return Response(lines, media_type="application/x-ndjson")


@router.get("/audit/verify", summary="Check the audit chain (as `clearcard audit verify`)")
async def audit_verify(ctx: ConsoleContext = Depends(context),
                       who: Principal = Depends(require(Can.AUDIT))) -> dict[str, Any]:
    # the chain spans every branch: its length alone tells of other branches' activity
    if branch_filter(who) is not None:
        raise ClearCardError(ErrorCode.PERMISSION_DENIED, "Checking the whole audit chain needs an every-branch token.")
    report = await ask(ctx, AUDIT_VERIFY, VerifyAuditChain(), AuditChainChecked)
    return {"ok": report.ok, "count": report.count, "checkpoint_seq": report.checkpoint_seq, "result": report.result}


def _audit_scope(who: Principal) -> dict[str, Any]:
    """What a branch-scoped caller may read of the log (AuditQuery's scope fields): records of its
    branches or their devices (the audit service knows which); no limit for an every-branch caller."""
    branches = branch_filter(who)
    return {} if branches is None else {"scoped": True, "scope_branches": sorted(branches)}


def _backup_scope(who: Principal) -> list[str] | None:
    """The branches a branch-scoped caller may see backups of (None: every branch)."""
    branches = branch_filter(who)
    return None if branches is None else sorted(branches)


@router.get("/backups", summary="Every backup (as `clearcard backup list --json`)")
async def backups(device_id: str | None = None, ctx: ConsoleContext = Depends(context),
                  who: Principal = Depends(require(Can.BACKUPS))) -> list[dict[str, Any]]:
    return await backup_list(ctx, ListBackups(device_id=device_id, branches=_backup_scope(who)))


async def _visible_backup(ctx: ConsoleContext, who: Principal, backup_id: str) -> dict[str, Any]:
    found = await backup_list(ctx, ListBackups(backup_id=backup_id, branches=_backup_scope(who)))
    if not found:
        raise NotFound(f"There is no backup {backup_id!r} you may see.")
    return found[0]


@router.post("/backups/{backup_id}/verify", summary="Read every copy back (as `clearcard backup verify`)",
             responses=NOT_FOUND)
async def backup_verify(backup_id: str, ctx: ConsoleContext = Depends(context),
                        who: Principal = Depends(require(Can.BACKUPS))) -> dict[str, Any]:
    await _visible_backup(ctx, who, backup_id)
    result = await ask(ctx, BACKUP_VERIFY, VerifyBackup(backup_id=backup_id), BackupVerified)
    return {"backup_id": result.backup_id, "ok": result.ok, "damaged": result.damaged}


class RestoreRequest(BaseModel):
    to: str = Field(min_length=1, max_length=1024,
                    description="a folder under the backup service's restore root (CLEARCARD_RESTORE_ROOT); "
                                "relative paths are taken from the root")
    force: bool = False


@router.post("/backups/{backup_id}/restore",
             summary="Restore into a folder under the restore root of the backup service's machine (admin with TOTP)")
async def backup_restore(backup_id: str, body: RestoreRequest, ctx: ConsoleContext = Depends(context),
                         who: Principal = Depends(require(Can.ADMIN))) -> dict[str, str]:
    found = await _visible_backup(ctx, who, backup_id)
    # the backup service confines the folder to its restore root before anything is written
    done = await ask(ctx, BACKUP_RESTORE, RestoreBackup(backup_id=backup_id, to=body.to, force=body.force),
                     BackupRestored, seconds=RESTORE_SECONDS)
    await audit.record(ctx.bus, service="console", subject=who.subject, action="backup.restored",
                       device_id=found["device_id"], outcome="ok",
                       detail={"backup_id": backup_id, "restored_to": done.restored_to, "force": body.force})
    return {"backup_id": backup_id, "restored_to": done.restored_to}


async def _emulator_gateway(ctx: ConsoleContext, device_id: str) -> str:
    """The gateway serving an emulated device: the one that last saw it, else this host's."""
    rows = await ctx.db.fetch("SELECT gateway_id FROM devices_for_console WHERE device_id = $1", device_id)
    return str(rows[0]["gateway_id"] if rows and rows[0]["gateway_id"] else ctx.settings.gateway_id)


@router.get("/emulator/{device_id}", summary="An emulated device's full state (as `clearcard emulator show`)")
async def emulator_show(device_id: str, ctx: ConsoleContext = Depends(context),
                        who: Principal = Depends(require(Can.STATUS))) -> dict[str, Any]:
    # the gateway driving the emulated cabinet reads its state files; the console never does
    key = gateway_routing_key(await _emulator_gateway(ctx, device_id), "emulator_show")
    state = (await ask(ctx, key, DeviceCommand(device_id=device_id), EmulatorState)).state
    check_branch(who, state["branch"])
    return state


@router.post("/emulator/{device_id}/{action}", summary="Plug or unplug an emulated device (admin)")
async def emulator_plug(device_id: str, action: str, ctx: ConsoleContext = Depends(context),
                        who: Principal = Depends(require(Can.ADMIN))) -> dict[str, str]:
    if action not in ("plug", "unplug"):
        raise ClearCardError(ErrorCode.INVALID_REQUEST, "action must be plug or unplug")
    key = gateway_routing_key(await _emulator_gateway(ctx, device_id), f"emulator_{action}")
    await ask(ctx, key, DeviceCommand(device_id=device_id), EmulatorDone)
    return {"device_id": device_id, "done": action}
