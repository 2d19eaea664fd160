"""Dead letters for operators: which queues hold some, what they are and why, replaying them.

`clearcard dlq` and the console's admin routes call these. They work on either transport
through two operator extras each one provides: `queue_depth(name)` and `drain(name, visit,
limit)`. A replay publishes the message again to its work queue (through the default exchange,
so no other queue sees it twice) with a fresh retry budget, keeping its message id, so an
idempotent handler never applies it twice; only then is it removed from the dead-letter queue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.bus.api import Bus, Delivery
from shared.bus.retry import (
    DEAD_AT,
    DEAD_REASON,
    EXCHANGE,
    FIRST_FAILURE,
    LAST_ERROR,
    RETRIES,
    ROUTING_KEY,
    fresh_headers,
)
from shared.bus.topology import DEFAULT, WORK_QUEUES, gateway_queue, gateway_shard_name
from shared.text import clean_text

REPLAYED_BY = "x-clearcard-replayed-by"
SHOWN_BODY = 4096  # characters of a body shown to an operator
MAX_SHARDS = 64
SCAN_LIMIT = 10_000  # dead letters looked through for given message ids, per call
_SECRET_HEADERS = {"authorization": "Bearer (hidden)", "x-clearcard-service": "(service identity)"}
# why the broker itself dead-lettered a message (x-death reasons)
_BROKER_REASONS = {
    "delivery_limit": "returned to its queue too often (its consumer kept failing or stopping while holding it)",
    "rejected": "rejected by its consumer",
    "expired": "expired",
    "maxlen": "its queue was full",
}


class DeadLetterBus(Bus, Protocol):
    async def queue_depth(self, queue: str) -> int | None: ...

    async def drain(self, queue: str, visit: Callable[[Delivery], Awaitable[bool]], *, limit: int) -> int: ...


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message as an operator sees it (secrets hidden, body bounded)."""

    queue: str  # the work queue it was dead-lettered from
    message_id: str | None
    exchange: str  # as first published
    routing_key: str
    reason: str
    dead_at: str | None
    retries: int
    first_failure: str | None
    last_error: str | None
    size: int
    body: str
    headers: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QueueCount:
    queue: str  # the work queue
    dead_letter_queue: str
    messages: int


def work_queue_of(name: str) -> str:
    """`audit`, `clearcard.audit` or `clearcard.audit.dead`: the work queue `clearcard.audit`."""
    name = name.removesuffix(".dead")
    return name if name.startswith("clearcard.") else f"clearcard.{name}"


def _ms_iso(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC).isoformat().replace("+00:00", "Z")
    return None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return clean_text(str(value), 500)


def _first_death(headers: dict[str, Any], queue: str) -> dict[str, Any]:
    """The broker's x-death entry for `queue` (the broker's own dead-lettering), if any."""
    for entry in headers.get("x-death") or ():
        if isinstance(entry, dict) and _text(entry.get("queue", "")) == queue:
            return entry
    return {}


def _origin(delivery: Delivery, queue: str) -> tuple[str, str]:
    headers = dict(delivery.headers)
    if ROUTING_KEY in headers:
        return _text(headers.get(EXCHANGE, "")), _text(headers[ROUTING_KEY])
    death = _first_death(headers, queue)
    keys = death.get("routing-keys") or []
    if keys:
        return _text(death.get("exchange", "")), _text(keys[0])
    return delivery.exchange, delivery.routing_key


