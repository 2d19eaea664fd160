"""Scheduled and on-demand backups of every registered device.

`backup.schedule` backs up the named devices (or a branch's, or all) now. The monthly round is a
periodic task in every backup replica; only the replica holding a PostgreSQL advisory lock (the
leader) runs it, and because a round's request id names its month, a device is backed up once a
month whichever replica runs it and however often it restarts. A device that was offline is
tried again on the next check.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
import trio
import trio_asyncio
from pydantic import Field

from services.backup import store
from shared.china_time import CHINA
from shared.db.pool import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.backup import BackupTaken, TakeBackup
from shared.messages.base import DeviceId, Frozen
from shared.outages import DEFAULT_BACKOFF, OUTAGE_ERRORS, describe

log = structlog.get_logger("clearcard.backup")

SCHEDULE_ENV = "CLEARCARD_BACKUP_SCHEDULE"
LEADER_LOCK = 0x4343424B  # 'CCBK': one scheduling leader across backup replicas

Take = Callable[[TakeBackup], Awaitable[BackupTaken]]


class ScheduleBackups(Frozen):
    """`schedule`: back up registered devices now (all, a branch's, or the named ones)."""

    request_id: str = Field(min_length=1, max_length=120)  # a device is backed up once per request id
    device_ids: list[DeviceId] = Field(default_factory=list)
    branch_id: str | None = None


class DeviceBackup(Frozen):
    device_id: str
    period: str | None = None
    backup_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


class BackupsScheduled(Frozen):
    request_id: str
    results: list[DeviceBackup]


@dataclass(frozen=True)
class SchedulePolicy:
    """When the monthly round is due (from `day` of each month, China time) and how often to check."""

    day: int | None = 1  # None: no monthly round
    interval: float = 3600.0  # seconds between checks (and leadership attempts)
    startup_delay: float = 60.0  # let gateways register their devices first


def schedule_from_env(environ: Mapping[str, str] | None = None) -> SchedulePolicy:
    """`CLEARCARD_BACKUP_SCHEDULE`: `off`, or the day of the month (1-28) the round is due from; default 1."""
    raw = (os.environ if environ is None else environ).get(SCHEDULE_ENV, "").strip().lower()
    if not raw:
        return SchedulePolicy()
    if raw == "off":
        return SchedulePolicy(day=None)
    if not raw.isdigit() or not 1 <= int(raw) <= 28:
        raise ValueError(f"{SCHEDULE_ENV} must be 'off' or a day of the month from 1 to 28, got {raw!r}")
    return SchedulePolicy(day=int(raw))


def previous_month(now: datetime) -> str:
    local = now.astimezone(CHINA)
    year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def monthly_request_id(now: datetime, policy: SchedulePolicy) -> str | None:
    """The request id of this month's round if it is due, else None."""
    local = now.astimezone(CHINA)
    if policy.day is None or local.day < policy.day:
        return None
    return f"scheduled-{local:%Y-%m}"


async def back_up_devices(db: Database, take: Take, msg: ScheduleBackups, *, now: datetime | None = None,
                          concurrency: int = 4) -> BackupsScheduled:
    """A backup of each device's open period (the one still to be cleared); failures are per device."""
    devices = await db.run(store.registered_devices, list(msg.device_ids), msg.branch_id)
    found = {d[0] for d in devices}
    results = {
        d: DeviceBackup(device_id=d, error_code=ErrorCode.UNKNOWN_DEVICE.value,
                        error_message=f"device {d} is not registered")
        for d in msg.device_ids if d not in found
    }
    fallback = previous_month(now or datetime.now(UTC))
    limiter = trio.CapacityLimiter(concurrency)

    async def one(device_id: str, gateway_id: str, open_period: str | None) -> None:
        period = open_period or fallback
        async with limiter:
            try:
                taken = await take(TakeBackup(request_id=msg.request_id, device_id=device_id, period=period,
                                              gateway_id=gateway_id))
            except ClearCardError as exc:
                results[device_id] = DeviceBackup(device_id=device_id, period=period,
                                                  error_code=exc.code.value, error_message=exc.message)
                return
        results[device_id] = DeviceBackup(device_id=device_id, period=period, backup_id=taken.backup_id)

    async with trio.open_nursery() as nursery:
        for device in devices:
            nursery.start_soon(one, *device)
    return BackupsScheduled(request_id=msg.request_id, results=[results[k] for k in sorted(results)])


class Leader:
    """Holds the scheduling advisory lock on its own connection for as long as it lives."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def alive(self) -> bool:
        """False once the connection (and with it the lock) is gone."""
        try:
            await trio_asyncio.aio_as_trio(self._conn.fetchval)("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True


@asynccontextmanager
async def leadership(dsn: str, key: int = LEADER_LOCK) -> AsyncIterator[Leader | None]:
    """The leader if this process got the lock, else None; the lock goes with the connection."""
    conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn)
    try:
        got = await trio_asyncio.aio_as_trio(conn.fetchval)("SELECT pg_try_advisory_lock($1)", key)
        yield Leader(conn) if got else None
    finally:
        conn.terminate()  # synchronous, safe under cancellation; the server drops the session lock


@dataclass(frozen=True)
class RoundReport:
    leader: bool
    result: BackupsScheduled | None = None


async def run_scheduler(
    db: Database,
    take: Take,
    policy: SchedulePolicy,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    reports: trio.MemorySendChannel[RoundReport] | None = None,
    after_round: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The monthly round, run by whichever replica leads, until cancelled."""
    task_status.started()
    if policy.day is None:
        return
    await trio.sleep(policy.startup_delay)
    waits = DEFAULT_BACKOFF.delays()
    while True:
        outage = False
        try:
            async with leadership(db.dsn) as leader:
                if leader is None and reports is not None:
                    await reports.send(RoundReport(leader=False))
                while leader is not None and await leader.alive():
                    request_id = monthly_request_id(clock(), policy)
                    result = None
                    if request_id is not None:
                        result = await back_up_devices(db, take, ScheduleBackups(request_id=request_id),
                                                       now=clock())
                        failed = [r.device_id for r in result.results if r.error_code]
                        log.info("scheduled backups", request_id=request_id, devices=len(result.results),
                                 failed=failed)
                        if after_round is not None:
                            await after_round()  # retention, applied by the leader only
                    if reports is not None:
                        await reports.send(RoundReport(leader=True, result=result))
                    await trio.sleep(policy.interval)
                outage = leader is not None  # the lock's connection failed: stand again soon
        except* OUTAGE_ERRORS as group:  # the round's nursery reports a group; a bug ends the service
            log.warning("backup scheduling check failed; trying again soon", error=describe(group))
            outage = True
        if outage:  # the database (or the gateway's) is away: look again soon, not in an hour
            await trio.sleep(next(waits))
        else:  # another replica leads: stand again later
            waits = DEFAULT_BACKOFF.delays()
            await trio.sleep(policy.interval)
