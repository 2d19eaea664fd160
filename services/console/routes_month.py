"""`GET /api/month`: the month at a glance, the same size however large the fleet (aggregated in
PostgreSQL, branches a page at a time)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from services.console import fleet, month
from services.console.context import ConsoleContext, context
from services.console.security import Can, branch_filter, check_branch, require
from services.console.spec import ID_PATTERN, PERIOD_PATTERN, responses
from shared.authz import Principal

router = APIRouter(prefix="/api", tags=["fleet"])


class Risk(BaseModel):
    red: int
    amber: int
    green: int
    unknown: int
    abandoned: int


class MonthCounts(BaseModel):
    devices: int
    cleared: int = Field(description="the device moved past the period, or every invoice type is cleared")
    remaining: int = Field(description="devices - cleared")
    running: int = Field(description="remaining devices with a clear in progress")
    failing: int = Field(description="remaining devices whose latest clear of the period failed")
    not_started: int
    at_risk: int = Field(description="remaining devices whose lock date is near (risk red or amber)")
    min_days_left: int | None = Field(description="fewest days to the lock date among the remaining devices")
    min_days_risk: str = Field(description="the risk colour of min_days_left")
    risk: Risk = Field(description="remaining devices by risk colour")


class BranchCounts(MonthCounts):
    branch_id: str


class ChartDay(BaseModel):
    day: str
    cleared: list[int] = Field(description="devices cleared that day (China time), one number per series")
    failed: int


class Chart(BaseModel):
    series: list[str] = Field(description="branches drawn on their own, then `other`")
    days: list[ChartDay]


class FailureReason(BaseModel):
    code: str
    devices: int


class Window(BaseModel):
    start: str
    end: str


class BranchPage(BaseModel):
    total: int
    offset: int
    limit: int
    rows: list[BranchCounts]


class Month(BaseModel):
    period: str
    today: str = Field(description="the date countdowns count from (China time, or the emulated fleet clock)")
    window: Window
    totals: MonthCounts
    failures: list[FailureReason]
    chart: Chart
    branches: BranchPage


@router.get("/month", response_model=Month, responses=responses(),
            summary="The month at a glance: cleared, remaining, failing and at risk; clears per day and branch")
async def month_view(
    period: str | None = Query(None, pattern=PERIOD_PATTERN,
                               description="YYYY-MM; default: the period whose reporting window is open"),
    branch: str | None = Query(None, pattern=ID_PATTERN, description="only this branch"),
    order: Literal["urgency", "branch", "remaining", "failing"] = Query("urgency", description="branch order"),
    limit: int = Query(50, ge=1, le=500, description="branches per page"),
    offset: int = Query(0, ge=0, le=1_000_000),
    ctx: ConsoleContext = Depends(context),
    who: Principal = Depends(require(Can.STATUS)),
) -> dict[str, Any]:
    visible = branch_filter(who)
    if branch is not None:
        check_branch(who, branch)
        visible = {branch}
    today = await ctx.db.run(fleet.today)
    chosen = period or month.previous_period(today)
    return await ctx.db.run(month.month_at_a_glance, chosen, today, visible, thresholds=ctx.settings.thresholds,
                            order=order, limit=limit, offset=offset)
