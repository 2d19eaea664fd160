"""The auth service: first stop of every clear request.

It decides each request (token, role, branch scope), publishes `clear.rejected` for a refusal
and forwards an allowed request to the coordinator as `clear.authorized`. The coordinator checks
the token again itself: nothing trusts the network.
"""

from __future__ import annotations

import re
from typing import Any

import trio

from services.auth.auditing import BusAudit
from services.auth.login_rpc import login_operation
from shared import audit, telemetry
from shared.authz import Authorizer, KeyRing
from shared.bus.api import Bus, Delivery, Reject
from shared.bus.middleware import traced, with_last_words
from shared.bus.rpc import rpc_server
from shared.bus.topology import AUTH_COMMANDS, AUTH_REQUESTS, CLEAR_AUTHORIZED, COMMANDS, topology_for
from shared.config import Settings
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.events import publish_event, reject_given_up
from shared.messages.clear import ClearRejected, ClearRequest, Error
from shared.messages.codec import DecodeError, decode

SERVICE = "auth"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def forwarded_headers(delivery: Delivery) -> dict[str, Any]:
    """The request's own headers worth passing on (the trace context is injected anew)."""
    return {k: v for k, v in delivery.headers.items() if k == "authorization"}


async def reject(bus: Bus, delivery: Delivery, request_id: str, error: Error, subject: str,
                 branch_id: str | None = None) -> None:
    """Tell the requester (event and reply_to) and the audit log why a request was refused."""
    event = ClearRejected(request_id=request_id, trace_id=telemetry.current_trace_id(), error=error)
    await audit.record(
        bus, service=SERVICE, subject=subject, action="clear.rejected", request_id=request_id,
        branch_id=branch_id, outcome="rejected", error_code=error.code,
        record_id=f"rejected:{request_id}:{delivery.message_id or ''}:{error.code}",
        detail={"message": error.message},
    )
    await publish_event(bus, event, reply_to=delivery.reply_to, correlation_id=delivery.correlation_id)


async def handle_request(bus: Bus, authorizer: Authorizer, delivery: Delivery) -> None:
    """Decide one clear request (token, revocations, role, branch, second factor)."""
    try:
        request = decode(ClearRequest, delivery.body)
    except DecodeError as exc:
        request_id = exc.request_id or (
            delivery.message_id if delivery.message_id and _REQUEST_ID.match(delivery.message_id) else None
        )
        if request_id is None:
            await audit.record(bus, service=SERVICE, subject="unknown", action="clear.rejected",
                               outcome="dead_lettered", error_code=ErrorCode.INVALID_REQUEST,
                               detail={"reason": exc.reason[:500]})
            raise Reject(f"unreadable clear request: {exc.reason}") from None
        await reject(bus, delivery, request_id, Error.of(ErrorCode.INVALID_REQUEST, exc.reason[:500]),
                     "unknown")
        return
    try:
        principal = await authorizer.decide_request(delivery.headers, request)
    except ClearCardError as exc:
        await reject(bus, delivery, request.request_id, Error.of(exc.code, exc.message),
                     authorizer.subject_of(delivery.headers), request.branch_id)
        return
    await audit.record(
        bus, service=SERVICE, subject=principal.subject, action="clear.authorized",
        request_id=request.request_id, branch_id=request.branch_id, outcome="allowed",
        record_id=f"authorized:{request.request_id}:{delivery.message_id or ''}",
        detail={"role": principal.role, "mode": request.mode, "preview": request.preview,
                "token_id": principal.token_id, "mfa": principal.mfa},
    )
    await bus.publish(
        COMMANDS, CLEAR_AUTHORIZED, delivery.body, message_id=request.request_id,
        correlation_id=delivery.correlation_id, reply_to=delivery.reply_to,
        headers=forwarded_headers(delivery),
    )


async def run_auth(bus: Bus, db: Database, settings: Settings, *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the auth queues (clear requests, and RPC commands such as `auth.login`) until cancelled."""
    keys = KeyRing(settings.keys_dir)
    keys.signing_key()  # make sure a key pair exists before the first request
    authorizer = Authorizer(keys, db)
    await bus.declare(topology_for(AUTH_REQUESTS, AUTH_COMMANDS))

    async def handler(delivery: Delivery) -> None:
        await handle_request(bus, authorizer, delivery)

    async def last_words(delivery: Delivery, exc: BaseException) -> None:
        await reject_given_up(bus, SERVICE, delivery, exc)

    commands = rpc_server(bus, {"login": login_operation(db, keys, BusAudit(bus))})
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: bus.consume(
            AUTH_COMMANDS.name, traced(SERVICE, AUTH_COMMANDS.name, commands), prefetch=16,
            task_status=task_status))
        await nursery.start(lambda task_status: bus.consume(
            AUTH_REQUESTS.name, traced(SERVICE, AUTH_REQUESTS.name, with_last_words(handler, last_words)),
            prefetch=64, task_status=task_status))
        task_status.started()
