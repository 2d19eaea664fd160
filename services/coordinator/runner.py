"""Drives claimed device clears step by step, persisting each step before the next.

Work is leased in PostgreSQL and the lease is renewed (heartbeat) only for the device clears
this process is driving: a coordinator that dies leaves leases that expire within
`lease_seconds`, and any replica resumes those devices at their last persisted step. A step's
state, its `clear.progress` event and its audit record commit in one transaction (outbox).
Every write is fenced (leases.py): a replica that lost a lease stops driving that device.

The database or broker going away is only a delay: claims, heartbeats and writes are tried
again with backoff, a step interrupted by an outage runs again (every step is idempotent).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
import trio
from opentelemetry.trace import SpanKind

from services.coordinator import bureau_view, leases, outbox
from services.coordinator import repository as repo
from services.coordinator.config import CoordinatorConfig
from services.coordinator.machine import Gate, gate, next_step
from services.coordinator.ports import Ports
from services.coordinator.steps import (
    STEP_EFFECTS,
    DeviceAlreadyCleared,
    StepResult,
    answered_ahead,
    persisted,
)
from shared import metrics, telemetry
from shared.bus.api import Bus
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.events import OutgoingMessage
from shared.messages.clear import (
    ClearFinished,
    ClearProgress,
    DeviceResult,
    Error,
    Outcome,
    Step,
    overall_status,
    step_percent,
)
from shared.outages import DEFAULT_BACKOFF, OUTAGE_ERRORS, describe, until_available

SERVICE = "coordinator"
log = structlog.get_logger("clearcard.coordinator")
Key = tuple[str, str]  # (request id, device id)
# No device work starts on a lease last confirmed longer ago than this share of it: another
# replica may claim it once it expires, and then only one of the two may be talking to the device.
SAFE_SHARE = 0.75


@dataclass
class _Held:
    """A device clear this process drives: its fencing number, what stops it, when it was last ours."""

    epoch: int
    scope: trio.CancelScope
    confirmed_at: float  # trio time at which the lease was last known to be ours


class Runner:
    """Runs device clears with bounded concurrency; one instance per coordinator process."""

    def __init__(self, bus: Bus, db: Database, ports: Ports, config: CoordinatorConfig | None = None,
                 *, on_staged: Callable[[], None] = lambda: None) -> None:
        self.owner = f"coordinator-{uuid.uuid4().hex[:12]}"
        self.config = config or CoordinatorConfig()
        self._bus = bus
        self._db = db
        self._ports = ports
        self._on_staged = on_staged
        self._slots = trio.CapacityLimiter(self.config.max_in_flight)
        self._gateways: dict[str, trio.CapacityLimiter] = {}
        self._branches: dict[str, trio.CapacityLimiter] = {}
        self._driving: dict[Key, _Held] = {}
        self._renewed = trio.Event()  # the heartbeat (or a write) confirmed leases
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def in_flight(self) -> int:
        """Device clears this process holds right now."""
        return len(self._driving)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Claim and drive work until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._renew_leases)
            task_status.started()
            while True:
                free = self.config.max_in_flight - len(self._driving)
                works: list[repo.Work] = []
                if free > 0:
                    try:
                        works = await self._db.run(leases.claim_work, self.owner, free, self.config.lease_seconds)
                    except* OUTAGE_ERRORS as group:
                        log.warning("cannot claim work; waiting for the database", error=describe(group))
                    self.start(works)
                with trio.move_on_after(self.config.poll_interval):
                    await self._wake.wait()
                self._wake = trio.Event()

    def poke(self) -> None:
        """Look for claimable work now (a request was accepted without a lease)."""
        self._wake.set()

    def start(self, works: list[repo.Work]) -> None:
        """Drive work this process has just leased (a freshly accepted request)."""
        assert self._nursery is not None, "runner not started"
        for work in works:
            key = (work.request_id, work.device_id)
            if key not in self._driving:
                self._driving[key] = _Held(work.lease_epoch, trio.CancelScope(), trio.current_time())
                self._nursery.start_soon(self.drive, work)

    async def _renew_leases(self) -> None:
        """The heartbeat: extend our leases; stop driving the ones another replica took over."""
        while True:
            await trio.sleep(self.config.lease_seconds / 4)
            asked_at = trio.current_time()
            held = {(rid, did): h.epoch for (rid, did), h in self._driving.items()}
            lost: set[Key] | None = None
            try:
                lost = await self._db.run(leases.renew_leases, self.owner,
                                          [(rid, did, epoch) for (rid, did), epoch in held.items()],
                                          self.config.lease_seconds)
            except* OUTAGE_ERRORS as group:
                log.warning("cannot renew leases; waiting for the database", error=describe(group))
            if lost is None:
                continue
            for key, epoch in held.items():
                mine = self._driving.get(key)
                if mine is None or mine.epoch != epoch:
                    continue
                if key in lost:
                    log.warning("lease lost to another coordinator; no longer driving the device",
                                request_id=key[0], device_id=key[1])
                    mine.scope.cancel()
                else:
                    mine.confirmed_at = max(mine.confirmed_at, asked_at)
            self._renewed.set()
            self._renewed = trio.Event()

    async def _while_leased(self, key: Key) -> None:
        """Return once the lease is known to be ours recently enough to start device work on it."""
        mine = self._driving[key]
        limit = self.config.lease_seconds * SAFE_SHARE
        if trio.current_time() - mine.confirmed_at > limit:
            log.info("lease not confirmed lately; device work waits for the heartbeat",
                     request_id=key[0], device_id=key[1])
            while trio.current_time() - mine.confirmed_at > limit:
                await self._renewed.wait()

    def _confirmed(self, key: Key, at: float) -> None:
        mine = self._driving.get(key)
        if mine is not None:
            mine.confirmed_at = max(mine.confirmed_at, at)

    def _limiter(self, table: dict[str, trio.CapacityLimiter], key: str, size: int) -> trio.CapacityLimiter:
        limiter = table.get(key)
        if limiter is None:
            limiter = table[key] = trio.CapacityLimiter(size)
        return limiter

    async def drive(self, work: repo.Work) -> None:
        """Take one device from its persisted step to an outcome (unless its lease is lost)."""
        key = (work.request_id, work.device_id)
        # started by `start`, or driven directly by a caller that claimed it (tests, tools)
        scope = self._driving.setdefault(key, _Held(work.lease_epoch, trio.CancelScope(), trio.current_time())).scope
        try:
            with scope:
                await self._drive_within_limits(work)
        except repo.LeaseLost:
            log.warning("lease lost to another coordinator; stopped driving the device",
                        request_id=work.request_id, device_id=work.device_id)
        finally:
            self._driving.pop(key, None)

    async def _drive_within_limits(self, work: repo.Work) -> None:
        async with (self._slots,
                    self._limiter(self._gateways, work.gateway_id or "", self.config.per_gateway),
                    self._limiter(self._branches, work.branch_id, self.config.per_branch)):
            parent = telemetry.extract({"traceparent": work.traceparent} if work.traceparent else {})
            with telemetry.tracer(SERVICE).start_as_current_span(
                f"clear device {work.device_id}", context=parent, kind=SpanKind.INTERNAL,
                attributes={"clearcard.request_id": work.request_id,
                            "clearcard.device_id": work.device_id},
            ), structlog.contextvars.bound_contextvars(request_id=work.request_id,
                                                       device_id=work.device_id):
                await self._drive(work)

    async def _drive(self, work: repo.Work) -> None:
        if not work.in_service:  # retired after the request was accepted
            await self._finish(work, Outcome.FAILED, Error.of(
                ErrorCode.UNKNOWN_DEVICE, f"Device {work.device_id} was retired before its clear ran."))
            return
        state = dict(work.state)
        step: Step | None = next_step(Step(work.step))
        cancelled = work.cancelled
        begun = work.writeback_started  # the write-back intent is on record
        waits = DEFAULT_BACKOFF.delays()
        try:
            while step is not None:
                before = gate(step, cancelled=cancelled, writeback_begun=begun)
                if before is Gate.BEGIN_WRITEBACK:
                    if not await until_available("begin write-back", self._db.run, repo.begin_writeback, work):
                        await self._finish(work, Outcome.SKIPPED, None)
                        return
                    begun = True
                elif before is Gate.SKIP:
                    await self._finish(work, Outcome.SKIPPED, None)
                    return
                await self._while_leased((work.request_id, work.device_id))
                try:
                    result = await self._step(step, work, state)
                except OUTAGE_ERRORS as exc:  # the broker, or a service's database: run the step again
                    log.warning("step interrupted by an outage; trying again", step=step.value, error=describe(exc))
                    await trio.sleep(next(waits))
                    continue
                waits = DEFAULT_BACKOFF.delays()
                done = [(step, result)]
                step, state = await self._answered_ahead(next_step(step), work, result.state, done)
                # the write-back intent commits with the saves before it when the write-back is next
                begin = step is not None and gate(step, cancelled=cancelled,
                                                  writeback_begun=begun) is Gate.BEGIN_WRITEBACK
                cancelled, began = await until_available("save a step", self._save, work, done, begin)
                if begin and not began:
                    await self._finish(work, Outcome.SKIPPED, None)
                    return
                begun = begun or began
        except repo.LeaseLost:
            raise  # another coordinator drives the device now: nothing more is written here
        except DeviceAlreadyCleared:
            await self._finish(work, Outcome.ALREADY_CLEARED, None)
        except ClearCardError as exc:
            log.info("device clear failed", code=exc.code, message=exc.message)
            await self._finish(work, Outcome.FAILED, Error.of(exc.code, exc.message), step)
        except trio.Cancelled:
            raise  # the lease expires and a coordinator resumes at the persisted step
        except Exception as exc:
            log.exception("device clear crashed", error=repr(exc))
            await self._finish(work, Outcome.FAILED, Error.of(ErrorCode.INTERNAL), step)
        else:
            await self._finish(work, Outcome.CLEARED, None)

    async def _step(self, step: Step, work: repo.Work, state: dict[str, Any]) -> Any:
        """One step's effect, timed (`clearcard_step_duration_seconds`) however it ends."""
        started = time.perf_counter()
        try:
            return await STEP_EFFECTS[step](self._ports, work, state)
        finally:
            metrics.STEP_DURATION.labels(step.value).observe(time.perf_counter() - started)

    async def _answered_ahead(self, step: Step | None, work: repo.Work, state: dict[str, Any],
                              done: list[tuple[Step, StepResult]]) -> tuple[Step | None, dict[str, Any]]:
        """Run the next steps whose answer an earlier command already brought (no I/O), so they
        are saved in the same transaction; returns the first step still to run, and the state."""
        while step is not None and answered_ahead(step, state):
            try:
                result = await self._step(step, work, state)
            except ClearCardError:
                break  # saved up to here; the step runs again on its own and fails there
            done.append((step, result))
            step, state = next_step(step), result.state
        return step, state

    async def _save(self, work: repo.Work, done: list[tuple[Step, StepResult]], begin: bool) -> tuple[bool, bool]:
        """Persist finished steps (with their events and audit records) in one transaction, and
        with `begin` the write-back intent; returns (cancelled meanwhile, write-back begun)."""
        async def unit(conn: asyncpg.Connection) -> tuple[bool, bool]:
            cancelled = False
            for step, result in done:
                state = persisted(result.state)
                cancelled = await repo.save_step(conn, work, step.value, state, result.backup_id,
                                                 self.config.lease_seconds)
                if step is Step.DECLARATION_CHECKED:
                    await bureau_view.record_state(conn, work.device_id, work.period, state)
                await outbox.stage(conn, work.request_id, progress_messages(work, step))
            began = begin and await repo.begin_writeback(conn, work)
            return cancelled, began

        asked_at = trio.current_time()
        saved: tuple[bool, bool] = await self._db.run(unit)
        self._confirmed((work.request_id, work.device_id), asked_at)  # saving extended the lease
        self._on_staged()
        return saved

    async def _finish(self, work: repo.Work, outcome: Outcome, error: Error | None,
                      step: Step | None = None) -> None:
        device_audit = outbox.audit(
            service=SERVICE, subject=work.subject, action="device.finished",
            record_id=f"device:{work.request_id}:{work.device_id}", trace_id=work.trace_id,
            request_id=work.request_id, device_id=work.device_id, branch_id=work.branch_id,
            outcome=outcome.value, error_code=error.code if error else None,
            detail={"failed_at": step.value} if error and step else {})

        async def unit(conn: asyncpg.Connection) -> bool:
            recorded, rows = await repo.finish_device(conn, work, outcome.value, error.code if error else None,
                                                      error.message if error else None)
            await bureau_view.record_refusal(conn, work.device_id, work.period, error.code if error else None)
            if rows is None:
                await outbox.stage(conn, work.request_id, [device_audit])
                return recorded
            event = finished_event(work.request_id, work.trace_id, rows, branch_id=work.branch_id, period=work.period)
            await repo.mark_finished(conn, work.request_id, event.model_dump(mode="json"))
            request = await repo.find_request(conn, work.request_id)
            assert request is not None
            await outbox.stage(conn, work.request_id, [
                device_audit,
                outbox.audit(service=SERVICE, subject=work.subject, action="clear.finished",
                             record_id=f"finished:{work.request_id}", trace_id=work.trace_id,
                             request_id=work.request_id, branch_id=work.branch_id,
                             outcome=event.status.value),
                *outbox.event(event, message_id=f"event:clear.finished:{work.request_id}", reply_to=request["reply_to"],
                              correlation_id=request["correlation_id"]),
            ])
            return recorded

        if await until_available("record an outcome", self._db.run, unit):
            metrics.DEVICE_CLEARS.labels(outcome.value, error.code if error else "").inc()
            metrics.flushed_soon()
        self._on_staged()
        self.poke()  # a clear of the same device may be waiting for this one


