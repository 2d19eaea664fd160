"""Drives claimed device clears step by step, persisting each step before the next.

Work is leased in PostgreSQL: a coordinator that dies leaves leases that expire, and any
replica then resumes those devices at their last persisted step.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import structlog
import trio
from opentelemetry.trace import SpanKind

from services.coordinator import repository as repo
from services.coordinator.machine import next_step
from services.coordinator.ports import Ports
from services.coordinator.steps import STEP_EFFECTS, DeviceAlreadyCleared
from shared import audit, telemetry
from shared.bus.api import Bus
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.events import publish_event
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

SERVICE = "coordinator"
log = structlog.get_logger("clearcard.coordinator")


class Runner:
    """Runs device clears with bounded concurrency; one instance per coordinator process."""

    def __init__(self, bus: Bus, db: Database, ports: Ports, *, max_in_flight: int = 1000,
                 poll_interval: float = 1.0) -> None:
        self.owner = f"coordinator-{uuid.uuid4().hex[:12]}"
        self._bus = bus
        self._db = db
        self._ports = ports
        self._slots = trio.CapacityLimiter(max_in_flight)
        self._poll_interval = poll_interval
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Claim and drive work until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._renew_leases)
            task_status.started()
            while True:
                free = int(self._slots.total_tokens - self._slots.borrowed_tokens)
                if free > 0:
                    for work in await self._db.run(repo.claim_work, self.owner, free):
                        nursery.start_soon(self.drive, work)
                with trio.move_on_after(self._poll_interval):
                    await self._wake.wait()
                self._wake = trio.Event()

    def start(self, works: list[repo.Work]) -> None:
        """Drive work this process has just leased (a freshly accepted request)."""
        assert self._nursery is not None, "runner not started"
        for work in works:
            self._nursery.start_soon(self.drive, work)

    async def _renew_leases(self) -> None:
        while True:
            await trio.sleep(repo.LEASE_SECONDS / 4)
            await self._db.run(repo.renew_leases, self.owner)

    async def drive(self, work: repo.Work) -> None:
        """Take one device from its persisted step to an outcome."""
        async with self._slots:
            parent = telemetry.extract({"traceparent": work.traceparent} if work.traceparent else {})
            tracer = telemetry.tracer(SERVICE)
            with tracer.start_as_current_span(
                f"clear device {work.device_id}", context=parent, kind=SpanKind.INTERNAL,
                attributes={"clearcard.request_id": work.request_id,
                            "clearcard.device_id": work.device_id},
            ), structlog.contextvars.bound_contextvars(request_id=work.request_id,
                                                       device_id=work.device_id):
                await self._drive(work)

    async def _drive(self, work: repo.Work) -> None:
        state = dict(work.state)
        step: Step | None = next_step(Step(work.step))
        try:
            while step is not None:
                result = await STEP_EFFECTS[step](self._ports, work, state)
                state = result.state
                await self._db.run(repo.save_step, work, step.value, state, result.backup_id)
                await self._progress(work, step)
                step = next_step(step)
        except DeviceAlreadyCleared:
            await self._finish(work, Outcome.ALREADY_CLEARED, None)
        except ClearCardError as exc:
            log.info("device clear failed", code=exc.code, message=exc.message)
            await self._finish(work, Outcome.FAILED, Error.of(exc.code, exc.message), step)
        except (trio.Cancelled, asyncpg.PostgresConnectionError, OSError):
            raise  # the lease expires and a coordinator resumes at the persisted step
        except Exception as exc:
            log.exception("device clear crashed", error=repr(exc))
            await self._finish(work, Outcome.FAILED, Error.of(ErrorCode.INTERNAL), step)
        else:
            await self._finish(work, Outcome.CLEARED, None)

    async def _progress(self, work: repo.Work, step: Step) -> None:
        await publish_event(self._bus, ClearProgress(
            request_id=work.request_id, trace_id=work.trace_id, device_id=work.device_id,
            step=step, percent=step_percent(step)))
        await audit.record(
            self._bus, service=SERVICE, subject=work.subject, action=f"step.{step.value}",
            record_id=f"step:{work.request_id}:{work.device_id}:{step.value}",
            request_id=work.request_id, device_id=work.device_id, branch_id=work.branch_id,
            outcome="done")

    async def _finish(self, work: repo.Work, outcome: Outcome, error: Error | None,
                      step: Step | None = None) -> None:
        await audit.record(
            self._bus, service=SERVICE, subject=work.subject, action="device.finished",
            record_id=f"device:{work.request_id}:{work.device_id}",
            request_id=work.request_id, device_id=work.device_id, branch_id=work.branch_id,
            outcome=outcome.value, error_code=error.code if error else None,
            detail={"failed_at": step.value} if error and step else {},
        )

        async def unit(conn: asyncpg.Connection) -> tuple[ClearFinished, Any] | None:
            rows = await repo.finish_device(conn, work, outcome.value,
                                            error.code if error else None,
                                            error.message if error else None)
            if rows is None:
                return None
            event = finished_event(work.request_id, work.trace_id, rows)
            await repo.mark_finished(conn, work.request_id, event.model_dump(mode="json"))
            request = await repo.find_request(conn, work.request_id)
            return event, request

        done = await self._db.run(unit)
        if done is None:
            return
        event, request = done
        await audit.record(
            self._bus, service=SERVICE, subject=work.subject, action="clear.finished",
            record_id=f"finished:{work.request_id}", request_id=work.request_id,
            branch_id=work.branch_id, outcome=event.status.value)
        await publish_event(self._bus, event, reply_to=request["reply_to"],
                            correlation_id=request["correlation_id"])


def finished_event(request_id: str, trace_id: str, rows: list[Any]) -> ClearFinished:
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
    return ClearFinished(request_id=request_id, trace_id=trace_id,
                         status=overall_status(results), results=results)
