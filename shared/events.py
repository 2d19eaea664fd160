"""Publishing the public events of contract §3 on `clearcard.events`.

`publish_event` sends at once; `event_messages` gives the same messages as rows for an outbox,
so a service can write them in the transaction of the state change they announce.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from shared.bus.api import Bus
from shared.bus.topology import DEFAULT, EVENTS
from shared.messages.clear import Event
from shared.messages.codec import encode


@dataclass(frozen=True)
class OutgoingMessage:
    """One message as an outbox stores it: the relay publishes it with exactly these properties."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any] = field(default_factory=dict)


def event_messages(
    event: Event, *, message_id: str | None = None, reply_to: str | None = None,
    correlation_id: str | None = None,
) -> list[OutgoingMessage]:
    """The event on `clearcard.events` (plus its copy to `reply_to`), with stable message ids."""
    body = encode(event)
    mid = message_id or uuid.uuid4().hex
    correlation = correlation_id or event.request_id
    out = [OutgoingMessage(EVENTS, event.event, body, mid, {"correlation_id": correlation})]
    if reply_to:
        out.append(OutgoingMessage(DEFAULT, reply_to, body, f"{mid}:reply", {"correlation_id": correlation}))
    return out


async def publish_event(
    bus: Bus, event: Event, *, reply_to: str | None = None, correlation_id: str | None = None
) -> None:
    """Publish `event` (routing key = its name); a final event also goes to the request's reply_to."""
    for message in event_messages(event, reply_to=reply_to, correlation_id=correlation_id):
        await bus.publish(message.exchange, message.routing_key, message.body,
                          message_id=message.message_id,
                          correlation_id=message.headers.get("correlation_id"))
