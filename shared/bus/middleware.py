"""Cross-cutting concerns around handlers and publishes: tracing, log context, verdicts.

Both transports call these, so tracing and ack rules live in one place.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
import trio
from opentelemetry.trace import SpanKind, Status, StatusCode

from shared import telemetry
from shared.bus.api import Delivery, Handler, Reject
from shared.messages.codec import DecodeError

log = structlog.get_logger("clearcard.bus")


class Verdict(enum.Enum):
    ACK = "ack"
    DEAD_LETTER = "dead_letter"  # reject, requeue=False: the queue's dead-letter exchange takes it
    REQUEUE = "requeue"  # nack, requeue=True: tried again until the delivery limit


async def run_handler(handler: Handler, delivery: Delivery) -> Verdict:
    """Run a handler and turn its outcome into an ack decision; never lets input kill a consumer."""
    try:
        await handler(delivery)
    except (Reject, DecodeError) as exc:
        log.warning("message dead-lettered", routing_key=delivery.routing_key,
                    message_id=delivery.message_id, reason=str(exc))
        return Verdict.DEAD_LETTER
    except trio.Cancelled:
        raise
    except Exception as exc:
        log.exception("handler failed; message returned to its queue",
                      routing_key=delivery.routing_key, message_id=delivery.message_id,
                      error=repr(exc))
        return Verdict.REQUEUE
    return Verdict.ACK


def traced(service: str, queue: str, handler: Handler) -> Handler:
    """Wrap a handler in a consumer span joined to the publisher's trace (AMQP headers)."""
    tracer = telemetry.tracer(service)

    async def wrapper(delivery: Delivery) -> None:
        parent = telemetry.extract(delivery.headers)
        attributes: dict[str, Any] = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": delivery.exchange or queue,
            "messaging.rabbitmq.destination.routing_key": delivery.routing_key,
        }
        if delivery.message_id:
            attributes["messaging.message.id"] = delivery.message_id
        if delivery.correlation_id:
            attributes["messaging.message.conversation_id"] = delivery.correlation_id
        with tracer.start_as_current_span(
            f"process {queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ) as span, structlog.contextvars.bound_contextvars(service=service):
            try:
                await handler(delivery)
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, repr(exc)))
                raise

    return wrapper


@contextmanager
def publish_span(
    exchange: str, routing_key: str, message_id: str | None, headers: Mapping[str, Any] | None
) -> Iterator[dict[str, Any]]:
    """A producer span around a publish; yields the headers with the trace context injected."""
    out: dict[str, Any] = dict(headers or {})
    attributes: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": routing_key,
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    tracer = telemetry.tracer_of_current_span()
    if tracer is None:  # outside any service span (CLI, tests): just carry whatever context there is
        telemetry.inject(out)
        yield out
        return
    with tracer.start_as_current_span(
        f"send {exchange or routing_key}", kind=SpanKind.PRODUCER, attributes=attributes
    ):
        telemetry.inject(out)
        yield out
