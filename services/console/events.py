"""Following clear events for the console: one queue per console process, fanned out by request id.

The console binds one reply queue to `clearcard.events` (`clear.*`, `fleet.*`) and keeps the recent events
of each request, so a browser that opens the stream after submitting still sees every event from
`clear.accepted` on. Subscribers are memory channels; a subscriber that cannot keep up is dropped
(its stream ends and the browser reconnects), so one slow browser never holds the others back.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

from shared.bus.api import Bus, Delivery
from shared.bus.topology import EVENTS

FINAL = frozenset({"clear.finished", "clear.rejected", "clear.preview"})
MAX_REQUESTS = 2000  # requests whose events are kept
MAX_EVENTS = 1000  # events kept per request (a request of many devices has many progress events)
SUBSCRIBER_BUFFER = 256

EventDict = dict[str, Any]
Subscription = tuple[list[EventDict], trio.MemoryReceiveChannel[EventDict]]


class EventHub:
    """Recent events by request id, and live subscriptions to them."""

    def __init__(self) -> None:
        self._events: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._branches: OrderedDict[str, str] = OrderedDict()  # request id -> branch, for requests sent here
        self._subscribers: dict[str, set[trio.MemorySendChannel[dict[str, Any]]]] = {}
        self.ready = trio.Event()

    async def run(self, bus: Bus, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Consume every clear event until cancelled."""
        queue = await bus.declare_reply_queue()
        await bus.bind(queue, EVENTS, "clear.*")
        await bus.bind(queue, EVENTS, "fleet.*")  # a fleet clear's acceptance names its per-branch requests

        async def on_delivery(delivery: Delivery) -> None:
            try:
                event = json.loads(delivery.body)
            except ValueError:
                return
            if isinstance(event, dict) and isinstance(event.get("request_id"), str):
                self.publish(event)

        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: bus.consume(queue, on_delivery, prefetch=64,
                                                                task_status=task_status))
            self.ready.set()
            task_status.started()

    def publish(self, event: dict[str, Any]) -> None:
        """Keep `event` and hand it to the request's subscribers."""
        request_id = event["request_id"]
        kept = self._events.setdefault(request_id, [])
        self._events.move_to_end(request_id)
        if len(kept) < MAX_EVENTS or event.get("event") in FINAL:
            kept.append(event)
        while len(self._events) > MAX_REQUESTS:
            self._events.popitem(last=False)  # live subscribers still get what follows
        for send in list(self._subscribers.get(request_id, ())):
            try:
                send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._drop(request_id, send)

    def note_branch(self, request_id: str, branch_id: str) -> None:
        """Remember the branch of a request this console publishes (a rejection is never stored)."""
        self._branches[request_id] = branch_id
        while len(self._branches) > MAX_REQUESTS:
            self._branches.popitem(last=False)

    def branch_of(self, request_id: str) -> str | None:
        return self._branches.get(request_id)

    def events_of(self, request_id: str) -> list[dict[str, Any]]:
        """The events of a request seen so far, in arrival order."""
        return list(self._events.get(request_id, ()))

    @contextmanager
    def subscribe(self, request_id: str) -> Iterator[Subscription]:
        """(events so far, channel of the ones that follow); nothing is lost between the two."""
        send, receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)
        self._subscribers.setdefault(request_id, set()).add(send)
        try:
            yield self.events_of(request_id), receive
        finally:
            self._drop(request_id, send)
            receive.close()

    def _drop(self, request_id: str, send: trio.MemorySendChannel[dict[str, Any]]) -> None:
        subscribers = self._subscribers.get(request_id)
        if subscribers is not None:
            subscribers.discard(send)
            if not subscribers:
                del self._subscribers[request_id]
        send.close()


def is_final(event: dict[str, Any]) -> bool:
    return event.get("event") in FINAL
