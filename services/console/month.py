"""The month at a glance: how a period's clears stand across the fleet, aggregated in PostgreSQL.

Nothing here grows with the fleet: PostgreSQL groups devices by branch, lock date, state and
error code, and clears by day and branch; Python only folds those groups (a few per branch) into
counts, risk colours (`Thresholds.risk` of shared/deadlines.py, the one place risk is decided)
and a chart.

Functions taking a connection are asyncio-flavoured: run them through `Database.run`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import asyncpg

from services.console.fleet import clock_offset
from shared.deadlines import Thresholds

CHART_BRANCHES = 6  # branches drawn on their own in the chart; the rest are summed as "other"
MAX_WINDOW_DAYS = 62
AT_RISK = frozenset({"red", "amber"})

# A device is cleared for period $1 by its own word: it moved past the period, or every invoice
# type it holds is cleared (the coordinator's machine decides `already_cleared` the same way).
CLEARED_FOR_PERIOD = """(d.open_period > $1 OR (d.open_period = $1 AND d.type_status <> '{}'::jsonb
    AND NOT EXISTS (SELECT 1 FROM jsonb_each_text(d.type_status) t WHERE t.value <> '2')))"""

# Each device's state for the period: cleared (above), else what its latest clear of the period says.
_DEVICE_STATES = """
WITH latest AS (
    SELECT DISTINCT ON (dc.device_id) dc.device_id, dc.outcome, dc.error_code
    FROM device_clears_for_console dc JOIN clear_requests_for_console r USING (request_id)
    WHERE r.period = $1 AND ($2::text[] IS NULL OR r.branch_id = ANY($2::text[]))
    ORDER BY dc.device_id, dc.updated_at DESC
)
SELECT d.branch_id, d.lock_date,
       CASE WHEN """ + CLEARED_FOR_PERIOD + """ THEN 'cleared'
            WHEN l.device_id IS NOT NULL AND l.outcome IS NULL THEN 'running'
            WHEN l.outcome = 'failed' THEN 'failing'
            ELSE 'remaining' END AS state,
       CASE WHEN l.outcome = 'failed' THEN l.error_code END AS error_code,
       count(*) AS n
FROM devices_for_console d LEFT JOIN latest l USING (device_id)
WHERE $2::text[] IS NULL OR d.branch_id = ANY($2::text[])
GROUP BY 1, 2, 3, 4
"""

_CLEARS_BY_DAY = """
SELECT ((dc.updated_at + $3::interval) AT TIME ZONE 'Asia/Shanghai')::date AS day, r.branch_id, dc.outcome,
       count(*) AS n
FROM device_clears_for_console dc JOIN clear_requests_for_console r USING (request_id)
WHERE r.period = $1 AND dc.outcome IN ('cleared', 'failed')
  AND ($2::text[] IS NULL OR r.branch_id = ANY($2::text[]))
GROUP BY 1, 2, 3
"""


@dataclass
class BranchMonth:
    """One branch's devices for the period, by state and (for those not cleared) risk colour."""

    branch_id: str
    devices: int = 0
    cleared: int = 0
    running: int = 0
    failing: int = 0
    not_started: int = 0
    at_risk: int = 0
    min_days_left: int | None = None
    min_days_risk: str = "green"
    risk: dict[str, int] = field(default_factory=lambda: {"red": 0, "amber": 0, "green": 0, "unknown": 0,
                                                          "abandoned": 0})

    @property
    def remaining(self) -> int:
        return self.devices - self.cleared

    def as_json(self) -> dict[str, Any]:
        return {"branch_id": self.branch_id, "devices": self.devices, "cleared": self.cleared,
                "remaining": self.remaining, "running": self.running, "failing": self.failing,
                "not_started": self.not_started, "at_risk": self.at_risk, "min_days_left": self.min_days_left,
                "min_days_risk": self.min_days_risk if self.remaining else "green", "risk": dict(self.risk)}


def previous_period(day: date) -> str:
    """The period whose reporting window `day` falls in (the month before)."""
    last = day.replace(day=1) - timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"


