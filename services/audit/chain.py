"""The hash chain of the audit log: canonical encoding, hashing and checking, without I/O.

Row n stores hash_n = SHA-256(canonical(seq, fields, prev_hash)) with prev_hash = hash_{n-1}
(64 zeros for the first row). The encoding is sorted-key, ASCII-only compact JSON, so it is the
same on every Python and PostgreSQL version; `detail` enters as the exact JSON text stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.messages.audit import AuditRecord

GENESIS = "0" * 64

# The record fields a row stores and its hash covers, in the AuditRecord's words.
FIELDS: tuple[str, ...] = (
    "record_id",
    "at",
    "service",
    "subject",
    "action",
    "request_id",
    "device_id",
    "branch_id",
    "outcome",
    "error_code",
    "trace_id",
    "detail",
)


def canonical_at(at: datetime) -> str:
    """A timestamp as the chain hashes it: UTC, microseconds (PostgreSQL's precision)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def detail_text(detail: Mapping[str, Any]) -> str:
    """The exact JSON text stored for `detail` (and hashed)."""
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def record_fields(record: AuditRecord) -> dict[str, Any]:
    """The stored fields of a record; `at` as a datetime, `detail` as its stored JSON text."""
    at = record.at if record.at.tzinfo is not None else record.at.replace(tzinfo=UTC)
    fields = {name: getattr(record, name) for name in FIELDS}
    fields["at"] = at
    fields["detail"] = detail_text(record.detail)
    return fields


def chain_hash(seq: int, fields: Mapping[str, Any], prev_hash: str) -> str:
    """hash_n over (seq, fields, prev_hash)."""
    doc: dict[str, Any] = {name: fields.get(name) for name in FIELDS}
    doc["at"] = canonical_at(fields["at"])
    doc["seq"] = seq
    doc["prev_hash"] = prev_hash
    encoded = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class ChainRow:
    """One stored row as read back from the database."""

    seq: int
    fields: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class BadRecord:
    """The first record where the chain breaks, and why (plain words)."""

    seq: int
    reason: str


class ChainWalker:
    """Checks rows in seq order; resumable from a known-good (seq, hash)."""

    def __init__(self, last_seq: int = 0, last_hash: str = GENESIS) -> None:
        self.last_seq = last_seq
        self.last_hash = last_hash
        self.count = 0  # rows accepted by this walker

    def feed(self, row: ChainRow) -> BadRecord | None:
        """Accept the next row, or say why it breaks the chain (the walker then stops moving)."""
        expected = self.last_seq + 1
        if row.seq < expected:
            return BadRecord(row.seq, f"record {row.seq} is out of order (expected {expected})")
        if row.seq > expected:
            return BadRecord(expected, f"record {expected} is missing (the next stored record is {row.seq})")
        if chain_hash(row.seq, row.fields, row.prev_hash) != row.hash:
            return BadRecord(row.seq, f"record {row.seq} was altered (its contents do not match its hash)")
        if row.prev_hash != self.last_hash:
            return BadRecord(
                row.seq,
                f"record {row.seq} does not follow record {self.last_seq} "
                "(a record before it was removed, replaced or reordered)",
            )
        self.last_seq, self.last_hash = row.seq, row.hash
        self.count += 1
        return None
