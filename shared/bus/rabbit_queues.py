"""Queues on one RabbitMQ link: declaring them with their companions, subscribing, settling.

The RabbitBus (shared/bus/rabbitmq.py) owns the connection; these functions do one thing on
a link it hands them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from shared.bus.api import BusError, Delivery
from shared.bus.rabbit_link import Channel, Link, translated
from shared.bus.retry import Verdict, attempt_of, original_route
from shared.bus.topology import DEAD_LETTERS, QueueSpec, Topology

log = structlog.get_logger("clearcard.bus")


@dataclass(frozen=True)
class Message:
    """One delivery as pika handed it, with the channel that must settle it."""

    channel: Channel
    method: Any
    properties: Any
    body: bytes


async def declare(link: Link, topology: Topology) -> None:
    channel = await link.open_channel()
    try:
        for exchange in topology.exchanges:
            await channel.call(channel.pika.exchange_declare, exchange.name, exchange.type, durable=True)
        for spec in topology.queues:
            await channel.call(channel.pika.queue_declare, spec.name, durable=True,
                               arguments=spec.arguments())
            await channel.call(channel.pika.queue_declare, spec.dead_letter_queue, durable=True,
                               arguments={"x-queue-type": "quorum"})
            await channel.call(channel.pika.queue_bind, spec.dead_letter_queue, DEAD_LETTERS,
                               routing_key=spec.name)
            for name, arguments in spec.retry_queues:
                await channel.call(channel.pika.queue_declare, name, durable=True, arguments=arguments)
            for exchange_name, pattern in spec.bindings:
                await channel.call(channel.pika.queue_bind, spec.name, exchange_name, routing_key=pattern)
    finally:
        channel.close()


async def bind(link: Link, queue: str, exchange: str, pattern: str) -> None:
    channel = await link.open_channel()
    try:
        await channel.call(channel.pika.queue_bind, queue, exchange, routing_key=pattern)
    finally:
        channel.close()


async def declare_reply_queue(link: Link, name: str) -> None:
    channel = await link.open_channel()
    try:
        await channel.call(channel.pika.queue_declare, name, exclusive=True, auto_delete=True,
                           arguments={"x-queue-type": "classic"})
    finally:
        channel.close()


@asynccontextmanager
async def subscribe(link: Link, queue: str, prefetch: int) -> AsyncIterator[trio.MemoryReceiveChannel[Message]]:
    """A consumer on a channel of its own; deliveries end when the channel or consumer does."""
    channel = await link.open_channel()
    # pika calls on_message synchronously; the broker never has more than `prefetch` unacked
    # deliveries out on this channel, so the buffer cannot overflow.
    send, receive = trio.open_memory_channel[Message](prefetch)

    def on_message(_ch: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            send.send_nowait(Message(channel, method, properties, body))
        except trio.ClosedResourceError:
            pass  # the consumer is stopping; the channel's close returns the message
        except trio.WouldBlock:
            log.error("delivery buffer full; prefetch not honoured", queue=queue)

    channel.on_close(lambda _error: send.close())
    try:
        await channel.call(channel.pika.basic_qos, prefetch_count=prefetch, global_qos=False)
        channel.pika.add_on_cancel_callback(lambda _frame: send.close())  # queue deleted
        ok = await channel.call(channel.pika.basic_consume, queue, on_message)
        consumer_tag = ok.method.consumer_tag
        try:
            yield receive
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                if channel.is_open:
                    with contextlib.suppress(BusError):  # a closing channel cancels it anyway
                        await channel.call(channel.pika.basic_cancel, consumer_tag)
    finally:
        send.close()
        channel.close()


def delivery_of(message: Message, spec: QueueSpec | None) -> Delivery:
    props = message.properties
    headers = dict(props.headers or {})
    count = headers.get("x-delivery-count", 0)
    count = count if isinstance(count, int) else 0
    exchange, routing_key = original_route(headers, message.method.exchange, message.method.routing_key)
    return Delivery(
        exchange=exchange,
        routing_key=routing_key,
        body=message.body,
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        headers=headers,
        redelivered=bool(message.method.redelivered),
        delivery_count=count,
        attempt=attempt_of(headers, count, spec, time.time()),
    )


def settle(message: Message, verdict: Verdict) -> None:
    """Ack/reject on the delivering channel only: a tag from a closed channel is meaningless."""
    channel, tag = message.channel, message.method.delivery_tag
    if not channel.is_open:
        log.info("delivery's channel closed before settling; the broker redelivers it", tag=tag)
        return
    try:
        with translated("settle"):
            if verdict is Verdict.ACK:
                channel.pika.basic_ack(tag)
            elif verdict is Verdict.DEAD_LETTER:
                channel.pika.basic_reject(tag, requeue=False)
            else:  # REQUEUE (and RETRY_LATER on a queue without retry rules)
                channel.pika.basic_nack(tag, requeue=True)
    except BusError as exc:
        log.info("could not settle a delivery; the broker redelivers it", error=str(exc))
