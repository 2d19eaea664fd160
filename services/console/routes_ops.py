"""Contract §6 operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import asyncpg
import trio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from services.console.context import ConsoleContext, context
from services.console.readings import CachedReading
from shared import metrics
from shared.bus.api import Bus, BusError
from shared.bus.topology import ALL_SERVICES, DEFAULT, gateway_queue

router = APIRouter(tags=["operations"])

READY_TIMEOUT = 3.0
READY_EVERY = 5.0  # seconds a readiness reading is reused (services/console/readings.py)
FLEET_EVERY = 10.0  # ... and the fleet numbers of /metrics
# A routing key no queue has: the default exchange drops it, but the broker still confirms it,
# which proves the connection and channel work end to end.
PROBE_KEY = "clearcard.readyz.probe"


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


async def _bus_ready(bus: Bus) -> bool:
    with trio.move_on_after(READY_TIMEOUT):
        try:
            await bus.publish(DEFAULT, PROBE_KEY, b"{}", message_id="readyz")
        except BusError:
            return False
        return True
    return False


async def _db_ready(ctx: ConsoleContext) -> bool:
    with trio.move_on_after(READY_TIMEOUT):
        return await ctx.db.ping()
    return False


async def _checks(ctx: ConsoleContext) -> dict[str, bool]:
    return {"database": await _db_ready(ctx), "broker": await _bus_ready(ctx.bus)}


def _reading(ctx: ConsoleContext, name: str, read: Callable[[], Awaitable[Any]], every: float) -> CachedReading[Any]:
    reading = ctx.readings.get(name)
    if reading is None:
        reading = ctx.readings[name] = CachedReading(read, every)
    return reading


@router.get("/readyz", summary="The broker and the database are reachable (checked at most every 5 s)",
            responses={503: {"description": "the broker or the database is not reachable"}})
async def readyz(ctx: ConsoleContext = Depends(context)) -> JSONResponse:
    checks = await _reading(ctx, "ready", partial(_checks, ctx), READY_EVERY).get()
    ok = all(checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready",
                         "checks": {k: "ok" if v else "unreachable" for k, v in checks.items()}},
                        status_code=200 if ok else 503)


async def _fleet_numbers(conn: asyncpg.Connection) -> dict[str, Any]:
    from services.console.fleet import today

    as_of = await today(conn)
    clears = await conn.fetch("SELECT coalesce(outcome, 'running') AS outcome, coalesce(error_code, '') AS code,"
                              " count(*) AS n FROM device_clears GROUP BY 1, 2")
    devices = await conn.fetch("SELECT branch_id, family, lock_date - $1::date AS days, online, count(*) AS n"
                               " FROM devices GROUP BY 1, 2, 3, 4", as_of)
    running = await conn.fetchval("SELECT count(*) FROM clear_requests WHERE status = 'running'")
    in_progress = await conn.fetchval("SELECT count(*) FROM device_clears WHERE outcome IS NULL")
    digital = await conn.fetch("SELECT status, count(*) AS n FROM digital_confirmations GROUP BY 1")
    return {"clears": clears, "devices": devices, "running": running, "in_progress": in_progress,
            "digital": digital}


async def _queue_depths(bus: Bus) -> dict[str, int]:
    """Depths where the transport can tell (the in-memory bus; RabbitBus once it has `queue_depth`)."""
    names = [q.name for q in ALL_SERVICES.queues] + [gateway_queue("default").name]
    depths: dict[str, int] = {}
    sync_depth = getattr(bus, "depth", None)
    async_depth = getattr(bus, "queue_depth", None)
    for name in names:
        try:
            if async_depth is not None:
                value = await async_depth(name)
            elif sync_depth is not None:
                value = sync_depth(name)
            else:
                return {}
        except (KeyError, BusError):
            continue
        if value is not None:
            depths[name] = int(value)
    return depths


async def snapshot(ctx: ConsoleContext) -> metrics.FleetSnapshot:
    """The fleet-wide numbers, read at scrape time."""
    raw = await ctx.db.run(_fleet_numbers)
    devices: dict[tuple[str, str, str], int] = {}
    online: dict[tuple[str, str], int] = {}
    for r in raw["devices"]:
        key = (r["branch_id"], r["family"], metrics.days_left_bucket(r["days"]))
        devices[key] = devices.get(key, 0) + r["n"]
        flag = (r["branch_id"], "true" if r["online"] else "false")
        online[flag] = online.get(flag, 0) + r["n"]
    return metrics.FleetSnapshot(
        clears={(r["outcome"], r["code"]): r["n"] for r in raw["clears"]},
        devices=devices, online=online, running_requests=raw["running"],
        devices_in_progress=raw["in_progress"], queue_depths=await _queue_depths(ctx.bus),
        digital_confirmations={r["status"]: r["n"] for r in raw["digital"]},
    )


@router.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def prometheus(ctx: ConsoleContext = Depends(context)) -> Response:
    # the process's own counters are live; the fleet numbers from PostgreSQL are a cached reading
    fleet_numbers = await _reading(ctx, "fleet", partial(snapshot, ctx), FLEET_EVERY).get()
    return Response(metrics.exposition(fleet_numbers), media_type=CONTENT_TYPE_LATEST)
