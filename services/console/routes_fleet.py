"""Fleet views: the caller, the fleet by branch, one device, digital-invoice confirmations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import trio
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from services.console import digital, fleet
from services.console.context import ConsoleContext, context
from services.console.security import Can, branch_filter, capabilities, check_branch, principal, require
from services.console.spec import (
    DEVICE_PATTERN,
    ID_PATTERN,
    NOT_FOUND,
    PERIOD_PATTERN,
    TAXPAYER_PATTERN,
    TEXT_PATTERN,
    ConsoleError,
    ErrorBody,
    NotFound,
    responses,
)
from shared import audit
from shared.authz import Principal
from shared.bus.topology import COMMANDS, gateway_routing_key
from shared.errors import ClearCardError, ErrorCode
from shared.messages.base import Period
from shared.messages.device import DeviceCommand, DeviceInfo

router = APIRouter(prefix="/api", tags=["fleet"], responses=responses())
Family = Literal["ukey", "golden_tax_disk", "tax_control_disk"]
StatusFilter = Literal["needs_report", "reported", "cleared", "red", "amber", "green", "unknown", "abandoned"]
Filing = Literal["filed", "not_filed", "unknown"]
Comparison = Literal["pass", "fail", "pending", "unknown"]
MONITORING_TIMEOUT = 5.0


@dataclass(frozen=True)
class Selection:
    """The device filters /api/status and /api/fleet share (contract §6)."""

    branch: str | None
    family: str | None
    status: str | None
    days: int | None
    filing: str | None
    comparison: str | None


def selection(
    branch: str | None = Query(None, pattern=ID_PATTERN, description="only this branch"),
    family: Family | None = Query(None, description="only this device family"),
    status: StatusFilter | None = Query(None, description="a type status (needs_report, reported, cleared) "
                                        "or a risk (red, amber, green, unknown, abandoned)"),
    days: int | None = Query(None, ge=-10_000, le=10_000, description="only devices with at most this many days left"),
    filing: Filing | None = Query(None, description="the bureau's filing status of the open period"),
    comparison: Comparison | None = Query(None, description="the bureau's comparison status of the open period"),
) -> Selection:
    return Selection(branch, family, status, days, filing, comparison)


@router.get("/me", summary="Who the token speaks for and what it may do")
async def me(who: Principal = Depends(principal)) -> dict[str, Any]:
    return {"subject": who.subject, "role": who.role.value, "branches": list(who.branches),
            "expires_at": who.expires_at, "can": capabilities(who.role)}


@router.get("/status", summary="Every device with its lock-date countdown and the bureau's view: what "
            "`clearcard status --json` gives (contract §6), with the filters of /api/fleet")
async def status_list(
    selected: Selection = Depends(selection),
    ctx: ConsoleContext = Depends(context),
    who: Principal = Depends(require(Can.STATUS)),
) -> list[dict[str, Any]]:
    grouped = await _fleet(ctx, who, selected)
    rows: list[dict[str, Any]] = grouped["devices"]
    return rows


@router.get("/fleet", summary="Every device by branch, with the lock-date countdown, the bureau's view and "
            "digital-invoice confirmations beside them")
async def fleet_by_branch(
    selected: Selection = Depends(selection),
    limit: int = Query(2000, ge=1, le=20_000, description="devices at most (`truncated` says when more matched)"),
    ctx: ConsoleContext = Depends(context),
    who: Principal = Depends(require(Can.STATUS)),
) -> dict[str, Any]:
    return await _fleet(ctx, who, selected, limit)


async def _fleet(ctx: ConsoleContext, who: Principal, selected: Selection, limit: int | None = None) -> dict[str, Any]:
    branch, family, status, days = selected.branch, selected.family, selected.status, selected.days
    filing, comparison = selected.filing, selected.comparison
    visible = branch_filter(who)
    if branch is not None:
        check_branch(who, branch)
        visible = {branch}
    as_of = await ctx.db.run(fleet.today)
    thresholds = ctx.settings.thresholds
    rows = [d for d in await ctx.db.run(fleet.devices, as_of, thresholds, visible)
            if fleet.matches(d, family=family, status=status, max_days=days, filing=filing, comparison=comparison)]
    confirmations = digital.with_countdown(await ctx.db.run(digital.list_confirmations, branch), as_of)
    if visible is not None:
        confirmations = [c for c in confirmations if c["branch_id"] in visible]
    matched = len(rows)
    if limit is not None:
        rows = rows[:limit]  # a browser is sent a page, never a whole large fleet
    # red_days/amber_days: the thresholds of shared/deadlines.py, the scheduler's escalation levels
    return {"today": as_of.isoformat(), "red_days": thresholds.critical_days, "amber_days": thresholds.warning_days,
            "abandoned_days": thresholds.abandoned_days,
            "branches": fleet.by_branch(rows, confirmations), "devices": rows, "matched": matched,
            "truncated": matched > len(rows)}


async def _monitoring(ctx: ConsoleContext, device_id: str, gateway_id: str | None) -> dict[str, Any]:
    """Ask the device's gateway for the monitoring data (监控管理数据) the device holds right now."""
    if ctx.rpc is None:
        return {"available": False, "reason": "no gateway connection"}
    if gateway_id is None:
        return {"available": False, "reason": ErrorCode.DEVICE_OFFLINE.value,
                "message": "No gateway has found this device yet."}
    try:
        with trio.fail_after(MONITORING_TIMEOUT):
            info = await ctx.rpc.call(COMMANDS, gateway_routing_key(gateway_id, "info"),
                                      DeviceCommand(device_id=device_id), DeviceInfo)
    except trio.TooSlowError:
        return {"available": False, "reason": ErrorCode.TIMEOUT.value}
    except ClearCardError as exc:
        return {"available": False, "reason": exc.code.value, "message": exc.message}
    return {"available": True, "clock": info.clock, "types": info.types, "pin_tries_left": info.pin_tries_left,
            "offline_pending": info.offline_pending, **info.monitoring.model_dump()}


