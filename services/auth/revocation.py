"""Token revocation: rows in PostgreSQL, learned by every verifying service through a small cache.

Tokens are verified locally (signature and expiry need no database), so a revoked token would
stay good until it expires unless every service also knows the revocations. Each service keeps
a `RevocationList`: the set of revoked token ids and per-subject cut-offs (every token of the
subject issued before a time, written when an account is disabled or its password reset). Before
deciding a message it calls `refresh`, which reads only the rows added since its last read (an
index range scan that is empty almost always), so a revocation takes effect on the very next
message in every service, with no bus traffic and no broadcast to lose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import trio

from services.auth.auditing import AuditSink
from services.auth.roles import Role
from services.auth.tokens import MAX_TTL, KeyRing, Principal
from shared.db import Database


@dataclass
class RevocationList:
    """Revoked token ids and subject cut-offs known to this process."""

    max_age: float = 0.0  # seconds a read may be reused; 0 = read before every decision
    last_id: int = 0
    token_ids: set[str] = field(default_factory=set)
    cutoffs_ms: dict[str, int] = field(default_factory=dict)
    _read_at: float | None = None

    def is_revoked(self, principal: Principal) -> bool:
        """True if this token (or every token of its subject issued before it) was revoked."""
        if principal.token_id in self.token_ids:
            return True
        cutoff = self.cutoffs_ms.get(principal.subject)
        return cutoff is not None and principal.issued_at_ms < cutoff

    def __call__(self, principal: Principal) -> bool:
        return self.is_revoked(principal)

    def absorb(self, rows: list[asyncpg.Record]) -> None:
        """Take in revocation rows (in id order)."""
        for row in rows:
            if row["jti"] is not None:
                self.token_ids.add(row["jti"])
            if row["subject"] is not None and row["issued_before_ms"] is not None:
                previous = self.cutoffs_ms.get(row["subject"], 0)
                self.cutoffs_ms[row["subject"]] = max(previous, int(row["issued_before_ms"]))
            self.last_id = max(self.last_id, int(row["id"]))

    async def refresh(self, db: Database) -> None:
        """Read the revocations added since the last read (unless the last read is recent enough)."""
        now = trio.current_time()
        if self._read_at is not None and self.max_age > 0 and now - self._read_at < self.max_age:
            return
        self.absorb(await db.run(rows_after, self.last_id))
        self._read_at = now


async def rows_after(conn: asyncpg.Connection, last_id: int) -> list[asyncpg.Record]:
    """Revocations newer than `last_id`, oldest first."""
    return list(await conn.fetch(
        "SELECT id, jti, subject, issued_before_ms FROM auth_revocations WHERE id > $1 ORDER BY id",
        last_id,
    ))


async def revoke_token(conn: asyncpg.Connection, principal: Principal, *, reason: str,
                       revoked_by: str) -> bool:
    """Revoke one token; False if it already was."""
    row = await conn.fetchrow(
        "INSERT INTO auth_revocations (jti, subject, expires_at, reason, revoked_by) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (jti) WHERE jti IS NOT NULL DO NOTHING RETURNING id",
        principal.token_id, principal.subject, datetime.fromtimestamp(principal.expires_at, UTC),
        reason, revoked_by,
    )
    return row is not None


async def revoke_subject(conn: asyncpg.Connection, subject: str, *, reason: str, revoked_by: str,
                         now_ms: int | None = None) -> None:
    """Revoke every token of `subject` issued until now (disable, password reset)."""
    await conn.execute(
        "INSERT INTO auth_revocations (subject, issued_before_ms, reason, revoked_by) VALUES ($1, $2, $3, $4)",
        subject, now_ms if now_ms is not None else time.time_ns() // 1_000_000 + 1, reason, revoked_by,
    )


async def purge_expired(conn: asyncpg.Connection) -> int:
    """Drop token revocations whose tokens have expired anyway (the cache keeps what it read)."""
    status = await conn.execute("DELETE FROM auth_revocations WHERE jti IS NOT NULL AND expires_at < now()")
    return int(status.split()[-1])


async def revoke(db: Database, keys: KeyRing, token: str, audit: AuditSink, *, actor: str,
                 reason: str = "revoked") -> Principal:
    """Revoke a token given in full (it must verify: an expired token needs no revoking)."""
    principal = keys.verify(token)
    await db.run(revoke_token, principal, reason=reason, revoked_by=actor)
    await audit(action="auth.revoke", subject=actor, outcome="ok",
                detail={"token_id": principal.token_id, "token_subject": principal.subject, "reason": reason})
    return principal


async def revoke_id(db: Database, token_id: str, audit: AuditSink, *, actor: str, reason: str = "revoked") -> None:
    """Revoke a token known only by its id (kept until the longest token lifetime has passed)."""
    if not 0 < len(token_id) <= 64:
        raise ValueError("a token id is 1 to 64 characters")
    stand_in = Principal(subject="", role=Role.VIEWER, branches=(), token_id=token_id,
                         expires_at=int(time.time()) + MAX_TTL)

    async def insert(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "INSERT INTO auth_revocations (jti, expires_at, reason, revoked_by) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (jti) WHERE jti IS NOT NULL DO NOTHING",
            stand_in.token_id, datetime.fromtimestamp(stand_in.expires_at, UTC), reason, actor)

    await db.run(insert)
    await audit(action="auth.revoke", subject=actor, outcome="ok", detail={"token_id": token_id, "reason": reason})
