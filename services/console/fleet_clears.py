"""How a fleet clear is going: its per-branch requests' devices by outcome, aggregated in PostgreSQL.

Functions taking a connection are asyncio-flavoured: run them through `Database.run`.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.china_time import in_china

REQUEST_ROWS = 200  # per-branch requests listed with a fleet clear; the totals count them all

_BY_REQUEST = """
SELECT r.request_id, r.branch_id, r.period, r.status, r.created_at, r.finished_at,
       count(dc.device_id) AS devices,
       count(*) FILTER (WHERE dc.outcome = 'cleared') AS cleared,
       count(*) FILTER (WHERE dc.outcome = 'already_cleared') AS already_cleared,
       count(*) FILTER (WHERE dc.outcome = 'failed') AS failed,
       count(*) FILTER (WHERE dc.outcome = 'skipped') AS skipped,
       count(*) FILTER (WHERE dc.device_id IS NOT NULL AND dc.outcome IS NULL) AS running
FROM clear_requests_for_console r LEFT JOIN device_clears_for_console dc USING (request_id)
WHERE r.fleet_id = $1 AND ($2::text[] IS NULL OR r.branch_id = ANY($2::text[]))
-- every column named: a view carries no primary key to group the others by
GROUP BY r.request_id, r.branch_id, r.period, r.status, r.created_at, r.finished_at ORDER BY r.branch_id, r.period
"""

_RUNNING_STEPS = """
SELECT dc.step, count(*) AS n FROM device_clears_for_console dc JOIN clear_requests_for_console r USING (request_id)
WHERE r.fleet_id = $1 AND dc.outcome IS NULL AND ($2::text[] IS NULL OR r.branch_id = ANY($2::text[]))
GROUP BY 1
"""

_FAILURES = """
SELECT dc.error_code, count(*) AS n
FROM device_clears_for_console dc JOIN clear_requests_for_console r USING (request_id)
WHERE r.fleet_id = $1 AND dc.outcome = 'failed' AND ($2::text[] IS NULL OR r.branch_id = ANY($2::text[]))
GROUP BY 1 ORDER BY 2 DESC
"""

COUNTS = ("devices", "cleared", "already_cleared", "failed", "skipped", "running")


def _iso(value: Any) -> str | None:
    return in_china(value).isoformat() if value is not None else None


async def fleet_progress(conn: asyncpg.Connection, fleet_id: str, branches: set[str] | None) -> dict[str, Any] | None:
    """The fleet clear's totals, its running devices by step, failures by code and its requests;
    None if there is no such fleet clear."""
    op = await conn.fetchrow("SELECT fleet_id, subject, filters, request_ids, created_at"
                             " FROM fleet_operations_for_console"
                             " WHERE fleet_id = $1", fleet_id)
    if op is None:
        return None
    scope = sorted(branches) if branches is not None else None
    rows = await conn.fetch(_BY_REQUEST, fleet_id, scope)
    steps = await conn.fetch(_RUNNING_STEPS, fleet_id, scope)
    failures = await conn.fetch(_FAILURES, fleet_id, scope)
    totals = {k: sum(int(r[k]) for r in rows) for k in COUNTS}
    return {
        "fleet_id": op["fleet_id"], "subject": op["subject"], "created_at": _iso(op["created_at"]),
        "finished": all(r["status"] != "running" for r in rows),
        "totals": totals, "requests": len(rows),
        "running_steps": {r["step"]: int(r["n"]) for r in steps},
        "failures": [{"code": r["error_code"] or "INTERNAL", "devices": int(r["n"])} for r in failures],
        "rows": [{"request_id": r["request_id"], "branch_id": r["branch_id"], "period": r["period"],
                  "status": r["status"], "created_at": _iso(r["created_at"]), "finished_at": _iso(r["finished_at"]),
                  **{k: int(r[k]) for k in COUNTS}} for r in rows[:REQUEST_ROWS]],
    }


async def recent(conn: asyncpg.Connection, limit: int, branches: set[str] | None) -> list[dict[str, Any]]:
    """The latest fleet clears touching `branches` (None: any), newest first."""
    rows = await conn.fetch(
        "SELECT f.fleet_id, f.subject, cardinality(f.request_ids) AS requests, f.created_at"
        " FROM fleet_operations_for_console f"
        " WHERE $2::text[] IS NULL OR EXISTS (SELECT 1 FROM clear_requests_for_console r WHERE r.fleet_id = f.fleet_id"
        " AND r.branch_id = ANY($2::text[])) ORDER BY f.created_at DESC LIMIT $1",
        limit, sorted(branches) if branches is not None else None)
    return [{"fleet_id": r["fleet_id"], "subject": r["subject"], "requests": r["requests"],
             "created_at": _iso(r["created_at"])} for r in rows]
