"""The RabbitMQ bus: pika on the trio thread, publisher confirms, reconnect, per-consumer prefetch.

Design choice: pika runs on a small trio adapter of its `nbio_interface` (shared/bus/trio_nbio.py),
not on `AsyncioConnection` over trio-asyncio. Both keep everything on the trio thread and were
measured alike (stack notes); the adapter wins because the bus then needs nothing but trio:
no open trio-asyncio loop in every process and test that talks to the broker (the CLI, the
gateway and the console have no database), no asyncio callbacks between pika and trio, and
cancellation, timeouts and I/O errors are plain trio ones. The price is ~150 lines written
against pika's documented adapter interface, which pika's own asyncio and select adapters use.

Semantics (the contract suite in tests/bus checks them on this bus and the in-memory one):

- `publish` awaits its own confirm on a shared confirm-mode channel, many in flight. A nack,
  or the channel or connection closing, fails every pending confirm with BusError; the
  message may then have been taken, so callers retry with the same `message_id`.
- `consume` has a channel of its own with per-consumer prefetch (quorum queues refuse global
  QoS), up to `prefetch` handlers at once, each delivery settled on the channel that
  delivered it. A delivery whose channel is gone is never settled: the broker redelivers it.
- On a lost connection the bus reconnects with backoff, redeclares everything declared so
  far, and resumes every consumer. While it is down, `publish` and `declare` raise BusError.
- Reply queues are exclusive, auto-deleted classic queues named by the bus (not by the
  server), so the same name can be redeclared after a reconnect and RPC clients keep working.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pika
import structlog
import trio

from shared.bus.api import BusError, Delivery, Handler
from shared.bus.middleware import Verdict, publish_span, run_handler
from shared.bus.rabbit_link import Channel, Link, open_link, open_nursery, translated
from shared.bus.tls import parameters as amqp_parameters
from shared.bus.topology import DEAD_LETTERS, Topology
from shared.config import TlsFiles

log = structlog.get_logger("clearcard.bus")

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0


@dataclass(frozen=True)
class _Message:
    channel: Channel
    method: Any
    properties: Any
    body: bytes


class RabbitBus:
    """The Bus on RabbitMQ; `RabbitBus.connect(url)` owns its one connection."""

    def __init__(self, parameters: pika.ConnectionParameters, name: str) -> None:
        self._parameters = parameters
        self._name = name
        self._link: Link | None = None
        self._changed = trio.Event()
        self._closed = False
        self._topologies: list[Topology] = []
        self._reply_queues: list[str] = []
        self._bindings: list[tuple[str, str, str]] = []

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, *, name: str = "clearcard",
                      tls: TlsFiles | None = None) -> AsyncIterator[RabbitBus]:
        """Connect (raising BusError if the broker cannot be reached) and keep connected until exit;
        an `amqps://` URL is TLS, verified against `tls` (shared/bus/tls.py)."""
        parameters = amqp_parameters(url, tls)
        parameters.client_properties = {"connection_name": name}
        bus = cls(parameters, name)
        async with open_nursery() as nursery:
            await nursery.start(bus._keep_connected)
            try:
                yield bus
            finally:
                bus._closed = True
                bus._notify()
                nursery.cancel_scope.cancel()

    # connection

    async def _keep_connected(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        attempt = 0
        while True:
            try:
                async with open_link(self._parameters) as link:
                    await self._redeclare(link)
                    self._set_link(link)
                    attempt = 0
                    if started:
                        log.info("reconnected to RabbitMQ", connection=self._name)
                    else:
                        started = True
                        task_status.started()
                    await link.closed.wait()
                    log.warning("RabbitMQ connection lost", connection=self._name,
                                reason=str(link.close_error))
            except BusError as exc:
                if not started:
                    raise
                log.warning("reconnect failed", connection=self._name, error=str(exc))
            finally:
                self._set_link(None)
            await trio.sleep(min(_BACKOFF_MAX, _BACKOFF_FIRST * 2**attempt) * random.uniform(0.5, 1.0))
            attempt += 1

    def _set_link(self, link: Link | None) -> None:
        self._link = link
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _current_link(self) -> Link:
        link = self._link
        if self._closed:
            raise BusError("the bus is closed")
        if link is None or link.closed.is_set():
            raise BusError("not connected to RabbitMQ (reconnecting)")
        return link

    async def _next_link(self) -> Link:
        while True:
            if self._closed:
                raise BusError("the bus is closed")
            link = self._link
            if link is not None and not link.closed.is_set():
                return link
            await self._changed.wait()

    async def _redeclare(self, link: Link) -> None:
        for topology in self._topologies:
            await _declare(link, topology)
        for queue in self._reply_queues:
            await _declare_reply_queue(link, queue)
        for queue, exchange, pattern in self._bindings:
            await _bind(link, queue, exchange, pattern)

    # Bus

    async def declare(self, topology: Topology) -> None:
        """Declare exchanges, quorum queues with their `.dead` companions, and bindings."""
        await _declare(self._current_link(), topology)
        if topology not in self._topologies:
            self._topologies.append(topology)

    async def declare_reply_queue(self) -> str:
        """An exclusive auto-delete classic queue for this connection's RPC replies."""
        name = f"{self._name}.reply.{uuid.uuid4().hex}"
        await _declare_reply_queue(self._current_link(), name)
        self._reply_queues.append(name)
        return name

    async def bind(self, queue: str, exchange: str, pattern: str) -> None:
        """Bind a queue to an exchange; the binding is restored after a reconnect."""
        await _bind(self._current_link(), queue, exchange, pattern)
        if (queue, exchange, pattern) not in self._bindings:
            self._bindings.append((queue, exchange, pattern))

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish persistently and wait for this message's confirm."""
        with publish_span(exchange, routing_key, message_id, headers) as out_headers:
            publisher = await self._current_link().publisher()
            properties = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=message_id,
                correlation_id=correlation_id,
                reply_to=reply_to,
                headers=out_headers,
            )
            tag, confirmed = publisher.send(exchange, routing_key, bytes(body), properties)
            try:
                await confirmed.wait()
            finally:
                publisher.forget(tag)

    async def queue_depths(self, queues: list[str]) -> dict[str, int]:
        """Messages ready in each existing queue (a passive declare per queue; missing ones left out)."""
        link = self._current_link()
        depths: dict[str, int] = {}
        channel: Channel | None = None
        try:
            for name in queues:
                if channel is None or not channel.is_open:
                    channel = await link.open_channel()
                try:
                    frame = await channel.call(channel.pika.queue_declare, name, passive=True)
                except BusError:
                    continue  # 404: the queue does not exist (its channel is closed; the next opens anew)
                depths[name] = int(frame.method.message_count)
        finally:
            if channel is not None:
                channel.close()
        return depths

    async def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        prefetch: int = 16,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run `handler` on each delivery until cancelled, across reconnects."""
        prefetch = max(1, prefetch)
        in_flight = trio.Semaphore(prefetch)
        started = False
        async with open_nursery() as handlers:
            while True:
                link = await self._next_link()
                try:
                    async with _subscribe(link, queue, prefetch) as deliveries:
                        if not started:
                            started = True
                            task_status.started()
                        async for message in deliveries:
                            await in_flight.acquire()
                            if not message.channel.is_open:
                                in_flight.release()  # stale: the broker redelivers it
                                continue
                            handlers.start_soon(_handle, message, handler, in_flight)
                except BusError:
                    if not link.closed.is_set():
                        raise  # not a lost connection: no such queue, access refused...


async def _declare(link: Link, topology: Topology) -> None:
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
            for exchange_name, pattern in spec.bindings:
                await channel.call(channel.pika.queue_bind, spec.name, exchange_name, routing_key=pattern)
    finally:
        channel.close()


async def _bind(link: Link, queue: str, exchange: str, pattern: str) -> None:
    channel = await link.open_channel()
    try:
        await channel.call(channel.pika.queue_bind, queue, exchange, routing_key=pattern)
    finally:
        channel.close()


async def _declare_reply_queue(link: Link, name: str) -> None:
    channel = await link.open_channel()
    try:
        await channel.call(channel.pika.queue_declare, name, exclusive=True, auto_delete=True,
                           arguments={"x-queue-type": "classic"})
    finally:
        channel.close()


@asynccontextmanager
async def _subscribe(link: Link, queue: str, prefetch: int) -> AsyncIterator[trio.MemoryReceiveChannel[_Message]]:
    """A consumer on a channel of its own; deliveries end when the channel or consumer does."""
    channel = await link.open_channel()
    # pika calls on_message synchronously; the broker never has more than `prefetch` unacked
    # deliveries out on this channel, so the buffer cannot overflow.
    send, receive = trio.open_memory_channel[_Message](prefetch)

    def on_message(_ch: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            send.send_nowait(_Message(channel, method, properties, body))
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


async def _handle(message: _Message, handler: Handler, in_flight: trio.Semaphore) -> None:
    try:
        verdict = await run_handler(handler, _delivery(message))
    finally:
        in_flight.release()
    _settle(message, verdict)


def _delivery(message: _Message) -> Delivery:
    props = message.properties
    headers = dict(props.headers or {})
    count = headers.get("x-delivery-count", 0)
    return Delivery(
        exchange=message.method.exchange,
        routing_key=message.method.routing_key,
        body=message.body,
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        headers=headers,
        redelivered=bool(message.method.redelivered),
        delivery_count=count if isinstance(count, int) else 0,
    )


def _settle(message: _Message, verdict: Verdict) -> None:
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
            else:
                channel.pika.basic_nack(tag, requeue=True)
    except BusError as exc:
        log.info("could not settle a delivery; the broker redelivers it", error=str(exc))
