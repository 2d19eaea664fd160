"""Revoking tokens (the `token revoke` command, account changes): audited writes through
shared.authz.revocations, which every deciding process reads."""

from __future__ import annotations

import time

import asyncpg

from services.auth.auditing import AuditSink
from shared.authz.revocations import revoke_subject, revoke_token
from shared.authz.roles import Role
from shared.authz.tokens import MAX_TTL, KeyRing, Principal
from shared.db import Database

__all__ = ["purge_expired", "revoke", "revoke_id", "revoke_subject", "revoke_token"]


async def purge_expired(conn: asyncpg.Connection) -> int:
    """Drop token revocations whose tokens have expired anyway (the caches keep what they read)."""
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
    await db.run(revoke_token, stand_in, reason=reason, revoked_by=actor)
    await audit(action="auth.revoke", subject=actor, outcome="ok", detail={"token_id": token_id, "reason": reason})
