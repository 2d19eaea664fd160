"""The bureau watch (leader only, scheduler or not): keeps the bureau's view current and resumes
clears that waited for a pending comparison.

Each tick (`schedule_tick`) it asks the bureau, in batches of up to 200 devices per message,
for the filing and comparison of every device whose open period is closed and not yet filed
and passed: devices awaiting a pending comparison every `retry_every`, the others every
`bureau_refresh`, so a fleet of tens of thousands costs a few hundred small messages per
interval and no status view ever calls the bureau. A device whose last clear ended
COMPARISON_PENDING is cleared again, with no operator action, as soon as the bureau has
answered pass (or fail, which then reaches the people responsible as COMPARISON_FAILED),
until its lock date.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import asyncpg
import structlog
import trio

from services.coordinator import bureau_view, fleet
from services.coordinator.clock import Clock, previous_period
from services.coordinator.config import CoordinatorConfig
from services.coordinator.ports import Ports
from shared import telemetry
from shared.db import Database
from shared.db.pool import INFRASTRUCTURE_ERRORS
from shared.errors import ClearCardError, ErrorCode
from shared.messages.authority import MAX_BATCH, DeclarationBatch, DeclarationBatchQuery, DeclarationQuery
from shared.tax_calendar import add_months, period_of

log = structlog.get_logger("clearcard.coordinator.bureau")
SUBJECT = "bureau-watch"
PER_TICK = 20 * MAX_BATCH  # devices asked per tick at most; the rest wait for the next tick
WATCHED_MONTHS = 3  # older open periods belong to abandoned devices: not asked again


class BureauWatch:
    def __init__(self, db: Database, ports: Ports, clock: Clock, config: CoordinatorConfig, *,
                 poke: Callable[[], None] = lambda: None, on_staged: Callable[[], None] = lambda: None) -> None:
        self._db = db
        self._ports = ports
        self._poke = poke  # the runner: resumed clears are waiting
        self._clock = clock
        self._config = config
        self._on_staged = on_staged

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick until cancelled; an unreachable bureau or database only delays the next look."""
        task_status.started()
        while True:
            try:
                await self.tick()
            except (*INFRASTRUCTURE_ERRORS, asyncpg.PostgresError) as exc:
                # never takes the leader's other duties (the outbox relay) down with it
                log.warning("bureau watch tick failed", error=repr(exc))
            await trio.sleep(self._config.schedule_tick)

    async def tick(self) -> str | None:
        """Refresh what is due, then resume the clears it unblocked; the fleet id started, if any."""
        now = self._clock.now()
        current = period_of(now.date())
        due = await self._db.run(self._due, current)
        for start in range(0, len(due), MAX_BATCH):
            batch = due[start:start + MAX_BATCH]
            try:
                answer = await self._ports.authority("declaration_statuses", DeclarationBatchQuery(
                    queries=[DeclarationQuery(device_id=d, taxpayer_id=t, period=p) for d, t, p in batch]),
                    DeclarationBatch)
            except ClearCardError as exc:
                log.warning("the bureau did not answer the status refresh", code=exc.code, error=exc.message)
                break
            rows = [(s.device_id, s.period, "filed" if s.declared else "not_filed", s.comparison)
                    for s in answer.statuses]
            await self._db.run(bureau_view.record, rows, "refresh")
        fleet_id = await self._db.run(self._resume, now)
        if fleet_id:
            self._poke()
            self._on_staged()
        return fleet_id

    async def _due(self, conn: asyncpg.Connection, current: str) -> list[tuple[str, str, str]]:
        """(device, taxpayer, open period) whose view is missing, not final, and old enough."""
        rows = await conn.fetch(
            """
            SELECT d.device_id, d.taxpayer_id, d.open_period FROM devices_for_coordinator d
            LEFT JOIN bureau_views b ON b.device_id = d.device_id AND b.period = d.open_period
            WHERE d.open_period < $1 AND d.open_period >= $2
              AND (b.device_id IS NULL OR NOT (b.filing = 'filed' AND b.comparison = 'pass'))
              AND (b.checked_at IS NULL OR b.checked_at <= now() - make_interval(secs =>
                   CASE WHEN d.last_result = $3 THEN $4::float8 ELSE $5::float8 END))
            ORDER BY b.checked_at NULLS FIRST, d.device_id LIMIT $6
            """, current, add_months(current, -WATCHED_MONTHS), ErrorCode.COMPARISON_PENDING.value,
            float(self._config.retry_every), float(self._config.bureau_refresh), PER_TICK)
        return [(r["device_id"], r["taxpayer_id"], r["open_period"]) for r in rows]

    async def _resume(self, conn: asyncpg.Connection, now: datetime) -> str | None:
        """Clear again every device whose pending comparison the bureau has since finished."""
        rows = await conn.fetch(
            """
            SELECT d.device_id FROM devices_for_coordinator d
            JOIN bureau_views b ON b.device_id = d.device_id AND b.period = d.open_period
            JOIN LATERAL (
                SELECT dc.error_code, dc.updated_at FROM device_clears dc JOIN clear_requests r USING (request_id)
                WHERE dc.device_id = d.device_id AND r.period = d.open_period
                ORDER BY dc.updated_at DESC LIMIT 1) c ON true
            WHERE d.last_result = $1 AND c.error_code = $1
              AND b.comparison <> 'pending' AND b.checked_at > c.updated_at
              AND (d.lock_date IS NULL OR d.lock_date >= $2)
              AND NOT EXISTS (SELECT 1 FROM device_clears o WHERE o.device_id = d.device_id AND o.outcome IS NULL)
            """, ErrorCode.COMPARISON_PENDING.value, now.date())
        if not rows:
            return None
        devices = await fleet.candidates(conn, None, [r["device_id"] for r in rows])
        groups = fleet.group(devices, None, previous_period(now))
        if not groups:
            return None
        # no fleet id reuse needed: resumed devices have an open clear and are not picked again
        fleet_id = f"await-{now:%Y%m%d%H%M}-{uuid.uuid4().hex[:6]}"
        await fleet.fan_out(conn, fleet_id=fleet_id, subject=SUBJECT, filters={"awaited": "comparison"},
                            groups=groups, invoice_types=[], trace_id=telemetry.current_trace_id(),
                            traceparent=None, lease=self._config.lease_seconds)
        log.info("comparison done at the bureau: clears resumed", fleet_id=fleet_id,
                 devices=sum(len(v) for v in groups.values()))
        return fleet_id
