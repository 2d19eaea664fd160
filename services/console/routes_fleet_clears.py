"""Fleet clears over HTTP: preview with filters, confirm, and follow (as `clearcard fleet clear`).

The preview is the coordinator's own (`coordinator.fleet_preview` over RPC: the selection rules
live there); confirming re-runs it and submits `fleet.clear` with the caller's token only if the
selection is still the one previewed, so nobody clears devices they did not see.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import trio
from fastapi import APIRouter, Depends, Path, Query
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field, StrictBool

from services.console import fleet_clears
from services.console.context import ConsoleContext, context
from services.console.security import Can, bearer_scheme, branch_filter, check_branch, require
from services.console.spec import CONFLICT, ID_PATTERN, NOT_FOUND, TIMEOUT, ConsoleError, NotFound, responses
from shared.authz import Principal
from shared.bus.topology import COMMANDS
from shared.errors import ErrorCode
from shared.messages.base import Period, RequestId
from shared.messages.fleet import FLEET_CLEAR, FLEET_PREVIEW, FleetFilters, FleetPlan, FleetPreview

router = APIRouter(prefix="/api/fleet/clears", tags=["fleet clears"])
ANSWER_SECONDS = 15.0


class FleetClearSubmission(BaseModel):
    """Which devices (every filter narrows), for which period; a preview first, then its confirmation."""

    filters: FleetFilters = Field(default_factory=FleetFilters)
    period: Period | None = Field(None, description="default: each device's last closed period")
    preview: StrictBool = Field(False, description="only say what would be cleared")
    confirm: str | None = Field(None, max_length=64, description="the `confirmation` of the preview being confirmed")
    fleet_id: RequestId | None = Field(None, description="generated when omitted; a fleet id is used once")


class FleetAccepted(BaseModel):
    fleet_id: str
    requests: list[str] = Field(description="the per-branch clear requests, to follow at /api/clears/{id}")
    devices: int
    progress: str


async def _plan(ctx: ConsoleContext, who: Principal, body: FleetClearSubmission) -> FleetPlan:
    for branch in body.filters.branches:
        if branch != "*":
            check_branch(who, branch)
    if ctx.rpc is None:
        raise ConsoleError(ErrorCode.TIMEOUT, "The coordinator cannot be asked (no bus connection).")
    plan: FleetPlan | None = None
    with trio.move_on_after(ANSWER_SECONDS):
        plan = await ctx.rpc.call(COMMANDS, FLEET_PREVIEW, FleetPreview(
            period=body.period, filters=body.filters, scope=list(who.branches)), FleetPlan)
    if plan is None:
        raise ConsoleError(ErrorCode.TIMEOUT, "The coordinator did not answer the preview in time.")
    return plan


@router.post("", summary="Preview a fleet clear with filters, or confirm one (auto mode, per-branch requests)",
             status_code=202, response_model=FleetAccepted,
             responses={200: {"model": FleetPlan, "description": "the preview (with `preview: true`)"},
                        **responses(CONFLICT, TIMEOUT)})
async def submit_fleet_clear(
    body: FleetClearSubmission,
    ctx: ConsoleContext = Depends(context),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    who: Principal = Depends(require(Can.CLEAR_AUTO)),
) -> Any:
    from fastapi.responses import JSONResponse

    plan = await _plan(ctx, who, body)
    if body.preview:
        return JSONResponse(plan.model_dump(mode="json"), status_code=200)
    if body.confirm is None:
        raise ConsoleError(ErrorCode.CONFIRMATION_REQUIRED, "A fleet clear needs the confirmation of its preview.")
    if body.confirm != plan.confirmation:
        raise ConsoleError(ErrorCode.PLAN_CHANGED)
    if plan.devices == 0:
        raise ConsoleError(ErrorCode.INVALID_REQUEST, "No device matches these filters.", status=409)
    fleet_id = body.fleet_id or f"fleet-{uuid.uuid4().hex[:12]}"
    assert credentials is not None  # `require` verified it
    command = {"fleet_id": fleet_id, "period": body.period, "filters": body.filters.model_dump(mode="json")}
    answer: dict[str, Any] | None = None
    with ctx.hub.subscribe(fleet_id) as (_, events):
        await ctx.bus.publish(COMMANDS, FLEET_CLEAR, json.dumps(command).encode(), message_id=fleet_id,
                              headers={"authorization": f"Bearer {credentials.credentials}"})
        with trio.move_on_after(ANSWER_SECONDS):
            async for event in events:
                if event.get("event") in ("fleet.accepted", "fleet.rejected"):
                    answer = event
                    break
    if answer is None:
        raise ConsoleError(ErrorCode.TIMEOUT, f"The coordinator did not acknowledge {fleet_id} in time; "
                           f"follow it at /api/fleet/clears/{fleet_id}.")
    if answer["event"] == "fleet.rejected":
        code = ErrorCode(answer["error_code"]) if answer["error_code"] in ErrorCode.__members__ else ErrorCode.INTERNAL
        raise ConsoleError(code, answer["message"])
    return FleetAccepted(fleet_id=fleet_id, requests=answer["requests"], devices=answer["devices"],
                         progress=f"/api/fleet/clears/{fleet_id}")


class FleetSummary(BaseModel):
    fleet_id: str
    subject: str
    requests: int
    created_at: str | None


@router.get("", summary="The latest fleet clears", response_model=list[FleetSummary], responses=responses())
async def recent_fleet_clears(limit: int = Query(20, ge=1, le=200), ctx: ConsoleContext = Depends(context),
                              who: Principal = Depends(require(Can.FOLLOW))) -> list[dict[str, Any]]:
    return await ctx.db.run(fleet_clears.recent, limit, branch_filter(who))


class Counts(BaseModel):
    devices: int
    cleared: int
    already_cleared: int
    failed: int
    skipped: int
    running: int


class RequestProgress(Counts):
    request_id: str
    branch_id: str
    period: str
    status: str
    created_at: str | None
    finished_at: str | None


class Failure(BaseModel):
    code: str
    devices: int


class FleetProgress(BaseModel):
    fleet_id: str
    subject: str
    created_at: str | None
    finished: bool
    totals: Counts
    requests: int
    running_steps: dict[str, int] = Field(description="devices still running, by the last step they reached")
    failures: list[Failure]
    rows: list[RequestProgress] = Field(description=f"the first {fleet_clears.REQUEST_ROWS} per-branch requests")


@router.get("/{fleet_id}", summary="How a fleet clear is going: devices by outcome, per branch request",
            response_model=FleetProgress, responses=responses(NOT_FOUND))
async def fleet_clear_progress(fleet_id: str = Path(pattern=ID_PATTERN), ctx: ConsoleContext = Depends(context),
                               who: Principal = Depends(require(Can.FOLLOW))) -> dict[str, Any]:
    progress = await ctx.db.run(fleet_clears.fleet_progress, fleet_id, branch_filter(who))
    if progress is None:
        raise NotFound(f"There is no fleet clear {fleet_id}.")
    return progress
