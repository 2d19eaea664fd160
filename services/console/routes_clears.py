"""Clears over HTTP: submit, preview, confirm, follow live (server-sent events) and the timeline.

A request is published exactly as `clearcard clear` publishes it (clearcard/follow.py): to
exchange `clearcard`, routing key `clear.request`, with the caller's own bearer token, so the
auth service makes the same decision it makes for the CLI. The console checks the same decision
first only to answer 403 at once instead of through a `clear.rejected` event.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

import trio
from fastapi import APIRouter, Depends, Path, Query
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field, StrictBool
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.console import fleet
from services.console.asking import audit_records
from services.console.context import ConsoleContext, context
from services.console.events import EventHub, is_final
from services.console.security import Can, bearer_scheme, check_branch, require
from services.console.spec import ID_PATTERN, NOT_FOUND, SSE_EVENT_SCHEMA, NotFound, responses
from shared import metrics
from shared.authz import Principal, action_of, permit
from shared.bus.topology import CLEAR_REQUEST, COMMANDS
from shared.messages.audit import AuditQuery
from shared.messages.base import BranchId, DeviceId, InvoiceType, Period, RequestId
from shared.messages.clear import ClearRequest
from shared.messages.codec import encode

router = APIRouter(prefix="/api/clears", tags=["clears"], responses=responses())
KEEPALIVE_SECONDS = 15.0


class ClearSubmission(BaseModel):
    """A clear request as contract §3 defines it; the request id is generated when omitted."""

    request_id: RequestId | None = None
    branch_id: BranchId
    device_ids: list[DeviceId] = Field(default_factory=list, max_length=10_000)
    period: Period
    invoice_types: list[InvoiceType] = Field(default_factory=list, max_length=6)
    mode: Literal["auto", "manual"] = "auto"
    preview: StrictBool = False
    confirm: str | None = Field(default=None, max_length=128)


def new_request_id() -> str:
    return f"web-{uuid.uuid4().hex[:16]}"


@router.post("", status_code=202, summary="Submit a clear, a preview, or a confirmed manual clear")
async def submit(
    body: ClearSubmission,
    wait: bool = Query(False, description="wait for the final event (clear.preview, clear.rejected or "
                       "clear.finished) and return it in `final` (null if it did not come within `wait_seconds`: "
                       "the request goes on; follow it at `events`)"),
    wait_seconds: float = Query(30.0, gt=0, le=120, description="how long to wait when `wait` is set"),
    ctx: ConsoleContext = Depends(context),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    who: Principal = Depends(require(Can.FOLLOW)),
) -> dict[str, Any]:
    request = ClearRequest.model_validate({**body.model_dump(), "request_id": body.request_id or new_request_id()})
    assert credentials is not None  # `require` verified it
    headers = {"authorization": f"Bearer {credentials.credentials}"}
    permit(who, action_of(request), request.branch_id)  # the auth service's own decision, answered here at once
    ctx.hub.note_branch(request.request_id, request.branch_id)
    metrics.CLEAR_REQUESTS_SUBMITTED.labels(request.mode, str(request.preview).lower()).inc()
    with ctx.hub.subscribe(request.request_id) as (_, events):
        await ctx.bus.publish(COMMANDS, CLEAR_REQUEST, encode(request), message_id=request.request_id,
                              headers=headers)
        final = None
        if wait:
            with trio.move_on_after(wait_seconds):
                async for event in events:
                    if is_final(event):
                        final = event
                        break
    return {"request_id": request.request_id, "events": f"/api/clears/{request.request_id}/events",
            "final": final}


async def _visible_request(ctx: ConsoleContext, who: Principal, request_id: str) -> dict[str, Any] | None:
    """The request's row (None if not stored, e.g. rejected), after checking the caller may see it."""
    row = await ctx.db.run(fleet.request_row, request_id)
    branch = row["branch_id"] if row else ctx.hub.branch_of(request_id)
    if branch is None:
        check_branch(who, "*")  # unknown branch: only an every-branch token may look
    else:
        check_branch(who, branch)
    return row


@router.get("/{request_id}", summary="A clear request: devices' steps and outcomes, and its events so far",
            responses=NOT_FOUND)
async def request_status(request_id: str = Path(pattern=ID_PATTERN), ctx: ConsoleContext = Depends(context),
                         who: Principal = Depends(require(Can.FOLLOW))) -> dict[str, Any]:
    row = await _visible_request(ctx, who, request_id)
    events = ctx.hub.events_of(request_id)
    if row is None and not events:
        raise NotFound(f"No clear request {request_id} is known.")
    return {"request_id": request_id, "request": row, "events": events}


@router.get("/{request_id}/timeline", summary="Per device, each step with its time and duration",
            responses=NOT_FOUND)
async def timeline(request_id: str = Path(pattern=ID_PATTERN), ctx: ConsoleContext = Depends(context),
                   who: Principal = Depends(require(Can.FOLLOW))) -> dict[str, Any]:
    row = await _visible_request(ctx, who, request_id)
    if row is None:
        raise NotFound(f"No clear request {request_id} is stored.")
    records = await audit_records(ctx, AuditQuery(request_id=request_id), limit=1000)
    return {"request": row, "devices": fleet.timeline(row, records)}


@router.get("/{request_id}/events", summary="Live events of a request (text/event-stream)",
            response_class=Response, responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}},
                                                **NOT_FOUND})
async def events(request_id: str = Path(pattern=ID_PATTERN), ctx: ConsoleContext = Depends(context),
                 who: Principal = Depends(require(Can.FOLLOW))) -> Response:
    row = await _visible_request(ctx, who, request_id)
    if row is None and not ctx.hub.events_of(request_id) and ctx.hub.branch_of(request_id) is None:
        raise NotFound(f"No clear request {request_id} is known.")  # nothing would ever arrive
    stored = row["finished_event"] if row else None
    return EventStream(ctx.hub, request_id, stored)


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event.get('event', 'message')}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


class EventStream(Response):
    """Server-sent events of one request: every event seen so far, then live ones, until the final one."""

    media_type = "text/event-stream"

    def __init__(self, hub: EventHub, request_id: str, stored_final: dict[str, Any] | None) -> None:
        # not Response.__init__: it would declare `content-length: 0`
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                            (b"x-accel-buffering", b"no")]
        self.hub, self.request_id, self.stored_final = hub, request_id, stored_final

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            await self._stream(send)
            nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send) -> None:
        with self.hub.subscribe(self.request_id) as (past, live):
            if not past and self.stored_final is not None:
                past = [self.stored_final]  # finished before this console saw it
            for event in past:
                await send({"type": "http.response.body", "body": _sse(event), "more_body": True})
                if is_final(event):
                    return
            while True:
                with trio.move_on_after(KEEPALIVE_SECONDS) as idle:
                    try:
                        event = await live.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        return  # dropped as too slow: the browser reconnects and replays
                if idle.cancelled_caught:
                    await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
                    continue
                await send({"type": "http.response.body", "body": _sse(event), "more_body": True})
                if is_final(event):
                    return


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


__all__ = ["ClearSubmission", "EventStream", "router"]
