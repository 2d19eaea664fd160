"""Request/reply over the bus: commands to the gateway, backup service and bureau.

Callers bound the wait themselves (`trio.fail_after`); a reply that never comes is their
timeout, never a hang. Servers answer every command, including malformed ones, so no caller
waits on input that could not be read.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
import trio
from pydantic import BaseModel

from shared import metrics
from shared.bus.api import Bus, Delivery, Handler
from shared.bus.middleware import traced
from shared.bus.topology import DEFAULT
from shared.errors import ClearCardError, ErrorCode
from shared.messages.clear import Error
from shared.messages.codec import DecodeError, decode, encode
from shared.messages.rpc import Reply
from shared.outages import ServiceOutage, describe, is_outage

log = structlog.get_logger("clearcard.rpc")

R = TypeVar("R", bound=BaseModel)
Q = TypeVar("Q", bound=BaseModel)


class RpcClient:
    """Sends commands and waits for their replies on this process's own reply queue."""

    def __init__(self, bus: Bus, reply_queue: str) -> None:
        self._bus = bus
        self._reply_queue = reply_queue
        self._pending: dict[str, trio.MemorySendChannel[Reply]] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, bus: Bus, service: str) -> AsyncIterator[RpcClient]:
        """Declare a reply queue and listen on it for as long as the block runs."""
        client = cls(bus, await bus.declare_reply_queue())
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: bus.consume(
                    client._reply_queue,
                    traced(service, client._reply_queue, client._on_reply),
                    prefetch=256,
                    task_status=task_status,
                )
            )
            yield client
            nursery.cancel_scope.cancel()

    async def _on_reply(self, delivery: Delivery) -> None:
        waiter = self._pending.pop(delivery.correlation_id or "", None)
        if waiter is None:
            return  # the caller gave up (timeout); nothing waits for this answer any more
        try:
            reply = decode(Reply, delivery.body)
        except DecodeError as exc:
            reply = Reply(ok=False, error=Error.of(ErrorCode.INTERNAL, f"unreadable reply: {exc}"))
        waiter.send_nowait(reply)

    async def call(
        self,
        exchange: str,
        routing_key: str,
        request: BaseModel,
        reply_model: type[R],
        *,
        headers: Mapping[str, Any] | None = None,
    ) -> R:
        """Send one command and return its decoded result; a refusal raises ClearCardError."""
        correlation_id = uuid.uuid4().hex
        metrics.RPC_CALLS.labels(routing_key.rsplit(".", 1)[-1]).inc()
        send, receive = trio.open_memory_channel[Reply](1)
        self._pending[correlation_id] = send
        try:
            await self._bus.publish(
                exchange,
                routing_key,
                encode(request),
                message_id=correlation_id,
                correlation_id=correlation_id,
                reply_to=self._reply_queue,
                headers=headers,
            )
            reply = await receive.receive()
        finally:
            self._pending.pop(correlation_id, None)
        if reply.outage:
            raise ServiceOutage(f"{routing_key}: {reply.error.message if reply.error else 'outage'}")
        if not reply.ok:
            error = reply.error or Error.of(ErrorCode.INTERNAL)
            raise ClearCardError(error.code, error.message)
        try:
            return reply_model.model_validate(reply.result or {})
        except ValueError as exc:
            raise ClearCardError(ErrorCode.INTERNAL, f"malformed reply to {routing_key}") from exc


@dataclass(frozen=True)
class Operation:
    """One command a service answers: its request model and an async function producing the reply."""

    request_model: type[BaseModel]
    run: Callable[[Any], Awaitable[BaseModel]]
    # False for plain reads: running one again changes nothing, and remembering thousands of
    # large answers (a period's pages) would hold the period in memory after all
    remember: bool = True


# How many answered commands a server remembers, to answer a redelivery without running it again.
ANSWERED_MEMORY = 4096


def rpc_server(bus: Bus, operations: Mapping[str, Operation]) -> Handler:
    """A handler answering commands whose routing key ends in an operation name.

    A command redelivered after its answer left (the server's connection dropped before its ack
    reached the broker) gets the same answer again instead of running twice: running `challenge`
    twice would replace the challenge the caller's package is bound to. Every call has a fresh
    message id, so a caller's own retry is never mistaken for a redelivery.
    """
    answered: OrderedDict[str, bytes] = OrderedDict()  # encoded: far smaller than the Reply objects
    running: dict[str, trio.Event] = {}

    async def handle(delivery: Delivery) -> None:
        key = delivery.message_id
        while key and key in running:
            await running[key].wait()
        body = answered.get(key) if key else None
        if body is None:
            if key:
                running[key] = trio.Event()
            try:
                reply = await _answer(delivery)
                body = encode(reply)
                op = operations.get(delivery.routing_key.rsplit(".", 1)[-1])
                # an outage answer is not the command's answer: a redelivery runs it again
                if key and not reply.outage and (op is None or op.remember):
                    answered[key] = body
                    if len(answered) > ANSWERED_MEMORY:
                        answered.popitem(last=False)
            finally:
                if key:
                    running.pop(key).set()
        if delivery.reply_to:
            await bus.publish(
                DEFAULT,
                delivery.reply_to,
                body,
                correlation_id=delivery.correlation_id,
                message_id=uuid.uuid4().hex,
            )

    async def _answer(delivery: Delivery) -> Reply:
        op_name = delivery.routing_key.rsplit(".", 1)[-1]
        op = operations.get(op_name)
        try:
            if op is None:
                raise ClearCardError(ErrorCode.INVALID_REQUEST, f"unknown command {op_name!r}")
            try:
                request = decode(op.request_model, delivery.body)
            except DecodeError as exc:
                raise ClearCardError(ErrorCode.INVALID_REQUEST, exc.reason) from None
            result = await op.run(request)
            reply = Reply(ok=True, result=result.model_dump(mode="json"))
        except ClearCardError as exc:
            reply = Reply(ok=False, error=Error.of(exc.code, exc.message))
        except trio.Cancelled:
            raise
        except Exception as exc:  # a group too (an operation's nursery)
            if is_outage(exc):  # the database or broker is away for a moment: the caller waits
                log.warning("command met an outage", op=op_name, error=describe(exc))
                return Reply(ok=False, outage=True, error=Error.of(
                    ErrorCode.TIMEOUT, "The service could not reach its database or broker; it will be retried."))
            # a bug must answer the caller, not leave it waiting
            log.error("command failed", op=op_name, exc_info=exc)
            reply = Reply(ok=False, error=Error.of(ErrorCode.INTERNAL))
        return reply

    return handle
