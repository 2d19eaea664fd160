"""The in-process bus: the same interface and ack semantics as RabbitMQ, for one process.

Used by the embedded demo and fast unit tests; the contract suite in tests/bus runs on it
and on RabbitMQ alike.

Retry queues hold parked messages until their delay has passed on trio's clock; a consumer of
the work queue moves them back (RabbitMQ does it without one: here nothing else could take them).
The retry budget is measured on `clock` (wall time unless a test gives another).
"""

from __future__ import annotations

import math
import time
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from shared.bus.api import BusError, Delivery, Handler
from shared.bus.middleware import publish_span, run_handler
from shared.bus.retry import (
    EXCHANGE,
    ROUTING_KEY,
    Settlement,
    Verdict,
    attempt_of,
    dead_headers,
    original_route,
    retry_headers,
)
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

    def take_all(self) -> list[Delivery]:
        taken = []
        while True:
            try:
                taken.append(self.receive.receive_nowait())
            except trio.WouldBlock:
                return taken


@dataclass
class _RetryQueue:
    """Messages parked for `delay` seconds, in the order they are due."""

    name: str
    delay: float
    parked: deque[tuple[float, Delivery]] = field(default_factory=deque)


class MemoryBus:
    """An in-memory broker with topic exchanges, quorum-like delivery limits, retry and dead letters."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._exchanges: set[str] = {""}
        self._hashed: set[str] = set()  # x-consistent-hash exchanges: one bound queue per key
        self._queues: dict[str, _Queue] = {}
        self._bindings: list[tuple[str, str, str]] = []  # (exchange, pattern, queue)
        self._retries: dict[str, list[_RetryQueue]] = {}  # work queue -> its retry queues
        self._parked: dict[str, trio.Event] = {}  # work queue -> "a message was parked"
        self._clock = clock

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
            if spec.name not in self._retries:
                self._retries[spec.name] = [_RetryQueue(spec.retry_queue(d), d) for d in spec.retry.levels]
                self._parked[spec.name] = trio.Event()
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

    async def publish(self, exchange: str, routing_key: str, body: bytes, *, message_id: str | None = None,
                      correlation_id: str | None = None, reply_to: str | None = None,
                      headers: Mapping[str, Any] | None = None) -> None:
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
            if self._retries.get(queue):
                nursery.start_soon(self._return_when_due, q)
            task_status.started()
            while True:
                await in_flight.acquire()
                delivery = await q.receive.receive()
                nursery.start_soon(self._deliver, q, delivery, handler, in_flight)

    async def _deliver(
        self, q: _Queue, delivery: Delivery, handler: Handler, in_flight: trio.Semaphore
    ) -> None:
        exchange, routing_key = original_route(delivery.headers, delivery.exchange, delivery.routing_key)
        delivery = replace(delivery, exchange=exchange, routing_key=routing_key,
                           attempt=attempt_of(delivery.headers, delivery.delivery_count, q.spec, self._clock()))
        try:
            settlement = await run_handler(handler, delivery, q.spec)
        except trio.Cancelled:
            # the consumer went away mid-message: like a closed channel, the message returns
            self._settle(q, delivery, Settlement(Verdict.REQUEUE))
            raise
        finally:
            in_flight.release()
        self._settle(q, delivery, settlement)

    def _settle(self, q: _Queue, delivery: Delivery, settlement: Settlement) -> None:
        verdict = settlement.verdict
        if verdict is Verdict.ACK:
            return
        if q.spec is not None and verdict is Verdict.RETRY_LATER:
            self._park(q.spec, delivery, settlement)
            return
        if q.spec is not None and verdict is Verdict.DEAD_LETTER:  # the consumer's, with its reason
            self._route(replace(delivery, exchange=DEAD_LETTERS, routing_key=q.name,
                                headers=dead_headers(delivery, q.name, settlement.reason, self._clock())))
            return
        if verdict is Verdict.DEAD_LETTER:
            return  # reply queues have no dead-letter companion
        count = delivery.delivery_count + 1
        limit = q.spec.delivery_limit if q.spec else None
        if limit is None or count <= limit:
            q.put(replace(delivery, redelivered=True, delivery_count=count,
                          headers={**delivery.headers, "x-delivery-count": count}))
            return
        # the broker's own delivery limit (a consumer that kept dying while holding the message)
        # (RabbitMQ keeps where it came from in x-death; here in the headers a consumer would set)
        self._route(replace(delivery, exchange=DEAD_LETTERS, routing_key=q.name,
                            headers={EXCHANGE: delivery.exchange, ROUTING_KEY: delivery.routing_key,
                                     **delivery.headers, "x-first-death-reason": "delivery_limit",
                                     "x-first-death-queue": q.name}))

    def _park(self, spec: QueueSpec, delivery: Delivery, settlement: Settlement) -> None:
        headers = retry_headers(delivery, settlement.reason, self._clock(), settlement.headers)
        # back through the default exchange under the queue's name, as RabbitMQ returns it
        parked = Delivery(exchange="", routing_key=spec.name, body=delivery.body, message_id=delivery.message_id,
                          correlation_id=delivery.correlation_id, reply_to=delivery.reply_to, headers=headers)
        retry_queue = next(r for r in self._retries[spec.name] if r.delay == settlement.delay)
        retry_queue.parked.append((trio.current_time() + retry_queue.delay, parked))
        self._parked.pop(spec.name).set()
        self._parked[spec.name] = trio.Event()

    async def _return_when_due(self, q: _Queue) -> None:
        """Move parked messages back to their work queue as their delays pass."""
        retry_queues = self._retries[q.name]
        while True:
            now = trio.current_time()
            next_due = math.inf
            for retry_queue in retry_queues:
                while retry_queue.parked and retry_queue.parked[0][0] <= now:
                    q.put(retry_queue.parked.popleft()[1])
                if retry_queue.parked:
                    next_due = min(next_due, retry_queue.parked[0][0])
            parked = self._parked[q.name]
            with trio.move_on_at(next_due):
                await parked.wait()

    # operators' tools (shared/bus/dead_letters.py)

    async def queue_depth(self, queue: str) -> int | None:
        """Messages waiting in `queue`, or None if it does not exist."""
        await trio.lowlevel.checkpoint()
        try:
            return self.depth(queue)
        except KeyError:
            return None

    async def drain(self, queue: str, visit: Callable[[Delivery], Awaitable[bool]], *, limit: int) -> int:
        """Hand up to `limit` waiting messages to `visit`, oldest first; those it returns True for
        are removed, the others stay where they were."""
        q = self._queues.get(queue)
        if q is None:
            return 0
        waiting = q.take_all()
        removed: set[int] = set()
        try:
            for index, delivery in enumerate(waiting[:limit]):
                if await visit(delivery):
                    removed.add(index)
        finally:
            for index, delivery in enumerate(waiting):
                if index not in removed:
                    q.put(delivery)
        return min(limit, len(waiting))

    def depth(self, queue: str) -> int:
        """Messages waiting in a queue, a retry queue included (tests and metrics)."""
        for retry_queues in self._retries.values():
            for retry_queue in retry_queues:
                if retry_queue.name == queue:
                    return len(retry_queue.parked)
        return self._queues[queue].depth()

    async def queue_depths(self, queues: list[str]) -> dict[str, int]:
        """Messages waiting in each existing queue (as RabbitBus.queue_depths)."""
        return {name: self._queues[name].depth() for name in queues if name in self._queues}
