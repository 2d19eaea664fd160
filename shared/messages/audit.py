"""Audit records every service publishes (routing key audit.record)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from shared.messages.base import Frozen, utc_now


class AuditRecord(Frozen):
    """One fact for the append-only log: who did what, when, in which trace, with what result."""

    record_id: str  # unique; a redelivered record is stored once
    at: datetime = Field(default_factory=utc_now)
    service: str
    subject: str  # who asked (token subject) or the service itself
    action: str  # e.g. clear.requested, clear.rejected, step.reported, clear.finished
    request_id: str | None = None
    device_id: str | None = None
    branch_id: str | None = None
    outcome: str | None = None
    error_code: str | None = None
    trace_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


# Reading the log: requests to the audit service (queue clearcard.audit.queries, routing keys
# audit.query.<op>), so no other service reads its tables. The answer is the RPC envelope.

PAGE_LIMIT = 500  # records per answer at most: a whole export in one message would outgrow any frame
PAGE_BYTES = 48_000  # and at most this much JSON (one record more if the first alone is larger): the
#                      bus refuses a message over 64 KiB (shared/messages/codec.py)


class AuditQuery(Frozen):
    """`audit.query.records`: one page of the records matching every filter, oldest first.

    `after_seq` is the cursor (the `seq` of the last record of the previous page). `scoped` limits
    the records to those of `scope_branches` or of their devices (a branch-scoped reader; its
    front end works the branches out from its token, the audit service their devices)."""

    request_id: str | None = Field(None, max_length=200)
    device_id: str | None = Field(None, max_length=200)
    branch_id: str | None = Field(None, max_length=200)
    subject: str | None = Field(None, max_length=200)
    since: datetime | None = None
    until: datetime | None = None
    scoped: bool = False
    scope_branches: list[str] = Field(default_factory=list, max_length=1000)
    after_seq: int = Field(0, ge=0)
    limit: int = Field(PAGE_LIMIT, ge=1, le=PAGE_LIMIT)


class AuditPage(Frozen):
    records: list[dict[str, Any]]
    next_after_seq: int | None = None  # None: this was the last page


class VerifyAuditChain(Frozen):
    """`audit.query.verify`: check every record's hash and link and the signed checkpoints."""


class AuditChainChecked(Frozen):
    ok: bool
    count: int
    checkpoint_seq: int | None = None
    result: str  # one line for a person (`ok N records`, or what is wrong where)
