"""Publishing the public events of contract §3 on `clearcard.events`."""

from __future__ import annotations

import uuid

from shared.bus.api import Bus
from shared.bus.topology import DEFAULT, EVENTS
from shared.messages.clear import Event
from shared.messages.codec import encode


async def publish_event(
    bus: Bus, event: Event, *, reply_to: str | None = None, correlation_id: str | None = None
) -> None:
    """Publish `event` (routing key = its name); a final event also goes to the request's reply_to."""
    body = encode(event)
    await bus.publish(EVENTS, event.event, body, message_id=uuid.uuid4().hex,
                      correlation_id=correlation_id or event.request_id)
    if reply_to:
        await bus.publish(DEFAULT, reply_to, body, message_id=uuid.uuid4().hex,
                          correlation_id=correlation_id or event.request_id)