def window_start(period: str) -> date:
    """The 1st of the month after `period`: the reporting window opens."""
    year, month = int(period[:4]), int(period[5:7])
    return date(year + month // 12, month % 12 + 1, 1)


async def device_states(conn: asyncpg.Connection, period: str, branches: set[str] | None) -> list[asyncpg.Record]:
    """(branch, lock date, state, error code, count) groups for the period."""
    return list(await conn.fetch(_DEVICE_STATES, period, sorted(branches) if branches is not None else None))


async def clears_by_day(conn: asyncpg.Connection, period: str, branches: set[str] | None,
                        offset: timedelta = timedelta(0)) -> list[asyncpg.Record]:
    """(China-time day on the fleet's calendar, branch, outcome, count) of device clears of the
    period that ended; `offset` shifts recorded times onto an emulated fleet clock."""
    return list(await conn.fetch(_CLEARS_BY_DAY, period, sorted(branches) if branches is not None else None,
                                 offset))


def fold_branches(groups: list[asyncpg.Record], today: date,
                  thresholds: Thresholds) -> tuple[dict[str, BranchMonth], dict[str, int]]:
    """Per-branch counts and, fleet-wide, failing devices per error code."""
    branches: dict[str, BranchMonth] = {}
    reasons: dict[str, int] = defaultdict(int)
    for g in groups:
        b = branches.setdefault(g["branch_id"], BranchMonth(g["branch_id"]))
        n, state = int(g["n"]), g["state"]
        b.devices += n
        if state == "cleared":
            b.cleared += n
            continue
        if state == "running":
            b.running += n
        elif state == "failing":
            b.failing += n
            reasons[g["error_code"] or "INTERNAL"] += n
        else:
            b.not_started += n
        days = (g["lock_date"] - today).days if g["lock_date"] is not None else None
        colour = thresholds.risk(days)
        b.risk[colour] += n
        if colour in AT_RISK:
            b.at_risk += n
        if days is not None and (b.min_days_left is None or days < b.min_days_left):
            b.min_days_left, b.min_days_risk = days, colour
    return branches, dict(reasons)


def window_days(period: str, groups: list[asyncpg.Record], clears: list[asyncpg.Record], today: date) -> list[date]:
    """The days the chart spans: the window's opening to its last lock date (or the last clear, or
    today, when later), at most MAX_WINDOW_DAYS."""
    start = window_start(period)
    end = start.replace(day=15)
    for g in groups:
        if g["state"] != "cleared" and g["lock_date"] is not None:
            end = max(end, g["lock_date"])
    for c in clears:
        end = max(end, c["day"])
    end = min(max(end, min(today, start + timedelta(days=MAX_WINDOW_DAYS - 1))),
              start + timedelta(days=MAX_WINDOW_DAYS - 1))
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def chart(days: list[date], clears: list[asyncpg.Record]) -> dict[str, Any]:
    """Cleared devices per day, stacked by branch (the busiest CHART_BRANCHES, then "other"), with
    the failures per day beside them."""
    per_branch: dict[str, int] = defaultdict(int)
    for c in clears:
        if c["outcome"] == "cleared":
            per_branch[c["branch_id"]] += int(c["n"])
    shown = [b for b, _ in sorted(per_branch.items(), key=lambda kv: (-kv[1], kv[0]))[:CHART_BRANCHES]]
    series = shown + (["other"] if len(per_branch) > len(shown) else [])
    index = {d: i for i, d in enumerate(days)}
    cleared = [[0] * len(series) for _ in days]
    failed = [0] * len(days)
    for c in clears:
        i = index.get(c["day"])
        if i is None:
            continue
        if c["outcome"] == "failed":
            failed[i] += int(c["n"])
        else:
            column = series.index(c["branch_id"]) if c["branch_id"] in shown else len(series) - 1
            cleared[i][column] += int(c["n"])
    return {"series": series,
            "days": [{"day": d.isoformat(), "cleared": cleared[i], "failed": failed[i]} for i, d in enumerate(days)]}


URGENCY = {"urgency", "branch", "remaining", "failing"}


def sort_branches(rows: list[BranchMonth], order: str) -> list[BranchMonth]:
    """Most urgent first (fewest days left among uncleared devices, then most failing), or by name."""
    if order == "branch":
        return sorted(rows, key=lambda b: b.branch_id)
    if order == "remaining":
        return sorted(rows, key=lambda b: (-b.remaining, b.branch_id))
    if order == "failing":
        return sorted(rows, key=lambda b: (-b.failing, b.branch_id))
    return sorted(rows, key=lambda b: (b.remaining == 0, b.min_days_left if b.min_days_left is not None else 10**6,
                                       -b.failing, -b.at_risk, b.branch_id))


async def month_at_a_glance(conn: asyncpg.Connection, period: str, today: date, branches: set[str] | None,
                            *, thresholds: Thresholds | None = None, order: str = "urgency", limit: int = 50,
                            offset: int = 0) -> dict[str, Any]:
    """The whole fleet's month (or that of `branches`): totals, the chart and a page of branches."""
    groups = await device_states(conn, period, branches)
    clears = await clears_by_day(conn, period, branches, await clock_offset(conn))
    per_branch, reasons = fold_branches(groups, today, thresholds or Thresholds())
    totals = BranchMonth("*")
    for b in per_branch.values():
        totals.devices += b.devices
        totals.cleared += b.cleared
        totals.running += b.running
        totals.failing += b.failing
        totals.not_started += b.not_started
        totals.at_risk += b.at_risk
        for colour, n in b.risk.items():
            totals.risk[colour] += n
        if b.min_days_left is not None and (totals.min_days_left is None or b.min_days_left < totals.min_days_left):
            totals.min_days_left, totals.min_days_risk = b.min_days_left, b.min_days_risk
    days = window_days(period, groups, clears, today)
    ordered = sort_branches(list(per_branch.values()), order)
    totals_json = totals.as_json()
    del totals_json["branch_id"]
    return {
        "period": period, "today": today.isoformat(),
        "window": {"start": days[0].isoformat(), "end": days[-1].isoformat()},
        "totals": totals_json,
        "failures": [{"code": code, "devices": n} for code, n in sorted(reasons.items(), key=lambda kv: -kv[1])],
        "chart": chart(days, clears),
        "branches": {"total": len(ordered), "offset": offset, "limit": limit,
                     "rows": [b.as_json() for b in ordered[offset:offset + limit]]},
    }