@router.get("/devices/{device_id}", summary="One device: per-type status, monitoring data and clear history",
            responses=NOT_FOUND)
async def device(device_id: str = Path(pattern=DEVICE_PATTERN),
                 monitoring: bool = Query(True, description="ask the device (via its gateway)"),
                 ctx: ConsoleContext = Depends(context),
                 who: Principal = Depends(require(Can.STATUS))) -> dict[str, Any]:
    row = await ctx.db.run(fleet.device_row, device_id)
    if row is None:
        raise ClearCardError(ErrorCode.UNKNOWN_DEVICE, f"There is no device {device_id}.")
    check_branch(who, row["branch_id"])
    as_of = await ctx.db.run(fleet.today)
    summary = next(d for d in await ctx.db.run(fleet.devices, as_of, ctx.settings.thresholds, {row["branch_id"]})
                   if d["device_id"] == device_id)
    return {**summary, "today": as_of.isoformat(),
            "monitoring": await _monitoring(ctx, device_id, row["gateway_id"]) if monitoring
            else {"available": False, "reason": "not asked"},
            "history": await ctx.db.run(fleet.history, device_id)}


@router.get("/digital", summary="Monthly digital-invoice (数电) summary confirmations")
async def digital_list(branch: str | None = Query(None, pattern=ID_PATTERN),
                       period: str | None = Query(None, pattern=PERIOD_PATTERN),
                       ctx: ConsoleContext = Depends(context),
                       who: Principal = Depends(require(Can.STATUS))) -> list[dict[str, Any]]:
    if branch is not None:
        check_branch(who, branch)
    visible = branch_filter(who)
    rows = digital.with_countdown(await ctx.db.run(digital.list_confirmations, branch, period),
                                  await ctx.db.run(fleet.today))
    return [r for r in rows if visible is None or r["branch_id"] in visible]


@router.post("/digital/{taxpayer_id}/{period}/confirm", summary="Confirm a month's digital-invoice summary",
             responses=NOT_FOUND)
async def digital_confirm(taxpayer_id: str = Path(pattern=TAXPAYER_PATTERN), period: str = Path(pattern=PERIOD_PATTERN),
                          ctx: ConsoleContext = Depends(context),
                          who: Principal = Depends(require(Can.DIGITAL_CONFIRM))) -> dict[str, Any]:
    rows = await ctx.db.run(digital.list_confirmations, None, period)
    row = next((r for r in rows if r["taxpayer_id"] == taxpayer_id), None)
    if row is None:
        raise NotFound(f"No summary of {period} for taxpayer {taxpayer_id}.")
    check_branch(who, row["branch_id"])
    confirmed = await ctx.db.run(digital.confirm_month, taxpayer_id, period, who.subject)
    await audit.record(ctx.bus, service="console", subject=who.subject, action="digital.confirmed",
                       record_id=f"digital.confirmed:{taxpayer_id}:{period}", branch_id=row["branch_id"],
                       outcome="ok", detail={k: confirmed[k] for k in (
                           "taxpayer_id", "period", "blue_count", "blue_amount", "blue_tax",
                           "red_count", "red_amount", "red_tax")})
    return confirmed


class DigitalTaxpayer(BaseModel):
    taxpayer_id: str = Field(pattern=TAXPAYER_PATTERN)
    name: str = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)
    branch_id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    periods: list[Period] = Field(default_factory=list, description="months the simulated bureau publishes")


@router.post("/digital/simulate", summary="Simulator: register a digital-invoice taxpayer and publish months",
             responses={409: {"model": ErrorBody, "description": "the taxpayer id's check character is wrong "
                              "(INVALID_REQUEST)"}})
async def digital_simulate(body: DigitalTaxpayer, ctx: ConsoleContext = Depends(context),
                           who: Principal = Depends(require(Can.ADMIN))) -> list[dict[str, Any]]:
    try:
        await ctx.db.run(digital.add_taxpayer, body.taxpayer_id, body.name, body.branch_id)
        return [await ctx.db.run(digital.simulate_month, body.taxpayer_id, p, ctx.settings.calendar)
                for p in body.periods]
    except ClearCardError as exc:
        # the check character of a credit code is beyond what a schema can say: refused as asked
        raise ConsoleError(exc.code, exc.message, status=409) from None
