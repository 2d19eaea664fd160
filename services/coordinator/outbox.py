"""The transactional outbox: events and audit records commit with the state they announce.

Staging functions are asyncio-flavoured (they take the transaction's connection); the relay
publishes committed rows in id order with publisher confirms and marks them published. A
crash between publish and mark republishes with the same message id, so consumers stay
idempotent. Rows of one ordering key (a request) are published strictly in order; different
keys go out in parallel.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog
import trio

from shared.audit import AUDIT_RECORD, SUBJECT_HEADER
from shared.bus.api import Bus, BusError
from shared.bus.topology import COMMANDS
from shared.db import Database
from shared.events import OutgoingMessage, event_messages
from shared.messages.audit import AuditRecord
from shared.messages.clear import Event
from shared.messages.codec import encode
from shared.outages import OUTAGE_ERRORS, describe

log = structlog.get_logger("clearcard.coordinator.outbox")
BATCH = 500


async def stage(conn: asyncpg.Connection, key: str, messages: Sequence[OutgoingMessage]) -> None:
    """Write messages to the outbox in the caller's transaction (a repeated message id is a no-op)."""
    await conn.executemany(
        "INSERT INTO outbox (exchange, routing_key, body, message_id, headers, ordering_key)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6) ON CONFLICT (message_id) DO NOTHING",
        [(m.exchange, m.routing_key, m.body, m.message_id, json.dumps(m.headers), key) for m in messages])


def event(ev: Event, *, message_id: str | None = None, reply_to: str | None = None,
          correlation_id: str | None = None) -> list[OutgoingMessage]:
    """An event (and its reply_to copy) as outbox messages."""
    return event_messages(ev, message_id=message_id, reply_to=reply_to, correlation_id=correlation_id)


def audit(*, service: str, subject: str, action: str, record_id: str, trace_id: str,
          request_id: str | None = None, device_id: str | None = None, branch_id: str | None = None,
          outcome: str | None = None, error_code: str | None = None,
          detail: dict[str, Any] | None = None) -> OutgoingMessage:
    """An audit record as an outbox message (the audit service stores a record id once)."""
    record = AuditRecord(record_id=record_id, service=service, subject=subject, action=action,
                         request_id=request_id, device_id=device_id, branch_id=branch_id,
                         outcome=outcome, error_code=error_code, trace_id=trace_id, detail=detail or {})
    return OutgoingMessage(COMMANDS, AUDIT_RECORD, encode(record), record_id, {SUBJECT_HEADER: subject})


async def _pending(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, exchange, routing_key, body, message_id, headers, ordering_key FROM outbox"
        " WHERE published_at IS NULL ORDER BY id LIMIT $1", limit)


async def _mark(conn: asyncpg.Connection, ids: list[int]) -> None:
    await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", ids)


async def backlog(conn: asyncpg.Connection) -> int:
    """Messages committed but not yet published."""
    return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


class Relay:
    """Publishes the outbox; run by the elected leader only, so one relay orders every key."""

    def __init__(self, bus: Bus, db: Database, *, poll: float = 0.2) -> None:
        self._bus = bus
        self._db = db
        self._poll = poll
        self._wake = trio.Event()

    def wake(self) -> None:
        """Something was just committed to the outbox."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish until cancelled; a broker outage only delays (BusError: back off, retry)."""
        task_status.started()
        backoff = 0.05
        while True:
            self._wake = trio.Event()
            sent: int | None = None
            try:
                sent = await self.publish_batch()
            except* OUTAGE_ERRORS as group:
                log.info("outbox relay waiting for the broker or database", error=describe(group))
            if sent is None:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            if sent < BATCH:
                with trio.move_on_after(self._poll):
                    await self._wake.wait()

    async def publish_batch(self) -> int:
        """Publish one batch; returns how many rows it read. Raises BusError if a key stalled."""
        rows = await self._db.run(_pending, BATCH)
        groups: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for row in rows:
            groups[row["ordering_key"]].append(row)
        done: list[int] = []
        failed: list[BusError] = []

        async def publish_group(group: list[asyncpg.Record]) -> None:
            for row in group:  # in order; stop at the first failure so nothing overtakes it
                headers = json.loads(row["headers"]) if isinstance(row["headers"], str) else dict(row["headers"])
                correlation_id = headers.pop("correlation_id", None)
                try:
                    await self._bus.publish(row["exchange"], row["routing_key"], bytes(row["body"]),
                                            message_id=row["message_id"], correlation_id=correlation_id,
                                            headers=headers or None)
                except BusError as exc:
                    failed.append(exc)
                    return
                done.append(row["id"])

        async with trio.open_nursery() as nursery:
            for group in groups.values():
                nursery.start_soon(publish_group, group)
        if done:
            await self._db.run(_mark, done)
        if failed:
            raise failed[0]
        return len(rows)

