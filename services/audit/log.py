"""Reading and checking the audit log: what the CLI and the console call."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
import trio

from services.audit import checkpoint, store
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
    checkpoint_seq: int | None = None  # the signed head the log was held against, if any

    def describe(self) -> str:
        """One line for a person: `ok N records` or what is wrong where."""
        if self.ok:
            return f"ok {self.count} records"
        assert self.first_bad is not None
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


async def verify_chain(db: Database, settings: Settings) -> ChainReport:
    """Re-check every record's hash and link, and hold the log against the signed checkpoint."""
    # Hold the writers' lock, so a checkpoint being written (its key created an instant before
    # it) is never mistaken for a removed one.
    fd = await trio.to_thread.run_sync(checkpoint.lock_writers, settings)
    try:
        return await _verify_chain(db, settings)
    finally:
        os.close(fd)


async def _verify_chain(db: Database, settings: Settings) -> ChainReport:
    try:
        anchor = await trio.to_thread.run_sync(checkpoint.read_checkpoint, settings)
    except checkpoint.CheckpointInvalid as exc:
        return ChainReport(ok=False, count=0, first_bad=BadRecord(0, str(exc)))
    walker = ChainWalker()
    checked_anchor = anchor is None
    while True:
        rows = await db.run(store.rows_after, walker.last_seq, _BATCH)
        if not rows:
            break
        for row in rows:
            bad = walker.feed(row)
            if bad is not None:
                return ChainReport(False, walker.count, bad, anchor.seq if anchor else None)
            if anchor is not None and row.seq == anchor.seq:
                checked_anchor = True
                if row.hash != anchor.hash:
                    bad = BadRecord(
                        row.seq,
                        f"record {row.seq} differs from the signed checkpoint "
                        "(records up to it were rewritten)",
                    )
                    return ChainReport(False, walker.count, bad, anchor.seq)
    if anchor is not None and not checked_anchor:
        bad = BadRecord(
            walker.last_seq + 1,
            f"records {walker.last_seq + 1} to {anchor.seq} are missing "
            f"(the signed checkpoint holds {anchor.seq} records, the log {walker.last_seq})",
        )
        return ChainReport(False, walker.count, bad, anchor.seq)
    if anchor is None and walker.count > 0 and await trio.to_thread.run_sync(
        checkpoint.signing_key_exists, settings
    ):
        # the service signs a checkpoint after its appends; a key without one means it was removed
        bad = BadRecord(0, f"the signed checkpoint {checkpoint.checkpoint_path(settings)} is missing")
        return ChainReport(False, walker.count, bad, None)
    return ChainReport(True, walker.count, None, anchor.seq if anchor else None)


async def advance_checkpoint(db: Database, settings: Settings) -> int | None:
    """Move the signed checkpoint to the chain's head, only over rows that check out.

    Returns the new checkpoint seq (None if unchanged). A chain that does not extend the last
    checkpoint is never signed: that would launder a rewrite.
    """
    fd = await trio.to_thread.run_sync(checkpoint.lock_writers, settings)
    try:
        try:
            anchor = await trio.to_thread.run_sync(checkpoint.read_checkpoint, settings)
        except checkpoint.CheckpointInvalid as exc:
            log.error("audit checkpoint not advanced", reason=str(exc))
            return None
        walker = ChainWalker()
        if anchor is not None:
            if await db.run(store.hash_at, anchor.seq) != anchor.hash:
                log.error("audit checkpoint not advanced: the log differs at the checkpoint",
                          checkpoint_seq=anchor.seq)
                return None
            walker = ChainWalker(anchor.seq, anchor.hash)
        bad = await _walk(db, walker)
        if bad is not None:
            log.error("audit checkpoint not advanced: the chain is broken",
                      seq=bad.seq, reason=bad.reason)
            return None
        if walker.last_seq == (anchor.seq if anchor else 0):
            return None
        await trio.to_thread.run_sync(
            checkpoint.write_checkpoint, settings, walker.last_seq, walker.last_hash
        )
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
