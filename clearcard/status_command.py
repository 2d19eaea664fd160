"""`clearcard status`: every device's per-type status, lock date, days left and the bureau's view."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from shared.config import Settings
from shared.db import Database
from shared.fleet_status import device_status as status_rows
from shared.fleet_status import today

COLOURS = {"red": "red", "amber": "yellow", "green": "green", "abandoned": "magenta", "unknown": ""}


async def device_status(db: Database, settings: Settings, branch: str | None) -> list[dict[str, Any]]:
    """One object per device, as contract §2 shapes `status --json`."""
    as_of = await db.run(today)
    return await db.run(status_rows, as_of, settings.thresholds, [branch] if branch else None)


def render_status(rows: list[dict[str, Any]]) -> Table:
    """The same rows as a table; colours are the console's risk colours (shared/deadlines.py)."""
    table = Table(title="devices")
    for column in ("device", "branch", "family", "types", "lock date", "days left", "filing", "comparison",
                   "last result"):
        table.add_column(column)
    for r in rows:
        colour = COLOURS.get(r["risk"], "")
        days = "abandoned" if r["abandoned"] else str(r["days_left"])
        types = " ".join(f"{k}:{v}" for k, v in r["types"].items())
        table.add_row(r["device_id"], r["branch_id"], r["family"], types, r["lock_date"] or "-",
                      f"[{colour}]{days}[/{colour}]" if colour else days, r["filing"], r["comparison"],
                      r["last_result"] or "-")
    return table
