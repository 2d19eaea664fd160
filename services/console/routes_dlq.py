"""Dead-lettered messages for admins: the same as `clearcard dlq list / show / replay`, audited."""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from services.console.context import ConsoleContext, context
from services.console.security import Can, require
from services.console.spec import responses
from shared import audit
from shared.authz import Principal
from shared.authz.identity import IdentifiedBus
from shared.authz.vouchers import vouch
from shared.bus import dead_letters
from shared.errors import ClearCardError, ErrorCode

router = APIRouter(prefix="/api/admin/dead-letters", tags=["administration"], responses=responses())


class Replay(BaseModel):
    message_ids: list[str] | None = Field(default=None, max_length=1000,
                                          description="the messages to replay; omitted: every one (up to `limit`)")
    limit: int = Field(default=1000, ge=1, le=10_000)


def _tools(ctx: ConsoleContext) -> dead_letters.DeadLetterBus:
    if not hasattr(ctx.bus, "drain"):
        raise ClearCardError(ErrorCode.INTERNAL, "This installation's message bus cannot list dead letters.")
    return cast(dead_letters.DeadLetterBus, ctx.bus)


async def _audit(ctx: ConsoleContext, who: Principal, action: str, detail: dict[str, Any]) -> None:
    await audit.record(ctx.bus, service="console", subject=who.subject, action=action, outcome="ok", detail=detail)


@router.get("", summary="Every dead-letter queue with how many messages it holds")
async def list_dead_letter_queues(ctx: ConsoleContext = Depends(context),
                                  who: Principal = Depends(require(Can.ADMIN))) -> list[dict[str, Any]]:
    gateways = [r["gateway_id"] for r in await ctx.db.fetch("SELECT DISTINCT gateway_id FROM devices_for_console")]
    found = await dead_letters.counts(_tools(ctx), gateways)
    await _audit(ctx, who, "dlq.list", {"queues": len(found), "messages": sum(q.messages for q in found)})
    return [{"queue": q.queue, "dead_letter_queue": q.dead_letter_queue, "messages": q.messages} for q in found]


@router.get("/{queue}", summary="The dead letters of a queue: origin, reason, body (secrets hidden)")
async def show_dead_letters(queue: str, limit: int = Query(20, ge=1, le=1000),
                            message_id: list[str] | None = Query(None),
                            ctx: ConsoleContext = Depends(context),
                            who: Principal = Depends(require(Can.ADMIN))) -> list[dict[str, Any]]:
    letters = await dead_letters.show(_tools(ctx), queue, limit=limit,
                                      message_ids=set(message_id) if message_id else None)
    await _audit(ctx, who, "dlq.show", {"queue": dead_letters.work_queue_of(queue),
                                        "message_ids": [x.message_id for x in letters]})
    return [letter.as_json() for letter in letters]


@router.post("/{queue}/replay", summary="Send dead letters back to their queue (same message ids)")
async def replay_dead_letters(queue: str, body: Replay, ctx: ConsoleContext = Depends(context),
                              who: Principal = Depends(require(Can.ADMIN))) -> dict[str, Any]:
    tools = _tools(ctx)
    signed = ctx.bus if isinstance(ctx.bus, IdentifiedBus) else None  # the console's own view of the bus
    # each message goes out as its sender signed it, with the console's voucher for the replay
    letters = await dead_letters.replay(
        tools, queue, replayed_by=who.subject, limit=body.limit,
        message_ids=set(body.message_ids) if body.message_ids is not None else None,
        publisher=signed.unsigned if signed else None,
        seal=(lambda q, headers: vouch(signed.identity, "replay", q, headers)) if signed else None)
    replayed = [x.message_id for x in letters]
    await _audit(ctx, who, "dlq.replay", {"queue": dead_letters.work_queue_of(queue), "message_ids": replayed})
    return {"queue": dead_letters.work_queue_of(queue), "replayed": replayed}
