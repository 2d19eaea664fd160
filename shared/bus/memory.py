"""The in-process bus: the same interface and ack semantics as RabbitMQ, for one process.

Used by the embedded demo and fast unit tests; the contract suite in tests/bus runs on it
and on RabbitMQ alike.
"""

from __future__ import annotations

import math
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from shared.bus.api import BusError, Delivery, Handler
from shared.bus.middleware import Verdict, publish_span, run_handler
from shared.bus.routing import topic_matches
from shared.bus.topology import DEAD_LETTERS, QueueSpec, Topology


@dataclass
class _Queue:
    name: str
    spec: QueueSpec | None
    send: trio.MemorySendChannel[Delivery] = field(init=False)
    receive: trio.MemoryReceiveChannel[Delivery] = field(init=False)

    def __post_init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[Delivery](math.inf)

    def put(self, delivery: Delivery) -> None:
        self.send.send_nowait(delivery)

    def depth(self) -> int:
        return self.receive.statistics().current_buffer_used


class MemoryBus:
    """An in-memory broker with topic exchanges, quorum-like delivery limits and dead letters."""

    def __init__(self) -> None:
        self._exchanges: set[str] = {""}
        self._hashed: set[str] = set()  # x-consistent-hash exchanges: one bound queue per key
        self._queues: dict[str, _Queue] = {}
        self._bindings: list[tuple[str, str, str]] = []  # (exchange, pattern, queue)

    async def declare(self, topology: Topology) -> None:
        for exchange in topology.exchanges:
            self._exchanges.add(exchange.name)
            if exchange.type == "x-consistent-hash":
                self._hashed.add(exchange.name)
        for spec in topology.queues:
            self._declare_queue(spec.name, spec)
            dead = spec.dead_letter_queue
            self._declare_queue(dead, None)
            self._bind(DEAD_LETTERS, spec.name, dead)
            for source, pattern in spec.bindings:
                self._bind(source, pattern, spec.name)
        await trio.lowlevel.checkpoint()

    def _declare_queue(self, name: str, spec: QueueSpec | None) -> None:
        if name not in self._queues:
            self._queues[name] = _Queue(name, spec)

    def _bind(self, exchange: str, pattern: str, queue: str) -> None:
        if exchange not in self._exchanges:
            raise BusError(f"no exchange {exchange!r} to bind {queue!r} to")
        if (exchange, pattern, queue) not in self._bindings:
            self._bindings.append((exchange, pattern, queue))

    async def declare_reply_queue(self) -> str:
        name = f"amq.gen-{uuid.uuid4().hex}"
        self._declare_queue(name, None)
        await trio.lowlevel.checkpoint()
        return name

    async def bind(self, queue: str, exchange: str, pattern: str) -> None:
        if queue not in self._queues:
            raise BusError(f"no queue {queue!r}")
        self._bind(exchange, pattern, queue)
        await trio.lowlevel.checkpoint()

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
        if exchange not in self._exchanges:
            raise BusError(f"no exchange {exchange!r}")
        with publish_span(exchange, routing_key, message_id, headers) as out_headers:
            delivery = Delivery(
                exchange=exchange,
                routing_key=routing_key,
                body=bytes(body),
                message_id=message_id,
                correlation_id=correlation_id,
                reply_to=reply_to,
                headers=out_headers,
            )
            self._route(delivery)
        await trio.lowlevel.checkpoint()

    def _route(self, delivery: Delivery) -> None:
        if delivery.exchange == "":
            queue = self._queues.get(delivery.routing_key)
            if queue is not None:
                queue.put(delivery)
            return  # unroutable messages are dropped, as RabbitMQ does without `mandatory`
        if delivery.exchange in self._hashed:
            targets = self._hash_target(delivery)
        else:
            targets = {
                q for (ex, pattern, q) in self._bindings
                if ex == delivery.exchange and topic_matches(pattern, delivery.routing_key)
            }
        for name in sorted(targets):
            self._queues[name].put(delivery)

    def _hash_target(self, delivery: Delivery) -> set[str]:
        """Like RabbitMQ's consistent-hash exchange: binding keys are weights, one queue per key."""
        weighted = [(q, int(pattern) if pattern.isdigit() else 1)
                    for (ex, pattern, q) in self._bindings if ex == delivery.exchange]
        if not weighted:
            return set()
        point = zlib.crc32(delivery.routing_key.encode()) % sum(w for _, w in weighted)
        for queue, weight in sorted(weighted):
            if point < weight:
                return {queue}
            point -= weight
        return {weighted[-1][0]}

    async def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        prefetch: int = 16,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        q = self._queues.get(queue)
        if q is None:
            raise BusError(f"no queue {queue!r}")
        in_flight = trio.Semaphore(max(1, prefetch))
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                await in_flight.acquire()
                delivery = await q.receive.receive()
                nursery.start_soon(self._deliver, q, delivery, handler, in_flight)

    async def _deliver(
        self, q: _Queue, delivery: Delivery, handler: Handler, in_flight: trio.Semaphore
    ) -> None:
        try:
            verdict = await run_handler(handler, delivery)
        except trio.Cancelled:
            # the consumer went away mid-message: like a closed channel, the message returns
            self._settle(q, delivery, Verdict.REQUEUE)
            raise
        finally:
            in_flight.release()
        self._settle(q, delivery, verdict)

    def _settle(self, q: _Queue, delivery: Delivery, verdict: Verdict) -> None:
        if verdict is Verdict.ACK:
            return
        if verdict is Verdict.REQUEUE:
            count = delivery.delivery_count + 1
            limit = q.spec.delivery_limit if q.spec else None
            if limit is None or count <= limit:
                q.put(replace(delivery, redelivered=True, delivery_count=count,
                              headers={**delivery.headers, "x-delivery-count": count}))
                return
            reason = "delivery_limit"
        else:
            reason = "rejected"
        if q.spec is None:
            return  # reply queues have no dead-letter companion
        dead = replace(
            delivery,
            exchange=DEAD_LETTERS,
            routing_key=q.name,
            headers={**delivery.headers, "x-first-death-reason": reason,
                     "x-first-death-queue": q.name},
        )
        self._route(dead)

    def depth(self, queue: str) -> int:
        """Messages waiting in a queue (tests and metrics)."""
        return self._queues[queue].depth()

    async def queue_depths(self, queues: list[str]) -> dict[str, int]:
        """Messages waiting in each existing queue (as RabbitBus.queue_depths)."""
        return {name: self._queues[name].depth() for name in queues if name in self._queues}
