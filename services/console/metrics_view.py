"""The console's `/metrics`: the whole installation's instruments and the fleet, cheap to scrape.

A scrape reads the installation's metric series (summed over every serving process, see
shared/metrics_store.py), a few grouped counts of the fleet and the broker's queue depths;
the rendered text is kept for `CACHE_SECONDS`, so a scraper (or several) polling fast costs
one reading per interval whatever the fleet's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
import trio

from services.console.context import ConsoleContext
from services.console.fleet import today
from shared import metrics, metrics_store
from shared.bus.api import BusError
from shared.bus.topology import ALL_SERVICES, gateway_queue
from shared.deadlines import Thresholds
from shared.fleet_status import bureau_view
from shared.tax_calendar import period_of

log = structlog.get_logger("clearcard.console.metrics")
CACHE_SECONDS = 5.0
# queues declared by services outside shared/bus/topology.py (the console may not import them)
OTHER_QUEUES = ("clearcard.coordinator.commands", "clearcard.notify")


@dataclass
class ScrapeCache:
    """The last rendered exposition and when (trio time) it was made."""

    body: bytes = b""
    made_at: float = float("-inf")
    lock: trio.Lock = field(default_factory=trio.Lock)


async def _fleet(conn: asyncpg.Connection, thresholds: Thresholds) -> dict[str, Any]:
    as_of = await today(conn)
    groups = await conn.fetch(
        """
        SELECT d.branch_id, d.family, d.lock_date, d.online, d.open_period, d.latest_report_date,
               (d.type_status <> '{}'::jsonb AND NOT EXISTS (
                   SELECT 1 FROM jsonb_each_text(d.type_status) e WHERE e.value <> '2')) AS cleared,
               b.filing, b.comparison, b.checked_at AS bureau_checked_at, count(*) AS n
        FROM devices_for_console d
        LEFT JOIN bureau_views_for_console b ON b.device_id = d.device_id AND b.period = d.open_period
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
        """)
    devices: dict[tuple[str, str, str], int] = {}
    online: dict[tuple[str, str], int] = {}
    bureau: dict[tuple[str, str], int] = {}
    for g in groups:
        days = (g["lock_date"] - as_of).days if g["lock_date"] else None
        abandoned = thresholds.abandoned(g["latest_report_date"], g["open_period"], as_of)
        risk = thresholds.risk(days, cleared=g["cleared"], abandoned=abandoned)
        key = (g["branch_id"], g["family"], risk)
        devices[key] = devices.get(key, 0) + g["n"]
        flag = (g["branch_id"], "true" if g["online"] else "false")
        online[flag] = online.get(flag, 0) + g["n"]
        view = bureau_view(g, as_of)
        pair = (view["filing"], view["comparison"])
        bureau[pair] = bureau.get(pair, 0) + g["n"]
    gateways = [r["gateway_id"] for r in await conn.fetch(
        "SELECT DISTINCT gateway_id FROM devices_for_console WHERE gateway_id IS NOT NULL")]  # NULL: not seen yet
    return {
        "devices": devices, "online": online, "bureau": bureau, "gateways": gateways, "period": period_of(as_of),
        "running": await conn.fetchval("SELECT count(*) FROM clear_requests_for_console WHERE status = 'running'"),
        "in_progress": await conn.fetchval("SELECT count(*) FROM device_clears_for_console WHERE outcome IS NULL"),
        "digital": {r["status"]: r["n"] for r in await conn.fetch(
            "SELECT status, count(*) AS n FROM digital_confirmations GROUP BY 1")},
        "series": await metrics_store.installation(conn),
    }


async def _queue_depths(ctx: ConsoleContext, gateways: list[str]) -> dict[str, int]:
    """Ready messages per queue and dead-letter queue, from the broker (or the in-memory bus)."""
    names = [q.name for q in ALL_SERVICES.queues] + list(OTHER_QUEUES)
    names += [gateway_queue(g).name for g in sorted(set(gateways) | {"default"})]
    names += [f"{n}.dead" for n in names]
    depths = getattr(ctx.bus, "queue_depths", None)
    if depths is None:
        return {}
    try:
        with trio.move_on_after(3):
            found: dict[str, int] = await depths(names)
            return found
    except BusError as exc:
        log.warning("queue depths unavailable", error=str(exc))
    return {}


async def render(ctx: ConsoleContext) -> bytes:
    """The exposition text: this process's latest values are stored first, then everything is read."""
    await ctx.db.call(metrics_store.flush, metrics_store.PROCESS, metrics_store.samples())
    fleet = await ctx.db.run(_fleet, ctx.settings.thresholds)
    snapshot = metrics.FleetSnapshot(
        devices=fleet["devices"], bureau=fleet["bureau"], online=fleet["online"],
        running_requests=fleet["running"], devices_in_progress=fleet["in_progress"],
        queue_depths=await _queue_depths(ctx, fleet["gateways"]), digital_confirmations=fleet["digital"])
    return metrics.exposition(snapshot, metrics_store.InstallationCollector(fleet["series"]))


async def cached(ctx: ConsoleContext, cache: ScrapeCache) -> bytes:
    """The exposition, rendered at most once per CACHE_SECONDS (concurrent scrapes share one)."""
    async with cache.lock:
        if trio.current_time() - cache.made_at >= CACHE_SECONDS:
            cache.body = await render(ctx)
            cache.made_at = trio.current_time()
        return cache.body
