"""Taking in authorized clear requests: idempotent by request id, previews, confirmations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from device_registry import store as registry_store
from device_registry.registry import unknown_words
from services.coordinator import outbox
from services.coordinator import repository as repo
from services.coordinator.plan import build_plan, confirmation
from services.coordinator.ports import Ports
from services.coordinator.runner import Runner
from shared import telemetry
from shared.authz import Authorizer, Principal
from shared.bus.api import Bus, Delivery
from shared.db import Database
from shared.db.pool import Connection
from shared.errors import ClearCardError, ErrorCode
from shared.events import publish_event
from shared.messages.clear import (
    ClearAccepted,
    ClearFinished,
    ClearPreview,
    ClearProgress,
    ClearRejected,
    ClearRequest,
    Error,
    Event,
    Step,
    step_percent,
)
from shared.messages.codec import decode

SERVICE = "coordinator"
log = structlog.get_logger("clearcard.coordinator")

_REPLAYABLE: dict[str, type[Event]] = {
    "clear.finished": ClearFinished, "clear.rejected": ClearRejected, "clear.preview": ClearPreview,
}


@dataclass(frozen=True)
class Intake:
    bus: Bus
    db: Database
    authorizer: Authorizer
    ports: Ports
    runner: Runner
    on_staged: Callable[[], None] = lambda: None

    async def handle(self, delivery: Delivery) -> None:
        """Handle one `clear.authorized` message (a DecodeError dead-letters it)."""
        request = decode(ClearRequest, delivery.body)
        try:
            # nothing trusts the network: the token is checked again, revocations included
            principal = await self.authorizer.decide_request(delivery.headers, request)
        except ClearCardError as exc:
            await self._answer(delivery, request, self.authorizer.subject_of(delivery.headers), ClearRejected(
                request_id=request.request_id, trace_id=telemetry.current_trace_id(),
                error=Error.of(exc.code, exc.message)))
            return
        existing = await self.db.run(repo.find_request, request.request_id)
        if existing is not None:
            await self._replay(delivery, existing)
            return
        try:
            await self._take(delivery, request, principal)
        except ClearCardError as exc:
            await self._answer(delivery, request, principal.subject, ClearRejected(
                request_id=request.request_id, trace_id=telemetry.current_trace_id(),
                error=Error.of(exc.code, exc.message)))

    async def _replay(self, delivery: Delivery, existing: object) -> None:
        """A request id is processed once; a finished one has its final event published again."""
        row = dict(existing)  # type: ignore[call-overload]
        if row["status"] != "finished" or not row["finished_event"]:
            log.info("duplicate request ignored while running", request_id=row["request_id"])
            return
        raw = row["finished_event"]
        event_json = raw if isinstance(raw, str) else str(raw)
        model = _REPLAYABLE[decode_event_name(event_json)]
        event = model.model_validate_json(event_json)
        await publish_event(self.bus, event, reply_to=delivery.reply_to or row["reply_to"],
                            correlation_id=delivery.correlation_id or row["correlation_id"])

    async def _take(self, delivery: Delivery, request: ClearRequest, principal: Principal) -> None:
        devices = await self.db.run(repo.branch_devices, request.branch_id)
        if not devices:
            raise ClearCardError(ErrorCode.UNKNOWN_BRANCH,
                                 f"No devices are registered for branch {request.branch_id}.")
        if request.device_ids:
            known = {d.device_id for d in devices}
            unknown = sorted(set(request.device_ids) - known)
            if unknown:
                words = [await self.db.run(_why_unknown, d, request.branch_id) for d in unknown[:3]]
                more = f" (and {len(unknown) - 3} more: {', '.join(unknown[3:10])})" if len(unknown) > 3 else ""
                raise ClearCardError(ErrorCode.UNKNOWN_DEVICE, " ".join(words) + more)
            devices = [d for d in devices if d.device_id in set(request.device_ids)]
        trace_id = telemetry.current_trace_id()
        if request.preview or request.mode == "manual":
            plan = await build_plan(self.ports, devices, request)
            value = confirmation(request, plan)
            if request.preview:
                await self._answer(delivery, request, principal.subject, ClearPreview(
                    request_id=request.request_id, trace_id=trace_id, plan=plan, confirmation=value))
                return
            if not request.confirm:
                raise ClearCardError(ErrorCode.CONFIRMATION_REQUIRED)
            if request.confirm != value:
                raise ClearCardError(ErrorCode.PLAN_CHANGED)
        carrier: dict[str, str] = {}
        telemetry.inject(carrier)
        device_ids = [d.device_id for d in devices]
        config = self.runner.config

        async def unit(conn: Connection) -> list[repo.Work] | None:
            accepted = await accept(
                conn, request=request, subject=principal.subject, trace_id=trace_id,
                traceparent=carrier.get("traceparent"), reply_to=delivery.reply_to,
                correlation_id=delivery.correlation_id, device_ids=device_ids,
                owner=self.runner.owner, lease=config.lease_seconds)
            if not accepted:
                return None  # a racing duplicate got there first
            return await repo.leased_work(conn, request.request_id, self.runner.owner)

        works = await self.db.run(unit)
        self.on_staged()
        if works:
            self.runner.start(works)

    async def _answer(self, delivery: Delivery, request: ClearRequest, subject: str, event: Event) -> None:
        """Answer at once (preview or refusal), remembered so a repeat gets the same answer."""
        error = getattr(event, "error", None)
        messages = [
            outbox.audit(service=SERVICE, subject=subject, action=event.event,
                         record_id=f"{event.event}:{request.request_id}", trace_id=event.trace_id,
                         request_id=request.request_id, branch_id=request.branch_id,
                         outcome="rejected" if error else "answered",
                         error_code=error.code if error else None),
            *outbox.event(event, message_id=f"event:{event.event}:{request.request_id}",
                          reply_to=delivery.reply_to, correlation_id=delivery.correlation_id),
        ]

        async def unit(conn: Connection) -> bool:
            first = await repo.record_finished_answer(
                conn, request.request_id, request.branch_id, request.period, request.mode, subject,
                event.trace_id, event.model_dump(mode="json"))
            if first:
                await outbox.stage(conn, request.request_id, messages)
            return first

        if await self.db.run(unit):
            self.on_staged()
        else:  # a racing duplicate answered first: answer this one like a replay
            existing = await self.db.run(repo.find_request, request.request_id)
            if existing is not None:
                await self._replay(delivery, existing)


async def accept(
    conn: Connection, *, request: ClearRequest, subject: str, trace_id: str, traceparent: str | None,
    reply_to: str | None, correlation_id: str | None, device_ids: list[str], owner: str | None,
    lease: float, fleet_id: str | None = None,
) -> bool:
    """Persist an accepted request with its `clear.accepted`, `authorized` events and audit record."""
    accepted = await repo.accept_request(
        conn, request_id=request.request_id, branch_id=request.branch_id, period=request.period,
        mode=request.mode, invoice_types=list(request.invoice_types), subject=subject,
        trace_id=trace_id, traceparent=traceparent, reply_to=reply_to, correlation_id=correlation_id,
        device_ids=device_ids, owner=owner, lease=lease, fleet_id=fleet_id)
    if not accepted:
        return False
    rid = request.request_id
    messages = [
        outbox.audit(service=SERVICE, subject=subject, action="clear.accepted", record_id=f"accepted:{rid}",
                     trace_id=trace_id, request_id=rid, branch_id=request.branch_id, outcome="accepted",
                     detail={"devices": device_ids, "period": request.period, "mode": request.mode,
                             **({"fleet_id": fleet_id} if fleet_id else {})}),
        *outbox.event(ClearAccepted(request_id=rid, trace_id=trace_id, devices=device_ids),
                      message_id=f"event:clear.accepted:{rid}"),
    ]
    for device_id in device_ids:
        messages += outbox.event(ClearProgress(
            request_id=rid, trace_id=trace_id, device_id=device_id, step=Step.AUTHORIZED,
            percent=step_percent(Step.AUTHORIZED)), message_id=f"event:progress:{rid}:{device_id}:authorized")
    await outbox.stage(conn, rid, messages)
    return True


def decode_event_name(event_json: str) -> str:
    import json

    name = json.loads(event_json).get("event", "")
    return name if name in _REPLAYABLE else "clear.finished"


async def _why_unknown(conn: Connection, device_id: str, branch_id: str) -> str:
    """Plain words for a named device the branch does not drive (retired, not enrolled, elsewhere)."""
    found = await registry_store.standing(conn, device_id)
    if found.enrolled and found.retired_at is None:
        return f"Device {device_id} is not a device of branch {branch_id}."
    return unknown_words(device_id, found)
