"""Reading and checking the audit log: what the CLI and the console call."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
import trio

from services.audit import anchors, checkpoint, store
from services.audit.chain import BadRecord, ChainWalker
from services.audit.store import AuditScope
from shared.config import Settings
from shared.db.pool import Database
from shared.messages.audit import AuditRecord

log = structlog.get_logger("clearcard.audit")

_BATCH = 2000


@dataclass(frozen=True)
class ChainReport:
    """The outcome of `verify_chain`: `ok` with `count` records, or the first bad record."""

    ok: bool
    count: int
    first_bad: BadRecord | None = None
    checkpoint_seq: int | None = None  # the newest signed head the log was held against, if any
    anchored: bool = True  # False: records exist but no signed checkpoint vouches for them

    def describe(self) -> str:
        """One line for a person: `ok N records`, `not anchored: ...` or what is wrong where."""
        if self.ok:
            return f"ok {self.count} records"
        assert self.first_bad is not None
        if not self.anchored:
            return f"not anchored: {self.first_bad.reason}"
        return f"bad record {self.first_bad.seq}: {self.first_bad.reason}"


async def _walk(db: Database, walker: ChainWalker) -> BadRecord | None:
    """Feed the walker every stored row after its position."""
    while True:
        rows = await db.run(store.rows_after, walker.last_seq, _BATCH)
        if not rows:
            return None
        for row in rows:
            bad = walker.feed(row)
            if bad is not None:
                return bad


def _survey(settings: Settings) -> checkpoint.Checkpoint | None:
    """Check the whole chain of checkpoints (links, and the newest one's signature); its newest."""
    public = anchors.public_key(settings, checkpoint.local_public_key(settings))
    newest = None
    for newest in anchors.checkpoints(settings):  # noqa: B007 (each is checked as it streams by)
        pass
    if newest is not None:
        if public is None:
            raise checkpoint.CheckpointInvalid(
                f"checkpoints exist but the audit key {checkpoint.key_path(settings)} is missing")
        checkpoint.check_signature(public, newest)
    return newest


class _Upto:
    """The checkpoints in order, handed out up to a record seq at a time (from a thread)."""

    def __init__(self, settings: Settings) -> None:
        self._stream = anchors.checkpoints(settings)
        self._next: checkpoint.Checkpoint | None = None

    def take(self, upto_seq: float) -> list[checkpoint.Checkpoint]:
        taken: list[checkpoint.Checkpoint] = []
        while True:
            if self._next is None:
                self._next = next(self._stream, None)
                if self._next is None:
                    return taken
            if self._next.seq > upto_seq:
                return taken
            taken.append(self._next)
            self._next = None


async def verify_chain(db: Database, settings: Settings) -> ChainReport:
    """Re-check every record's hash and link, the chain of signed checkpoints, and every
    checkpoint against the record it names; a log with records and no checkpoint is not anchored."""
    # Hold the writers' lock, so a checkpoint being written is never taken for a broken one.
    fd = await trio.to_thread.run_sync(anchors.lock_writers, settings)
    try:
        return await _verify_chain(db, settings)
    finally:
        os.close(fd)


async def _verify_chain(db: Database, settings: Settings) -> ChainReport:
    try:
        newest = await trio.to_thread.run_sync(_survey, settings)
    except checkpoint.CheckpointInvalid as exc:
        return ChainReport(ok=False, count=0, first_bad=BadRecord(0, str(exc)))
    head = newest.seq if newest else None
    stream = _Upto(settings)
    walker = ChainWalker()
    while True:
        rows = await db.run(store.rows_after, walker.last_seq, _BATCH)
        if not rows:
            break
        due: dict[int, list[checkpoint.Checkpoint]] = {}
        for anchor in await trio.to_thread.run_sync(stream.take, rows[-1].seq):
            due.setdefault(anchor.seq, []).append(anchor)
        for row in rows:
            bad = walker.feed(row)
            if bad is not None:
                return ChainReport(False, walker.count, bad, head)
            for anchor in due.get(row.seq, ()):
                if anchor.hash != row.hash:
                    bad = BadRecord(row.seq, f"record {row.seq} differs from signed checkpoint {anchor.n} "
                                             "(records up to it were rewritten)")
                    return ChainReport(False, walker.count, bad, head)
    beyond = await trio.to_thread.run_sync(stream.take, float("inf"))
    if beyond:
        last = beyond[-1]
        bad = BadRecord(walker.last_seq + 1,
                        f"records {walker.last_seq + 1} to {last.seq} are missing "
                        f"(signed checkpoint {last.n} holds {last.seq} records, the log {walker.last_seq})")
        return ChainReport(False, walker.count, bad, head)
    if newest is None and walker.count > 0:
        where = ", ".join(str(p) for p in settings.audit_anchors)
        bad = BadRecord(0, f"{walker.count} records and no signed checkpoint in {where} "
                           "(the audit service anchors the log after its appends; CLEARCARD_AUDIT_ANCHORS)")
        return ChainReport(False, walker.count, bad, None, anchored=False)
    return ChainReport(True, walker.count, None, head)


async def advance_checkpoint(db: Database, settings: Settings) -> int | None:
    """Sign the chain's head as the next checkpoint, only over rows that check out.

    Returns the new checkpoint's seq (None if unchanged). A chain that does not extend the last
    checkpoint is never signed: that would launder a rewrite.
    """
    fd = await trio.to_thread.run_sync(anchors.lock_writers, settings)
    try:
        key = await trio.to_thread.run_sync(checkpoint.load_or_create_key, settings)
        try:
            last = await trio.to_thread.run_sync(anchors.newest, settings, key.public_key())
        except checkpoint.CheckpointInvalid as exc:
            log.error("audit checkpoint not advanced", reason=str(exc))
            return None
        walker = ChainWalker()
        if last is not None:
            if await db.run(store.hash_at, last.seq) != last.hash:
                log.error("audit checkpoint not advanced: the log differs at the checkpoint",
                          checkpoint_seq=last.seq)
                return None
            walker = ChainWalker(last.seq, last.hash)
        bad = await _walk(db, walker)
        if bad is not None:
            log.error("audit checkpoint not advanced: the chain is broken", seq=bad.seq, reason=bad.reason)
            return None
        if walker.last_seq == (last.seq if last else 0):
            return None
        signed = checkpoint.sign_next(key, last, walker.last_seq, walker.last_hash)
        await trio.to_thread.run_sync(anchors.append, settings, signed, key.public_key().public_bytes_raw())
        return walker.last_seq
    finally:
        os.close(fd)


async def export(db: Database, since: datetime | None = None, *,
                 scope: AuditScope | None = None) -> list[dict[str, Any]]:
    """Every record (at or after `since`, within `scope`), oldest first, as JSON-ready dicts."""
    return await db.run(store.select_records, since=since, scope=scope)


async def search(
    db: Database,
    *,
    request_id: str | None = None,
    device_id: str | None = None,
    branch_id: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
    scope: AuditScope | None = None,
) -> list[dict[str, Any]]:
    """Records matching every given filter (time range is [since, until)) within `scope`, oldest first."""
    return await db.run(
        store.select_records,
        request_id=request_id,
        device_id=device_id,
        branch_id=branch_id,
        subject=subject,
        since=since,
        until=until,
        limit=limit,
        scope=scope,
    )


async def append(db: Database, record: AuditRecord) -> int | None:
    """Append one record straight to the chain (for processes without a broker, e.g. the CLI on
    the embedded bus); returns its seq, or None if its record_id was stored already. The signed
    checkpoint is left to the audit service, which re-anchors over such rows on its next append."""
    appended = await db.run(store.append_record, record)
    return None if appended is None else appended.seq
