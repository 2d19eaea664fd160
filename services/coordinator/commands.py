"""Internal commands: `fleet.clear` (fan out per-branch clears) and `clear.cancel` (with auth)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import structlog

from services.coordinator import fleet, outbox
from services.coordinator import repository as repo
from services.coordinator.clock import Clock, previous_period
from services.coordinator.runner import Runner
from shared import telemetry
from shared.authz import Action, Authorizer, covers, permit
from shared.bus.api import Delivery, Reject
from shared.db import Database
from shared.db.pool import claim_inbox
from shared.errors import ClearCardError, ErrorCode
from shared.messages.codec import decode
from shared.messages.fleet import (
    CLEAR_CANCEL,
    FLEET_CLEAR,
    ClearCancel,
    ClearCancelled,
    FleetAccepted,
    FleetClear,
    FleetRejected,
)

SERVICE = "coordinator"
log = structlog.get_logger("clearcard.coordinator.commands")


@dataclass(frozen=True)
class Commands:
    db: Database
    authorizer: Authorizer
    runner: Runner
    clock: Clock
    on_staged: Callable[[], None] = lambda: None

    async def handle(self, delivery: Delivery) -> None:
        """One `fleet.clear` or `clear.cancel` (undecodable ones are dead-lettered)."""
        if delivery.routing_key == FLEET_CLEAR:
            await self.fleet_clear(delivery, decode(FleetClear, delivery.body))
        elif delivery.routing_key == CLEAR_CANCEL:
            await self.cancel(delivery, decode(ClearCancel, delivery.body))
        else:
            raise Reject(f"unknown command {delivery.routing_key}")

    async def fleet_clear(self, delivery: Delivery, command: FleetClear) -> None:
        """Authorize, select the devices, and write every per-branch request in one transaction."""
        trace_id = telemetry.current_trace_id()
        wanted = [b for b in command.filters.branches if b != "*"]
        try:
            # '*' means every branch the token covers, so a branch-scoped token may ask for it
            principal = await self.authorizer.decide_branches(
                delivery.headers.get("authorization"), Action.CLEAR_AUTO, wanted)
        except ClearCardError as exc:
            await self._stage(command.fleet_id, FleetRejected(
                request_id=command.fleet_id, trace_id=trace_id, error_code=exc.code, message=exc.message),
                f"event:fleet.rejected:{command.fleet_id}")
            return
        subject = principal.subject
        everything = "*" in command.filters.branches
        now = self.clock.now()
        closed_before = previous_period(now)

        def branch_ok(branch_id: str) -> bool:
            return covers(principal.branches, branch_id)

        carrier: dict[str, str] = {}
        telemetry.inject(carrier)

        async def unit(conn: asyncpg.Connection) -> tuple[list[str] | None, int]:
            if not await claim_inbox(conn, "coordinator.fleet", delivery.message_id or command.fleet_id):
                return None, 0
            devices = await fleet.candidates(conn, None if everything else wanted)
            chosen = [d for d in devices if fleet.selected(d, command.filters, now.date(), branch_ok)]
            groups = fleet.group(chosen, command.period, closed_before)
            count = sum(len(v) for v in groups.values())
            request_ids = await fleet.fan_out(
                conn, fleet_id=command.fleet_id, subject=subject, filters=command.model_dump(mode="json"),
                groups=groups, invoice_types=list(command.filters.invoice_types), trace_id=trace_id,
                traceparent=carrier.get("traceparent"), lease=self.runner.config.lease_seconds)
            if request_ids is not None:
                await outbox.stage(conn, command.fleet_id, [
                    outbox.audit(service=SERVICE, subject=subject, action="fleet.accepted",
                                 record_id=f"fleet:{command.fleet_id}", trace_id=trace_id, outcome="accepted",
                                 detail={"requests": len(request_ids), "devices": count}),
                    *outbox.event(FleetAccepted(request_id=command.fleet_id, trace_id=trace_id,
                                                requests=request_ids, devices=count),
                                  message_id=f"event:fleet.accepted:{command.fleet_id}"),
                ])
            return request_ids, count

        request_ids, count = await self.db.run(unit)
        self.on_staged()
        self.runner.poke()
        log.info("fleet operation fanned out", fleet_id=command.fleet_id,
                 requests=len(request_ids or []), devices=count)

    async def cancel(self, delivery: Delivery, command: ClearCancel) -> None:
        """Cancel a running request: devices not yet writing back end `skipped`."""
        trace_id = telemetry.current_trace_id()
        rid = command.request_id
        try:
            principal = await self.authorizer.identify(delivery.headers.get("authorization"))
            request = await self.db.run(repo.find_request, rid)
            if request is None:
                raise ClearCardError(ErrorCode.INVALID_REQUEST, f"No request {rid}.")
            permit(principal, Action.CLEAR_CANCEL, request["branch_id"])
        except ClearCardError as exc:
            await self._stage(rid, ClearCancelled(request_id=rid, trace_id=trace_id, accepted=False,
                                                  message=f"{exc.code}: {exc.message}"),
                              f"clear.cancelled:{rid}:{delivery.message_id or 'x'}")
            return

        async def unit(conn: asyncpg.Connection) -> None:
            running, started = await repo.cancel_request(conn, rid)
            message = ("Cancelled; devices not yet written back end skipped"
                       + (f" (already writing back: {', '.join(started)})." if started else ".")
                       if running else "The request had already finished.")
            await outbox.stage(conn, rid, [
                outbox.audit(service=SERVICE, subject=principal.subject, action="clear.cancel",
                             record_id=f"cancel:{rid}:{delivery.message_id or 'x'}", trace_id=trace_id,
                             request_id=rid, branch_id=request["branch_id"],
                             outcome="cancelled" if running else "too_late"),
                *outbox.event(ClearCancelled(request_id=rid, trace_id=trace_id, accepted=running, message=message),
                              message_id=f"event:clear.cancelled:{rid}:{delivery.message_id or 'x'}"),
            ])

        await self.db.run(unit)
        self.on_staged()

    async def _stage(self, key: str, event: FleetRejected | ClearCancelled, message_id: str) -> None:
        async def unit(conn: asyncpg.Connection) -> None:
            await outbox.stage(conn, key, outbox.event(event, message_id=message_id))

        await self.db.run(unit)
        self.on_staged()
