"""Publishing the public events of contract §3 on `clearcard.events`.

`publish_event` sends at once; `event_messages` gives the same messages as rows for an outbox,
so a service can write them in the transaction of the state change they announce.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from shared import audit, telemetry
from shared.bus.api import Bus, Delivery
from shared.bus.retry import failure_kind
from shared.bus.topology import DEFAULT, EVENTS, RETRY_SCHEDULE
from shared.errors import ErrorCode
from shared.messages.clear import ClearRejected, ClearRequest, Error, Event
from shared.messages.codec import DecodeError, decode, encode
from shared.outages import describe


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


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def readable_request_id(delivery: Delivery) -> str | None:
    """A clear request's id from its body, or its message id when the body cannot say."""
    try:
        return decode(ClearRequest, delivery.body).request_id
    except DecodeError as exc:
        if exc.request_id and _REQUEST_ID.match(exc.request_id):
            return exc.request_id
    mid = delivery.message_id
    return mid if mid and _REQUEST_ID.match(mid) else None


async def reject_given_up(bus: Bus, service: str, delivery: Delivery, exc: BaseException) -> None:
    """Tell a clear request's sender, in plain words, that it is being set aside for good.

    Called right before a clear request is dead-lettered after its retries (`with_last_words`),
    so that nobody waits for an answer that will never come.
    """
    request_id = readable_request_id(delivery)
    if request_id is None:
        return
    hours = round(RETRY_SCHEDULE.budget / 3600)
    if failure_kind(exc) == "outage":
        error = Error.of(ErrorCode.TIMEOUT, (
            f"ClearCard could not take this request in: its database or message broker stayed unreachable "
            f"for about {hours} hours. Nothing was done on any device. The request was set aside for the "
            "operations team, who can replay it (clearcard dlq); or send it again once the service is back."))
    else:
        error = Error.of(ErrorCode.INTERNAL, (
            "ClearCard could not take this request in because of an internal error, which it met several "
            "times. Nothing was done on any device. The request was set aside for the operations team, who "
            "have the details and can replay it (clearcard dlq)."))
    await audit.record(bus, service=service, subject="unknown", action="clear.rejected", request_id=request_id,
                       outcome="dead_lettered", error_code=error.code,
                       record_id=f"given-up:{service}:{request_id}:{delivery.message_id or ''}",
                       detail={"reason": describe(exc)})
    event = ClearRejected(request_id=request_id, trace_id=telemetry.current_trace_id(), error=error)
    await publish_event(bus, event, reply_to=delivery.reply_to, correlation_id=delivery.correlation_id)
