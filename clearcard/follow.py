"""Submitting a clear request and following its events to the end (CLI and demo)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from shared.bus.api import Bus, Delivery
from shared.bus.topology import CLEAR_REQUEST, COMMANDS, EVENTS
from shared.messages.clear import ClearRequest
from shared.messages.codec import encode

FINAL = {"clear.finished", "clear.rejected", "clear.preview"}


@dataclass
class Followed:
    """Every event of one request, in arrival order; `final` is the last one."""

    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        return self.events[-1]


def new_request_id() -> str:
    return f"cli-{uuid.uuid4().hex[:16]}"


async def submit_and_follow(
    bus: Bus, request: ClearRequest, token: str, *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> Followed:
    """Publish `request` with `token` and collect its events until the final one."""
    queue = await bus.declare_reply_queue()
    await bus.bind(queue, EVENTS, "clear.*")
    followed = Followed()
    done = trio.Event()

    async def on_delivery(delivery: Delivery) -> None:
        try:
            event = json.loads(delivery.body)
        except ValueError:
            return
        if event.get("request_id") != request.request_id or done.is_set():
            return
        followed.events.append(event)
        if on_event:
            on_event(event)
        if event.get("event") in FINAL:
            done.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: bus.consume(queue, on_delivery, prefetch=1,
                                                            task_status=task_status))
        await bus.publish(COMMANDS, CLEAR_REQUEST, encode(request), message_id=request.request_id,
                          headers={"authorization": f"Bearer {token}"})
        await done.wait()
        nursery.cancel_scope.cancel()
    return followed
