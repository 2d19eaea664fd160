"""Cross-cutting concerns around handlers and publishes: tracing, log context, settling failures.

Both transports call these, so tracing and ack rules live in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry.trace import SpanKind, Status, StatusCode

from shared import telemetry
from shared.bus.api import Delivery, Handler
from shared.bus.retry import ACKED, Settlement, Verdict, failure_kind, gives_up, settle
from shared.bus.topology import QueueSpec

log = structlog.get_logger("clearcard.bus")


async def run_handler(handler: Handler, delivery: Delivery, spec: QueueSpec | None) -> Settlement:
    """Run a handler and decide what becomes of its message; never lets input kill a consumer."""
    try:
        await handler(delivery)
    except Exception as exc:  # a group too; trio.Cancelled is a BaseException and passes
        settlement = settle(exc, delivery.attempt, spec)
        fields = {"routing_key": delivery.routing_key, "message_id": delivery.message_id,
                  "reason": settlement.reason}
        if settlement.verdict is Verdict.RETRY_LATER:
            log.warning("database or broker away; message comes back later", retry_in=settlement.delay,
                        retries=delivery.attempt.retries, **fields)
        elif settlement.verdict is Verdict.DEAD_LETTER and failure_kind(exc) != "bug":
            log.warning("message dead-lettered", **fields)
        else:  # a bug: its traceback, whether the message is tried again or given up
            log.error("handler failed" if settlement.verdict is Verdict.REQUEUE
                      else "handler failed too often; message dead-lettered", exc_info=exc, **fields)
        return settlement
    return ACKED


LastWords = Callable[[Delivery, BaseException], Awaitable[None]]


def with_last_words(handler: Handler, last_words: LastWords) -> Handler:
    """Call `last_words(delivery, exc)` when a failure is about to dead-letter a message that
    was read (say, to tell its sender in plain words); refused messages are not answered here."""

    async def wrapper(delivery: Delivery) -> None:
        try:
            await handler(delivery)
        except Exception as exc:
            if gives_up(delivery, exc) and failure_kind(exc) != "refused":
                try:
                    await last_words(delivery, exc)
                except Exception as trouble:  # the message is dead-lettered all the same
                    log.error("could not answer a message before dead-lettering it", exc_info=trouble,
                              message_id=delivery.message_id)
            raise

    return wrapper


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
