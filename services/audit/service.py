"""The audit service: appends every `audit.record` to the hash-chained log."""

from __future__ import annotations

import json
from functools import partial

import trio

from services.audit import queries, store
from services.audit.log import AuditScope, ChainReport, advance_checkpoint, export, search, verify_chain
from shared.bus.api import Bus, Delivery, Reject
from shared.bus.middleware import traced
from shared.bus.rpc import rpc_server
from shared.bus.topology import AUDIT, AUDIT_QUERIES, topology_for
from shared.config import Settings
from shared.db.pool import Database
from shared.messages.audit import AuditRecord
from shared.messages.codec import decode
from shared.outages import keep_running, until_available

# the command line imports the log functions from here too (the console asks over the bus)
__all__ = ["AuditScope", "ChainReport", "export", "handle_record", "run_audit", "search", "verify_chain"]

MAX_RECORD_ID = 200  # a btree index entry has a size limit; ids are uuids or short keys
ANCHOR_EVERY = 5.0  # seconds: the most that a truncation of the newest records can go unnoticed

_TEXT_FIELDS = ("record_id", "service", "subject", "action", "request_id", "device_id",
                "branch_id", "outcome", "error_code", "trace_id")


def storable(record: AuditRecord) -> AuditRecord:
    """The record if PostgreSQL can store it as is; raises Reject (dead-letter) otherwise."""
    if not record.record_id or len(record.record_id) > MAX_RECORD_ID:
        raise Reject(f"record_id must be 1 to {MAX_RECORD_ID} characters")
    for name in _TEXT_FIELDS:
        value = getattr(record, name)
        if value is None:
            continue
        if "\x00" in value:
            raise Reject(f"{name} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Reject(f"{name} is not valid Unicode") from None
    try:
        json.dumps(record.detail, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError (lone surrogates) is a ValueError
        raise Reject(f"detail cannot be stored: {exc}") from None
    return record


def attested(delivery: Delivery) -> AuditRecord:
    """The record with service, subject and time taken from the sender's verified identity.

    A service vouches for what it reports, not for who it claims to be: a record is stored under
    the service that signed it (a component such as the device registry reports under the
    process it runs in: the console or the command line), and a body naming another subject
    than the signed one keeps that claim in `detail.claimed_subject` for whoever reads the log.
    """
    record = decode(AuditRecord, delivery.body)
    sender = delivery.sender
    if sender is None:
        raise Reject("an audit record without a verified service identity")
    subject = sender.subject if sender.subject is not None else sender.service
    detail = record.detail if record.subject == subject else {**record.detail, "claimed_subject": record.subject}
    return storable(record.model_copy(update={"service": sender.service, "subject": subject, "at": sender.at,
                                              "detail": detail}))


async def handle_record(db: Database, settings: Settings, delivery: Delivery) -> None:
    """Append one record (a redelivered record_id is stored once), then re-anchor the head."""
    if await append_record(db, delivery):
        await advance_checkpoint(db, settings)


async def append_record(db: Database, delivery: Delivery) -> bool:
    """Append one record; False when that record_id was already stored."""
    return await db.run(store.append_record, attested(delivery)) is not None


class Batcher:
    """Appends records in batches: every waiting handler's record goes into one transaction.

    A record is acked only after its batch committed; one append per transaction (lock, head
    read, insert, fsync'd commit) capped the whole product at a few hundred records a second.
    """

    def __init__(self, db: Database, max_batch: int = 500) -> None:
        self._db = db
        self._max_batch = max_batch
        self._waiting: list[tuple[AuditRecord, trio.MemorySendChannel[bool | BaseException]]] = []
        self._wake = trio.Event()

    async def append(self, record: AuditRecord) -> bool:
        """Queue `record` for the next batch; True once stored, False if it was a duplicate."""
        send, receive = trio.open_memory_channel[bool | BaseException](1)
        self._waiting.append((record, send))
        self._wake.set()
        result = await receive.receive()
        if isinstance(result, BaseException):
            raise result
        return result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._waiting:
                batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch:]
                try:
                    placed = await self._db.run(store.append_records, [r for r, _ in batch])
                except trio.Cancelled:
                    raise
                except Exception as exc:  # the handlers requeue their messages
                    for _, waiter in batch:
                        waiter.send_nowait(exc)
                    continue
                for (_, waiter), where in zip(batch, placed, strict=True):
                    waiter.send_nowait(where is not None)


class Anchoring:
    """Signs the next checkpoint after appends: at once after a quiet spell, then at most every
    `interval` seconds, and once more when the service stops.

    Signing and fsyncing a checkpoint in every anchor location on every append made the audit
    log the slowest part of a clear, and would grow the anchors by a line per record; records
    appended since the last checkpoint are hash-chained and anchored within `interval` (and at
    start-up after a crash).
    """

    def __init__(self, db: Database, settings: Settings, interval: float = ANCHOR_EVERY) -> None:
        self._db = db
        self._settings = settings
        self._interval = interval
        self._pending = trio.Event()

    def appended(self) -> None:
        self._pending.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await self._pending.wait()
                self._pending = trio.Event()
                # a database outage only delays the signature: the appends are hash-chained already
                await until_available("audit anchoring", advance_checkpoint, self._db, self._settings)
                await trio.sleep(self._interval)
        finally:
            if self._pending.is_set():  # anchor what the last interval appended before stopping
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await advance_checkpoint(self._db, self._settings)


async def run_audit(
    bus: Bus,
    db: Database,
    settings: Settings,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Consume the audit queue until cancelled."""
    await bus.declare(topology_for(AUDIT, AUDIT_QUERIES))
    # catch up on appends a crash left unanchored
    await until_available("audit anchoring", advance_checkpoint, db, settings)
    anchoring = Anchoring(db, settings)
    batcher = Batcher(db)

    async def handle(delivery: Delivery) -> None:
        if await batcher.append(attested(delivery)):
            anchoring.appended()

    handler = traced("audit", AUDIT.name, handle)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(keep_running, "audit anchoring", anchoring.run))
        await nursery.start(batcher.run)
        # many deliveries in flight fill each batch; they wait on the batcher, not on connections
        await nursery.start(partial(bus.consume, AUDIT.name, handler, prefetch=256))
        # front ends read the log through these answers, never through the table
        answers = traced("audit", AUDIT_QUERIES.name, rpc_server(bus, queries.operations(db, settings)))
        await nursery.start(partial(bus.consume, AUDIT_QUERIES.name, answers))
        task_status.started()
