"""Token revocation: rows in PostgreSQL (`auth_revocations`), learned by every deciding process.

Tokens are verified locally (signature and expiry need no database), so a revoked token would
stay good until it expires unless every decision also knows the revocations. Each process keeps
a `RevocationList`: revoked token ids and per-subject cut-offs (every token of a subject issued
before a time, written when an account is disabled or its password reset). Before deciding,
`refresh` reads only the rows added since its last read (an index range scan that is empty
almost always), so a revocation takes effect at the very next decision of every service, the
console and the CLI once its transaction committed: no cache to go stale, no broadcast to lose.
If PostgreSQL cannot be read the decision fails (closed), it never falls back to old knowledge.

This module owns the table: services/auth writes revocations through `revoke_token` and
`revoke_subject`; everyone reads through `RevocationList`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from shared.authz.tokens import Principal
from shared.db import Database

# Beyond this many remembered token ids, those whose tokens have expired anyway are forgotten.
_PRUNE_AT = 10_000


@dataclass
class RevocationList:
    """Revoked token ids and subject cut-offs known to this process."""

    last_id: int = 0
    token_ids: dict[str, int] = field(default_factory=dict)  # jti -> the token's expiry (epoch s)
    cutoffs_ms: dict[str, int] = field(default_factory=dict)

    def is_revoked(self, principal: Principal) -> bool:
        """True if this token, or every token of its subject (or of the account that asked for
        it) issued before it, was revoked."""
        if principal.token_id in self.token_ids:
            return True
        for subject in (principal.subject, principal.issued_by):
            cutoff = self.cutoffs_ms.get(subject) if subject is not None else None
            if cutoff is not None and principal.issued_at_ms < cutoff:
                return True
        return False

    def __call__(self, principal: Principal) -> bool:
        return self.is_revoked(principal)

    def absorb(self, rows: list[asyncpg.Record]) -> None:
        """Take in revocation rows (in id order)."""
        for row in rows:
            if row["jti"] is not None:
                expires = row["expires_at"]
                self.token_ids[row["jti"]] = int(expires.timestamp()) if expires is not None else 2**62
            if row["subject"] is not None and row["issued_before_ms"] is not None:
                previous = self.cutoffs_ms.get(row["subject"], 0)
                self.cutoffs_ms[row["subject"]] = max(previous, int(row["issued_before_ms"]))
            self.last_id = max(self.last_id, int(row["id"]))
        if len(self.token_ids) > _PRUNE_AT:
            now = int(time.time())
            self.token_ids = {jti: exp for jti, exp in self.token_ids.items() if exp >= now}

    async def refresh(self, db: Database) -> None:
        """Read the revocations committed since the last read."""
        self.absorb(await db.call(rows_after, self.last_id))


async def rows_after(conn: asyncpg.Connection, last_id: int) -> list[asyncpg.Record]:
    """Revocations newer than `last_id`, oldest first."""
    return list(await conn.fetch(
        "SELECT id, jti, subject, issued_before_ms, expires_at FROM auth_revocations WHERE id > $1 ORDER BY id",
        last_id,
    ))


async def revoke_token(conn: asyncpg.Connection, principal: Principal, *, reason: str,
                       revoked_by: str) -> bool:
    """Revoke one token; False if it already was."""
    row = await conn.fetchrow(
        "INSERT INTO auth_revocations (jti, subject, expires_at, reason, revoked_by) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (jti) WHERE jti IS NOT NULL DO NOTHING RETURNING id",
        principal.token_id, principal.subject or None, datetime.fromtimestamp(principal.expires_at, UTC),
        reason, revoked_by,
    )
    return row is not None


async def revoke_subject(conn: asyncpg.Connection, subject: str, *, reason: str, revoked_by: str,
                         now_ms: int | None = None) -> None:
    """Revoke every token of `subject` issued until now (disable, password reset), and every token
    issued on its behalf."""
    await conn.execute(
        "INSERT INTO auth_revocations (subject, issued_before_ms, reason, revoked_by) VALUES ($1, $2, $3, $4)",
        subject, now_ms if now_ms is not None else time.time_ns() // 1_000_000 + 1, reason, revoked_by,
    )