def progress_messages(work: repo.Work, step: Step) -> list[OutgoingMessage]:
    """A step's `clear.progress` event and audit record, with ids stable across resumptions."""
    key = f"{work.request_id}:{work.device_id}:{step.value}"
    return [
        *outbox.event(ClearProgress(request_id=work.request_id, trace_id=work.trace_id,
                                    device_id=work.device_id, step=step, percent=step_percent(step)),
                      message_id=f"event:progress:{key}"),
        outbox.audit(service=SERVICE, subject=work.subject, action=f"step.{step.value}",
                     record_id=f"step:{key}", trace_id=work.trace_id, request_id=work.request_id,
                     device_id=work.device_id, branch_id=work.branch_id, outcome="done"),
    ]


def finished_event(request_id: str, trace_id: str, rows: list[Any], *, branch_id: str | None = None,
                   period: str | None = None) -> ClearFinished:
    """The `clear.finished` event from every device's outcome."""
    results = [
        DeviceResult(
            device_id=r["device_id"], outcome=Outcome(r["outcome"]),
            error=Error(code=r["error_code"], message=r["error_message"] or "")
            if r["error_code"] else None,
            backup_id=r["backup_id"],
        )
        for r in rows
    ]
    return ClearFinished(request_id=request_id, trace_id=trace_id, branch_id=branch_id, period=period,
                         status=overall_status(results), results=results)
