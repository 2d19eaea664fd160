"""The console service: HTTP (contract §6) on hypercorn's trio worker, inside the service nursery."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from services.console.app import create_app
from services.console.context import ConsoleContext
from services.console.events import EventHub
from shared.authz import KeyRing
from shared.bus.api import Bus
from shared.bus.rpc import RpcClient
from shared.bus.topology import EXCHANGES
from shared.config import Settings
from shared.db.pool import Database
from shared.outages import keep_running

log = logging.getLogger("clearcard.console")


def _config(settings: Settings) -> Config:
    host, port = settings.http_host, settings.http_port
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 2.0
    if settings.tls.http_cert is not None and settings.tls.http_key is not None:
        # HTTPS (CLEARCARD_HTTP_CERT / _KEY): bearer tokens and invoice data never cross the
        # network in clear; hypercorn then speaks TLS only, with HTTP/2 offered by ALPN
        config.certfile = str(settings.tls.http_cert)
        config.keyfile = str(settings.tls.http_key)
    return config


async def serve_console(
    bus: Bus,
    db: Database,
    settings: Settings,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the base URL (useful with port 0) once listening."""
    await bus.declare(EXCHANGES)
    hub = EventHub()
    async with RpcClient.open(bus, "console") as rpc, trio.open_nursery() as nursery:
        await nursery.start(partial(keep_running, "console event stream", partial(hub.run, bus)))
        app = create_app(ConsoleContext(bus=bus, db=db, settings=settings, keys=KeyRing(settings.keys_dir),
                                        hub=hub, rpc=rpc))
        # no shutdown trigger of its own: cancelling this service's scope stops the server
        binds = await nursery.start(partial(serve, cast(Any, app), _config(settings),
                                            shutdown_trigger=trio.sleep_forever))
        log.info("console listening on %s", binds[0])
        task_status.started(binds[0])


async def run_console(
    bus: Bus,
    db: Database,
    settings: Settings,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the console on CLEARCARD_HTTP until cancelled."""
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_console, bus, db, settings))
        task_status.started()
