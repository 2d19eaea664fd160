"""The monthly scheduler (leader only): opens each period's window, retries transient failures
every `retry_every` until the lock date, escalates devices nearing their lock date (a warning,
then a critical alarm, at the thresholds of shared/deadlines.py that also colour the console)
and warns once about each abandoned device.

It never retries a wrong PIN, a failed comparison or a locked device: those need a person. A
pending comparison is not retried here but by the bureau watch (bureau_watch.py), scheduler or
not, once the bureau has finished comparing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta

import asyncpg
import structlog
import trio

from services.coordinator import fleet, outbox
from services.coordinator.clock import Clock, previous_period
from services.coordinator.config import CoordinatorConfig
from services.coordinator.runner import Runner
from shared import telemetry
from shared.db import Database
from shared.deadlines import DEFAULT as DEFAULT_THRESHOLDS
from shared.deadlines import Thresholds
from shared.errors import RETRIED_NEXT_ROUND
from shared.messages.fleet import DeviceAbandoned, LockWarning
from shared.outages import OUTAGE_ERRORS, describe

log = structlog.get_logger("clearcard.coordinator.scheduler")
SUBJECT = "scheduler"
OPENS_AT = time(0, 5)  # operators wait until shortly after midnight on the 1st (device clock)


def window_open(now: datetime) -> bool:
    """The reporting window of the previous month is open (after 00:05 on the 1st)."""
    return now.day > 1 or now.time() >= OPENS_AT


class Scheduler:
    def __init__(self, db: Database, runner: Runner, clock: Clock, config: CoordinatorConfig, *,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS, on_staged: Callable[[], None] = lambda: None) -> None:
        self._db = db
        self._runner = runner
        self._clock = clock
        self._config = config
        self._thresholds = thresholds
        self._on_staged = on_staged

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.tick()
            except* OUTAGE_ERRORS as group:  # the next tick tries again; a bug ends the leader's duties
                log.warning("scheduler tick failed; waiting for the database", error=describe(group))
            await trio.sleep(self._config.schedule_tick)

    async def tick(self) -> list[str]:
        """One look at the calendar; returns the fleet ids it started."""
        now = self._clock.now()
        if not window_open(now):
            return []
        period = previous_period(now)
        started = []
        fleet_id = await self._db.run(self._round, period, now)
        if fleet_id:
            started.append(fleet_id)
            self._runner.poke()
        await self._db.run(self._escalate, period, now.date())
        await self._db.run(self._abandoned, period, now.date())
        self._on_staged()
        return started

    async def _round(self, conn: asyncpg.Connection, period: str, now: datetime) -> str | None:
        """Open the window (round 0) or start a retry round when one is due."""
        await conn.execute("SELECT pg_advisory_xact_lock($1)", 0x43435343)
        last = await conn.fetchrow(
            "SELECT round, started_at FROM schedule_rounds WHERE period = $1 ORDER BY round DESC LIMIT 1", period)
        if last is None:
            number = 0
            devices = [d for d in await fleet.candidates(conn, None) if d.open_period == period]
        else:
            if (now - last["started_at"]).total_seconds() < self._config.retry_every:
                return None
            number = last["round"] + 1
            devices = await self._retryable(conn, period, now.date())
        if not devices:
            if last is None:
                await conn.execute("INSERT INTO schedule_rounds (period, round, fleet_id, started_at)"
                                   " VALUES ($1, 0, '', $2)", period, now)
            return None
        fleet_id = f"sched-{period}-r{number}"
        trace_id = telemetry.current_trace_id()
        groups = fleet.group(devices, period, period)
        await fleet.fan_out(conn, fleet_id=fleet_id, subject=SUBJECT, filters={"round": number},
                            groups=groups, invoice_types=[], trace_id=trace_id, traceparent=None,
                            lease=self._config.lease_seconds)
        await conn.execute("INSERT INTO schedule_rounds (period, round, fleet_id, started_at) VALUES ($1,$2,$3,$4)",
                           period, number, fleet_id, now)
        log.info("scheduled clears", period=period, round=number, devices=len(devices))
        return fleet_id

    async def _retryable(self, conn: asyncpg.Connection, period: str, today: date) -> list[fleet.Candidate]:
        """Devices whose latest clear of `period` failed transiently, not busy, before their lock date."""
        rows = await conn.fetch(
            """
            SELECT DISTINCT ON (d.device_id) d.device_id, d.outcome, d.error_code
            FROM device_clears d JOIN clear_requests r USING (request_id)
            WHERE r.period = $1 ORDER BY d.device_id, d.updated_at DESC
            """, period)
        wanted = [r["device_id"] for r in rows if r["outcome"] == "failed" and r["error_code"] in RETRIED_NEXT_ROUND]
        if not wanted:
            return []
        devices = await fleet.candidates(conn, None, wanted)
        return [d for d in devices if d.open_period == period and (d.lock_date is None or d.lock_date >= today)]

    async def _escalate(self, conn: asyncpg.Connection, period: str, today: date) -> None:
        """A lock warning per device, level and lock date (stable ids: staged once).

        Only devices still holding a closed period and not locked yet: after its lock date a
        device is locked (its clears fail DEVICE_LOCKED) and no longer nears anything.
        """
        rows = await conn.fetch(
            "SELECT device_id, branch_id, lock_date, last_result FROM devices_for_coordinator"
            " WHERE open_period <= $1 AND lock_date BETWEEN $2::date AND $2::date + $3::int",
            period, today, self._thresholds.warning_days)
        trace_id = telemetry.current_trace_id()
        for r in rows:
            level = self._thresholds.level((r["lock_date"] - today).days)
            if level is None:
                continue
            event = LockWarning(request_id=f"lock-{r['device_id']}", trace_id=trace_id, device_id=r["device_id"],
                                branch_id=r["branch_id"], lock_date=r["lock_date"].isoformat(),
                                days_left=(r["lock_date"] - today).days, level=level,
                                last_result=r["last_result"])
            await outbox.stage(conn, f"lock-{r['device_id']}", outbox.event(
                event, message_id=f"event:lockwarn:{r['device_id']}:{r['lock_date']}:{level}"))

    async def _abandoned(self, conn: asyncpg.Connection, period: str, today: date) -> None:
        """One `device.abandoned` warning per device and last report (stable ids: staged once)."""
        limit = today - timedelta(days=self._thresholds.abandoned_days)
        rows = await conn.fetch(
            "SELECT device_id, branch_id, open_period, lock_date, latest_report_date FROM devices_for_coordinator"
            " WHERE open_period < $1"
            " AND coalesce(latest_report_date, to_date(open_period || '-01', 'YYYY-MM-DD')) < $2",
            period, limit)
        trace_id = telemetry.current_trace_id()
        for r in rows:
            last = self._thresholds.last_report(r["latest_report_date"], r["open_period"])
            if last is None or not self._thresholds.abandoned(r["latest_report_date"], r["open_period"], today):
                continue
            event = DeviceAbandoned(request_id=f"abandoned-{r['device_id']}", trace_id=trace_id,
                                    device_id=r["device_id"], branch_id=r["branch_id"], open_period=r["open_period"],
                                    last_report=last.isoformat(), days_since=(today - last).days,
                                    lock_date=r["lock_date"].isoformat() if r["lock_date"] else None)
            await outbox.stage(conn, f"abandoned-{r['device_id']}", outbox.event(
                event, message_id=f"event:abandoned:{r['device_id']}:{last.isoformat()}"))
