"""`clearcard status`: every device's per-type status, lock date and days left."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from typing import Any

from rich.table import Table

from shared.db import Database

_WORDS = {0: "needs_report", 1: "reported", 2: "cleared"}
CHINA = timezone(timedelta(hours=8))


async def device_status(db: Database, branch: str | None, today: date | None = None) -> list[dict[str, Any]]:
    """One object per device, as contract §2 shapes `status --json`."""
    today = today or datetime.now(CHINA).date()
    rows = await db.fetch(
        "SELECT device_id, branch_id, family, taxpayer_id, machine_no, type_status, lock_date,"
        " pin_tries_left, online, last_seen, last_result, open_period FROM devices"
        " WHERE $1::text IS NULL OR branch_id = $1 ORDER BY branch_id, device_id", branch)
    result = []
    for r in rows:
        raw = r["type_status"]
        statuses = json.loads(raw) if isinstance(raw, str) else (raw or {})
        lock: date | None = r["lock_date"]
        result.append({
            "device_id": r["device_id"],
            "branch_id": r["branch_id"],
            "family": r["family"],
            "taxpayer_id": r["taxpayer_id"],
            "machine_no": r["machine_no"],
            "open_period": r["open_period"],
            "types": {code: _WORDS.get(int(v), str(v)) for code, v in sorted(statuses.items())},
            "lock_date": lock.isoformat() if lock else None,
            "days_left": (lock - today).days if lock else None,
            "pin_tries_left": r["pin_tries_left"],
            "online": r["online"],
            "last_seen": r["last_seen"].isoformat() if r["last_seen"] else None,
            "last_result": r["last_result"],
        })
    return result


def render_status(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="devices")
    for column in ("device", "branch", "family", "types", "lock date", "days left", "last result"):
        table.add_column(column)
    for r in rows:
        days = r["days_left"]
        colour = "red" if days is not None and days <= 3 else "yellow" if days is not None and days <= 7 else ""
        types = " ".join(f"{k}:{v}" for k, v in r["types"].items())
        table.add_row(r["device_id"], r["branch_id"], r["family"], types, r["lock_date"] or "-",
                      f"[{colour}]{days}[/{colour}]" if colour else str(days), r["last_result"] or "-")
    return table
