"""The audit log's repository: asyncio-flavoured functions run through `Database.run`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.audit.chain import FIELDS, GENESIS, ChainRow, chain_hash, record_fields
from shared.messages.audit import AuditRecord

# Appends take this transaction-scoped advisory lock, so replicas extend one chain.
APPEND_LOCK = 0x41554449  # 'AUDI'

_COLUMNS = ", ".join(FIELDS)
_SELECT = f"SELECT seq, {_COLUMNS}, prev_hash, hash FROM audit_log"


@dataclass(frozen=True)
class AuditScope:
    """What a branch-scoped reader may see: records of these branches or of these devices."""

    branches: tuple[str, ...]
    device_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Appended:
    seq: int
    hash: str


async def append_record(conn: asyncpg.Connection, record: AuditRecord) -> Appended | None:
    """Append one record at the head of the chain; None if its record_id is already stored."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    if await conn.fetchval("SELECT 1 FROM audit_log WHERE record_id = $1", record.record_id):
        return None
    head = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev_hash = (head["seq"] + 1, head["hash"]) if head else (1, GENESIS)
    fields = record_fields(record)
    digest = chain_hash(seq, fields, prev_hash)
    placeholders = ", ".join(f"${n}" for n in range(2, len(FIELDS) + 2))
    await conn.execute(
        f"INSERT INTO audit_log (seq, {_COLUMNS}, prev_hash, hash) "
        f"VALUES ($1, {placeholders}, ${len(FIELDS) + 2}, ${len(FIELDS) + 3})",
        seq,
        *(fields[name] for name in FIELDS),
        prev_hash,
        digest,
    )
    return Appended(seq, digest)


async def append_records(conn: asyncpg.Connection, records: list[AuditRecord]) -> list[Appended | None]:
    """Append a batch in one transaction (one lock, one head read, one insert round trip).

    Returns, per record in order, where it landed, or None when its record_id was already stored
    (before this batch or earlier in it).
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    ids = [r.record_id for r in records]
    stored = {row["record_id"] for row in await conn.fetch(
        "SELECT record_id FROM audit_log WHERE record_id = ANY($1::text[])", ids)}
    head = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev_hash = (head["seq"], head["hash"]) if head else (0, GENESIS)
    placed: list[Appended | None] = []
    rows = []
    for record in records:
        if record.record_id in stored:
            placed.append(None)
            continue
        stored.add(record.record_id)
        seq += 1
        fields = record_fields(record)
        digest = chain_hash(seq, fields, prev_hash)
        rows.append((seq, *(fields[name] for name in FIELDS), prev_hash, digest))
        placed.append(Appended(seq, digest))
        prev_hash = digest
    if rows:
        placeholders = ", ".join(f"${n}" for n in range(2, len(FIELDS) + 2))
        await conn.executemany(
            f"INSERT INTO audit_log (seq, {_COLUMNS}, prev_hash, hash) "
            f"VALUES ($1, {placeholders}, ${len(FIELDS) + 2}, ${len(FIELDS) + 3})",
            rows,
        )
    return placed


def _chain_row(row: asyncpg.Record) -> ChainRow:
    return ChainRow(
        seq=row["seq"],
        fields={name: row[name] for name in FIELDS},
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


async def rows_after(conn: asyncpg.Connection, after_seq: int, limit: int) -> list[ChainRow]:
    """Up to `limit` rows with seq > after_seq, in seq order."""
    rows = await conn.fetch(f"{_SELECT} WHERE seq > $1 ORDER BY seq LIMIT $2", after_seq, limit)
    return [_chain_row(r) for r in rows]


async def hash_at(conn: asyncpg.Connection, seq: int) -> str | None:
    """The stored hash of record `seq`, or None if there is no such record."""
    value = await conn.fetchval("SELECT hash FROM audit_log WHERE seq = $1", seq)
    return None if value is None else str(value)


def as_document(row: asyncpg.Record) -> dict[str, Any]:
    """A row as the export and search show it (JSON-ready)."""
    doc: dict[str, Any] = {"seq": row["seq"]}
    for name in FIELDS:
        doc[name] = row[name]
    doc["at"] = row["at"].isoformat()
    doc["detail"] = json.loads(row["detail"])
    doc["prev_hash"] = row["prev_hash"]
    doc["hash"] = row["hash"]
    return doc


async def select_records(
    conn: asyncpg.Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id: str | None = None,
    device_id: str | None = None,
    branch_id: str | None = None,
    subject: str | None = None,
    limit: int | None = None,
    scope: AuditScope | None = None,
    after_seq: int | None = None,
) -> list[dict[str, Any]]:
    """Records matching every given filter (and within `scope`), oldest (lowest seq) first;
    `after_seq` starts after that record (the cursor of a page)."""
    clauses: list[str] = []
    args: list[Any] = []
    for column, op, value in (
        ("seq", ">", after_seq),
        ("at", ">=", since),
        ("at", "<", until),
        ("request_id", "=", request_id),
        ("device_id", "=", device_id),
        ("branch_id", "=", branch_id),
        ("subject", "=", subject),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} {op} ${len(args)}")
    if scope is not None:
        args.extend([list(scope.branches), list(scope.device_ids)])
        clauses.append(f"(branch_id = ANY(${len(args) - 1}::text[]) OR device_id = ANY(${len(args)}::text[]))")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    tail = ""
    if limit is not None:
        args.append(limit)
        tail = f" LIMIT ${len(args)}"
    rows = await conn.fetch(f"{_SELECT}{where} ORDER BY seq{tail}", *args)
    return [as_document(r) for r in rows]
