"""Contract §6 operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from services.console import metrics_view
from services.console.context import ConsoleContext, context
from services.console.readings import CachedReading
from shared.bus.api import Bus, BusError
from shared.bus.topology import DEFAULT

router = APIRouter(tags=["operations"])

READY_TIMEOUT = 3.0
READY_EVERY = 5.0  # seconds a readiness reading is reused (services/console/readings.py)
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


@router.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def prometheus(request: Request, ctx: ConsoleContext = Depends(context)) -> Response:
    """The whole installation's metrics (services/console/metrics_view.py), cached for a few seconds."""
    cache = getattr(request.app.state, "scrape_cache", None)
    if cache is None:
        cache = request.app.state.scrape_cache = metrics_view.ScrapeCache()
    return Response(await metrics_view.cached(ctx, cache), media_type=CONTENT_TYPE_LATEST)