def describe_letter(delivery: Delivery, queue: str) -> DeadLetter:
    """What a dead-lettered delivery is, where it came from and why it died."""
    headers = dict(delivery.headers)
    exchange, routing_key = _origin(delivery, queue)
    death = _first_death(headers, queue)
    reason = _text(headers[DEAD_REASON]) if DEAD_REASON in headers else _BROKER_REASONS.get(
        _text(death.get("reason") or headers.get("x-first-death-reason") or ""), "dead-lettered by the broker")
    dead_at = _ms_iso(headers.get(DEAD_AT))
    if dead_at is None and isinstance(death.get("time"), datetime):
        dead_at = death["time"].astimezone(UTC).isoformat().replace("+00:00", "Z")
    shown = {k: _SECRET_HEADERS.get(k.lower(), v if isinstance(v, (int, float, bool)) else _text(v))
             for k, v in headers.items() if k != "x-death"}
    retries = headers.get(RETRIES)
    return DeadLetter(
        queue=queue, message_id=delivery.message_id, exchange=exchange, routing_key=routing_key,
        reason=reason, dead_at=dead_at, retries=retries if isinstance(retries, int) else 0,
        first_failure=_ms_iso(headers.get(FIRST_FAILURE)),
        last_error=_text(headers[LAST_ERROR]) if LAST_ERROR in headers else None,
        size=len(delivery.body), body=clean_text(delivery.body.decode("utf-8", "replace"), SHOWN_BODY),
        headers=shown)


async def counts(bus: DeadLetterBus, gateway_ids: Iterable[str] = ()) -> list[QueueCount]:
    """Every dead-letter queue that exists, with how many messages it holds."""
    found = []
    for queue in await _work_queues(bus, gateway_ids):
        dead = f"{queue}.dead"
        depth = await bus.queue_depth(dead)
        if depth is not None:
            found.append(QueueCount(queue, dead, depth))
    return found


async def _work_queues(bus: DeadLetterBus, gateway_ids: Iterable[str]) -> list[str]:
    names = [spec.name for spec in WORK_QUEUES]
    for gateway_id in sorted(set(gateway_ids)):
        names.append(gateway_queue(gateway_id).name)
        for shard in range(MAX_SHARDS):  # a sharded gateway's shards, as many as exist
            name = gateway_shard_name(gateway_id, shard)
            if await bus.queue_depth(name) is None:
                break
            names.append(name)
    return names


async def show(bus: DeadLetterBus, queue: str, *, limit: int = 50,
               message_ids: set[str] | None = None) -> list[DeadLetter]:
    """Up to `limit` dead letters of a work queue (or those with the given message ids), oldest first."""
    queue = work_queue_of(queue)
    shown: list[DeadLetter] = []

    async def visit(delivery: Delivery) -> bool:
        if message_ids is None or delivery.message_id in message_ids:
            shown.append(describe_letter(delivery, queue))
        return False  # looked at, left where it is

    depth = await bus.queue_depth(f"{queue}.dead") or 0
    await bus.drain(f"{queue}.dead", visit, limit=min(depth, SCAN_LIMIT) if message_ids is not None else limit)
    return shown[:limit]


Seal = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]


async def replay(bus: DeadLetterBus, queue: str, *, replayed_by: str, message_ids: set[str] | None = None,
                 limit: int = 1000, publisher: Bus | None = None, seal: Seal | None = None) -> list[DeadLetter]:
    """Publish dead letters of a work queue to it again (all, or those with the given message ids).

    Each goes out as it was signed (through `publisher`, an unsigned transport), with what
    `seal(queue, headers)` adds: the replaying tool's voucher (shared/authz/vouchers.py).
    """
    queue = work_queue_of(queue)
    replayed: list[DeadLetter] = []

    async def visit(delivery: Delivery) -> bool:
        if message_ids is not None and delivery.message_id not in message_ids:
            return False
        letter = describe_letter(delivery, queue)
        headers = {**fresh_headers(delivery.headers), EXCHANGE: letter.exchange, ROUTING_KEY: letter.routing_key,
                   REPLAYED_BY: replayed_by}
        if seal is not None:
            headers.update(seal(queue, headers))
        await (publisher or bus).publish(DEFAULT, queue, delivery.body, message_id=delivery.message_id,
                                         correlation_id=delivery.correlation_id, reply_to=delivery.reply_to,
                                         headers=headers)
        replayed.append(letter)
        return True  # published again (confirmed): no longer a dead letter

    depth = await bus.queue_depth(f"{queue}.dead") or 0
    await bus.drain(f"{queue}.dead", visit, limit=min(depth, limit if message_ids is None else SCAN_LIMIT))
    return replayed
