"""Every enrolled device as `clearcard status --json` and `GET /api/status` show it (contract §2).

One shape for the CLI, the HTTP API and the console: per-type status, lock date and days
left, the risk colour and abandonment from the one set of thresholds (shared/deadlines.py),
and the bureau's view of the open period as the coordinator last recorded it (its
`bureau_views` table, filled during clears and by the leader's scheduled refresh: reading a
status never calls the bureau). Functions taking a connection are asyncio-flavoured.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from shared.china_time import CHINA
from shared.deadlines import Thresholds
from shared.status_words import status_word
from shared.tax_calendar import period_of

FILINGS = ("filed", "not_filed", "unknown")
COMPARISONS = ("pass", "fail", "pending", "unknown")

# the device registry with the bureau's view of each device's open period
COLUMNS = (
    "d.device_id, d.branch_id, d.family, d.taxpayer_id, d.machine_no, d.gateway_id, d.type_status,"
    " d.open_period, d.lock_date, d.pin_tries_left, d.offline_pending, d.online, d.last_seen, d.last_result,"
    " d.latest_report_date, b.filing, b.comparison, b.checked_at AS bureau_checked_at"
)
def bureau_join(views: str = "bureau_views") -> str:
    """The join of each device's open-period bureau view; the console names the view published for it."""
    return f"LEFT JOIN {views} b ON b.device_id = d.device_id AND b.period = d.open_period"


BUREAU_JOIN = bureau_join()


async def today(conn: asyncpg.Connection, clock: str = "authority_clock") -> date:
    """The date countdowns count from: the emulated fleet clock when one runs, else China's date."""
    row = await conn.fetchrow(f"SELECT fleet_clock, started_at FROM {clock} WHERE id")
    now = datetime.now(UTC)
    if row is not None and row["fleet_clock"]:
        return (datetime.fromisoformat(row["fleet_clock"]) + (now - row["started_at"])).astimezone(CHINA).date()
    return now.astimezone(CHINA).date()


def bureau_view(row: Any, as_of: date) -> dict[str, Any]:
    """Filing and comparison of the open period: recorded, not due yet, or unknown."""
    period = row["open_period"]
    if period is not None and period >= period_of(as_of):
        # the month is not over: no return can be filed for it yet
        return {"filing": "not_filed", "comparison": "unknown", "due": False, "checked_at": None}
    if row["filing"] is None:
        return {"filing": "unknown", "comparison": "unknown", "due": period is not None, "checked_at": None}
    checked = row["bureau_checked_at"]
    return {"filing": row["filing"], "comparison": row["comparison"], "due": True,
            "checked_at": checked.isoformat() if checked else None}


def shape(row: Any, as_of: date, thresholds: Thresholds) -> dict[str, Any]:
    """One device's status object from a row with COLUMNS."""
    raw = row["type_status"]
    statuses = json.loads(raw) if isinstance(raw, str) else (raw or {})
    types = {code: status_word(v) for code, v in sorted(statuses.items())}
    lock: date | None = row["lock_date"]
    days = (lock - as_of).days if lock else None
    abandoned = thresholds.abandoned(row["latest_report_date"], row["open_period"], as_of)
    cleared = bool(types) and all(v == "cleared" for v in types.values())
    bureau = bureau_view(row, as_of)
    last_report = thresholds.last_report(row["latest_report_date"], row["open_period"])
    return {
        "device_id": row["device_id"],
        "branch_id": row["branch_id"],
        "family": row["family"],
        "taxpayer_id": row["taxpayer_id"],
        "machine_no": row["machine_no"],
        "open_period": row["open_period"],
        "types": types,
        "lock_date": lock.isoformat() if lock else None,
        "days_left": days,
        "risk": thresholds.risk(days, cleared=cleared, abandoned=abandoned),
        "warning": None if cleared else thresholds.level(days),
        "abandoned": abandoned,
        "last_report": last_report.isoformat() if last_report else None,
        "filing": bureau["filing"],
        "comparison": bureau["comparison"],
        "bureau": {"period": row["open_period"], "due": bureau["due"], "checked_at": bureau["checked_at"]},
        "pin_tries_left": row["pin_tries_left"],
        "offline_pending": row["offline_pending"],
        "online": row["online"],
        "last_seen": row["last_seen"].isoformat() if row["last_seen"] else None,
        "last_result": row["last_result"],
    }


async def device_status(conn: asyncpg.Connection, as_of: date, thresholds: Thresholds,
                        branches: list[str] | None = None) -> list[dict[str, Any]]:
    """Every device (of `branches`, None = all), ordered by branch and device."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM devices d {BUREAU_JOIN}"
        " WHERE $1::text[] IS NULL OR d.branch_id = ANY($1::text[]) ORDER BY d.branch_id, d.device_id",
        branches)
    return [shape(r, as_of, thresholds) for r in rows]
