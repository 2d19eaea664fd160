"""Periodic enumeration: notices devices plugged in or pulled out while the gateway runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import structlog
import trio

from shared.errors import ClearCardError
from shared.outages import OUTAGE_ERRORS, describe

log = structlog.get_logger("clearcard.gateway")

SCAN_INTERVAL_S = 2.0


async def watch_presence(
    scan: Callable[[], Iterable[str]],
    on_change: Callable[[set[str], set[str]], Awaitable[None]],
    *,
    interval: float = SCAN_INTERVAL_S,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call `on_change(appeared, vanished)` after each scan that differs from the last one.

    The first scan reports every present device as appeared; readiness is signalled after it,
    so the registry is current when the gateway starts answering. A change that could not be
    recorded (the database away) is reported again after the next scan.
    """
    present: set[str] = set()
    started = False
    while True:
        try:
            now = set(await trio.to_thread.run_sync(lambda: list(scan())))
        except ClearCardError as exc:
            log.warning("device enumeration failed", error=exc.message)
            now = present
        except OUTAGE_ERRORS as exc:  # a USB/IP cabinet unreachable: keep the last view
            log.warning("device enumeration failed", error=describe(exc))
            now = present
        appeared, vanished = now - present, present - now
        if appeared or vanished or not started:
            try:
                await on_change(appeared, vanished)
            except* OUTAGE_ERRORS as group:
                log.warning("device changes not recorded; trying again", error=describe(group))
                now = present  # the same difference shows again on the next scan
        present = now
        if not started:
            task_status.started()
            started = True
        await trio.sleep(interval)
