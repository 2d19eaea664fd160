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
- A handler's failure is settled by shared/bus/retry.py: an outage parks a copy of the message
  in the queue's retry queue (default exchange, confirmed) and then acks the delivery; a
  dead-letter is a confirmed copy to `clearcard.dlx` carrying the reason, then the ack (a
  crash between the two leaves a duplicate, never a loss: consumers are idempotent).
- On a lost connection the bus reconnects with backoff, redeclares everything declared so
  far, and resumes every consumer. While it is down, `publish` and `declare` raise BusError.
  A consumer whose subscription fails while the connection is up (a queue not yet back after
  a broker restart) tries again with backoff; only its first subscription may fail.
- Reply queues are exclusive, auto-deleted classic queues named by the bus (not by the
  server), so the same name can be redeclared after a reconnect and RPC clients keep working.
- An RPC reply (default exchange, a reply queue's name, a correlation id) is published
  transient on a channel without confirms (`Link.send_unconfirmed`): the reply queue is
  neither durable nor kept across the caller's reconnect, so persistence bought nothing, and
  the wait for its confirm was one broker round trip per command. The server acks the
  command on the same connection after the reply was handed over, so a connection lost
  before the reply left loses the ack too and the command is redelivered (and answered
  again from the server's memory of answers); a reply lost otherwise is the caller's
  deadline, and its retry of an idempotent command.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pika
import structlog
import trio

from shared.bus import rabbit_queues as rq
from shared.bus.api import BusError, Delivery, Handler
from shared.bus.middleware import publish_span, run_handler
from shared.bus.rabbit_link import Channel, Link, open_link, open_nursery
from shared.bus.retry import Settlement, Verdict, dead_headers, retry_headers
from shared.bus.tls import parameters as amqp_parameters
from shared.bus.topology import DEAD_LETTERS, DEFAULT, QueueSpec, Topology
from shared.config import TlsFiles

log = structlog.get_logger("clearcard.bus")

REPLY_QUEUE_MARK = ".reply."  # in every reply queue's name (declare_reply_queue)
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0


class RabbitBus:
    """The Bus on RabbitMQ; `RabbitBus.connect(url)` owns its one connection."""

    def __init__(self, parameters: pika.ConnectionParameters, name: str) -> None:
        self._parameters = parameters
        self._name = name
        self._link: Link | None = None
        self._changed = trio.Event()
        self._closed = False
        self._topologies: list[Topology] = []
        self._specs: dict[str, QueueSpec] = {}  # every work queue declared, for its retry rules
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
            await rq.declare(link, topology)
        for queue in self._reply_queues:
            await rq.declare_reply_queue(link, queue)
        for queue, exchange, pattern in self._bindings:
            await rq.bind(link, queue, exchange, pattern)

    # Bus

    async def declare(self, topology: Topology) -> None:
        """Declare exchanges, quorum queues with their `.dead` companions, and bindings."""
        await rq.declare(self._current_link(), topology)
        if topology not in self._topologies:
            self._topologies.append(topology)
        self._specs.update((spec.name, spec) for spec in topology.queues)

    async def declare_reply_queue(self) -> str:
        """An exclusive auto-delete classic queue for this connection's RPC replies."""
        name = f"{self._name}{REPLY_QUEUE_MARK}{uuid.uuid4().hex}"
        await rq.declare_reply_queue(self._current_link(), name)
        self._reply_queues.append(name)
        return name

    async def bind(self, queue: str, exchange: str, pattern: str) -> None:
        """Bind a queue to an exchange; the binding is restored after a reconnect."""
        await rq.bind(self._current_link(), queue, exchange, pattern)
        if (queue, exchange, pattern) not in self._bindings:
            self._bindings.append((queue, exchange, pattern))

    async def publish(self, exchange: str, routing_key: str, body: bytes, *, message_id: str | None = None,
                      correlation_id: str | None = None, reply_to: str | None = None,
                      headers: Mapping[str, Any] | None = None) -> None:
        """Publish persistently and wait for this message's confirm (an RPC reply: neither)."""
        reply = exchange == DEFAULT and correlation_id is not None and REPLY_QUEUE_MARK in routing_key
        with publish_span(exchange, routing_key, message_id, headers) as out_headers:
            link = self._current_link()
            properties = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Transient if reply else pika.DeliveryMode.Persistent,
                message_id=message_id,
                correlation_id=correlation_id,
                reply_to=reply_to,
                headers=out_headers,
            )
            if reply:  # on a channel without confirms: the broker spends nothing on one
                await link.send_unconfirmed(exchange, routing_key, bytes(body), properties)
                return
            publisher = await link.publisher()
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
        attempt = 0
        async with open_nursery() as handlers:
            while True:
                link = await self._next_link()
                try:
                    async with rq.subscribe(link, queue, prefetch) as deliveries:
                        if not started:
                            started = True
                            task_status.started()
                        attempt = 0
                        async for message in deliveries:
                            await in_flight.acquire()
                            if not message.channel.is_open:
                                in_flight.release()  # stale: the broker redelivers it
                                continue
                            handlers.start_soon(self._handle, message, queue, handler, in_flight)
                except BusError as exc:
                    if link.closed.is_set():
                        continue  # the connection went: resubscribe once it is back
                    if not started:
                        raise  # no such queue, access refused...: the caller's mistake
                    # the connection is up but the queue is not (yet): a quorum queue still
                    # electing its leader after a broker restart, a redeclare in progress
                    log.warning("cannot resubscribe; trying again", queue=queue, error=str(exc))
                    await trio.sleep(min(_BACKOFF_MAX, _BACKOFF_FIRST * 2**attempt) * random.uniform(0.5, 1.0))
                    attempt += 1

    async def _handle(self, message: rq.Message, queue: str, handler: Handler, in_flight: trio.Semaphore) -> None:
        spec = self._specs.get(queue)
        delivery = rq.delivery_of(message, spec)
        try:
            settlement = await run_handler(handler, delivery, spec)
        finally:
            in_flight.release()
        if settlement.verdict is Verdict.RETRY_LATER and spec is not None:
            settlement = await self._park(message, delivery, spec, settlement)
        elif settlement.verdict is Verdict.DEAD_LETTER and spec is not None:
            settlement = await self._bury(message, delivery, spec, settlement)
        rq.settle(message, settlement.verdict)

    async def _park(self, message: rq.Message, delivery: Delivery, spec: QueueSpec,
                    settlement: Settlement) -> Settlement:
        """A copy in the retry queue (confirmed) before the delivery is acked."""
        headers = retry_headers(delivery, settlement.reason, time.time(), settlement.headers)
        try:
            await self._copy(message, DEFAULT, spec.retry_queue(settlement.delay), headers)
        except BusError as exc:  # the broker is away too: the delivery stays unsettled, so it returns
            log.info("could not park a message for a later retry", error=str(exc))
            return Settlement(Verdict.REQUEUE)
        return Settlement(Verdict.ACK)

    async def _bury(self, message: rq.Message, delivery: Delivery, spec: QueueSpec,
                    settlement: Settlement) -> Settlement:
        """A copy with its reason in the dead-letter queue (confirmed) before the delivery is acked."""
        headers = dead_headers(delivery, spec.name, settlement.reason, time.time())
        try:
            await self._copy(message, DEAD_LETTERS, spec.name, headers)
        except BusError as exc:  # the broker's own dead-lettering, without the reason
            log.info("could not dead-letter a message with its reason", error=str(exc))
            return Settlement(Verdict.DEAD_LETTER)
        return Settlement(Verdict.ACK)

    async def _copy(self, message: rq.Message, exchange: str, routing_key: str, headers: dict[str, Any]) -> None:
        props = message.properties
        properties = pika.BasicProperties(
            content_type=props.content_type or "application/json", delivery_mode=pika.DeliveryMode.Persistent,
            message_id=props.message_id, correlation_id=props.correlation_id, reply_to=props.reply_to,
            headers=headers)
        publisher = await self._current_link().publisher()
        tag, confirmed = publisher.send(exchange, routing_key, message.body, properties)
        try:
            await confirmed.wait()
        finally:
            publisher.forget(tag)

    # operators' tools (shared/bus/dead_letters.py)

    async def queue_depth(self, queue: str) -> int | None:
        """Messages ready in `queue`, or None if it does not exist."""
        channel = await self._current_link().open_channel()
        try:
            ok = await channel.call(channel.pika.queue_declare, queue, passive=True)
        except BusError as exc:
            if "404" in str(exc):
                return None
            raise
        finally:
            channel.close()
        return int(ok.method.message_count)

    async def drain(self, queue: str, visit: Callable[[Delivery], Awaitable[bool]], *, limit: int) -> int:
        """Hand up to `limit` waiting messages of `queue` to `visit`, oldest first; those it returns
        True for are removed, the others stay. Returns how many were visited."""
        depth = await self.queue_depth(queue)
        wanted = min(limit, depth or 0)
        if wanted <= 0:
            return 0
        seen = removed = 0
        async with rq.subscribe(self._current_link(), queue, wanted) as deliveries:
            with trio.move_on_after(10):  # a message another tool holds right now is not waited for
                async for message in deliveries:
                    seen += 1
                    keep = not await visit(rq.delivery_of(message, None))
                    rq.settle(message, Verdict.REQUEUE if keep else Verdict.ACK)
                    removed += not keep
                    if seen >= wanted:
                        break
        # the kept ones return to the queue asynchronously; the next look must see them
        with trio.move_on_after(5):
            while True:
                if (await self.queue_depth(queue) or 0) >= (depth or 0) - removed:
                    break
                await trio.sleep(0.05)  # the broker's own bookkeeping: there is no event to wait on
        return seen
