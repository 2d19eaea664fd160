"""The bus interface every transport implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import trio

from shared.bus.topology import Topology


class BusError(Exception):
    """The broker could not take or deliver a message (connection lost, nack, closed)."""


class Reject(Exception):
    """Raised by a handler: the message can never be processed; dead-letter it."""


class RetryLater(Exception):
    """Raised by a handler: something it depends on is away (a mail server, a peer's claim);
    bring the message back after a while, as for a database or broker outage. `headers` go
    with the parked copy (a middleware's note to its later self, such as a voucher)."""

    def __init__(self, reason: str, *, headers: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Attempt:
    """Where a delivery stands in its queue's retry rules (shared/bus/retry.py)."""

    retries: int = 0  # times it was retried later after an outage
    first_failure: float | None = None  # epoch seconds of its first failure
    budget_spent: bool = False  # an outage now dead-letters it
    last_delivery: bool = False  # a bug now dead-letters it


@dataclass(frozen=True)
class Sender:
    """The service that signed a message (shared/authz/identity.py), as verified on delivery."""

    service: str
    subject: str | None  # on whose behalf it acted, when the sender said so (audit records)
    at: datetime  # when it signed the message


@dataclass(frozen=True)
class Delivery:
    """One message handed to a handler."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    # how many times the broker handed this message out before (quorum queues count it)
    delivery_count: int = 0
    attempt: Attempt = field(default_factory=Attempt)
    sender: Sender | None = None  # set once the service identity verified (never by a transport)


Handler = Callable[[Delivery], Awaitable[None]]


class Bus(Protocol):
    """What services may do with the broker; one object owns the connection."""

    async def declare(self, topology: Topology) -> None:
        """Declare exchanges, queues, bindings and their dead-letter companions."""

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
        """Publish persistently and wait for the broker's confirm."""

    async def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        prefetch: int = 16,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run `handler` for each delivery of `queue` until cancelled (reports ready once consuming)."""

    async def declare_reply_queue(self) -> str:
        """An exclusive, auto-deleted queue for this process's RPC replies; returns its name."""

    async def bind(self, queue: str, exchange: str, pattern: str) -> None:
        """Bind a queue (typically a reply queue following events) to an exchange."""
