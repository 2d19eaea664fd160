"""People and service accounts in PostgreSQL: adding, passwords, TOTP, lockout, reset, disable.

Every decision is audited through the given sink; `actor` names who made an administrative
change (an admin's token subject, or `local:<user>` for the host's operator).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import trio

from services.auth import credentials as cred
from services.auth.auditing import AuditSink
from shared.authz.revocations import revoke_subject
from shared.authz.roles import ALL_BRANCHES, PERSON_ROLES, SERVICE_ROLES, Role
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode

_BRANCH_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
RESET_TTL = timedelta(hours=1)


class AccountError(ValueError):
    """An administrative change that cannot be made (unknown account, bad role, weak password)."""


@dataclass(frozen=True)
class Account:
    username: str
    kind: str
    role: Role
    branches: tuple[str, ...]
    disabled: bool
    failed_logins: int
    locked_until: datetime | None
    totp_enrolled: bool
    has_password: bool
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        """Safe to print: no hashes, no secrets."""
        return {
            "username": self.username, "kind": self.kind, "role": str(self.role),
            "branches": list(self.branches), "disabled": self.disabled,
            "failed_logins": self.failed_logins,
            "locked_until": self.locked_until.isoformat() if self.locked_until else None,
            "totp_enrolled": self.totp_enrolled, "has_password": self.has_password,
            "created_at": self.created_at.isoformat(),
        }


_COLUMNS = ("username, kind, role, branches, password_hash, totp_secret, totp_last_step, disabled, "
            "failed_logins, locked_until, created_at")


def _account(row: asyncpg.Record) -> Account:
    return Account(row["username"], row["kind"], Role(row["role"]), tuple(row["branches"]), row["disabled"],
                   row["failed_logins"], row["locked_until"], row["totp_secret"] is not None,
                   row["password_hash"] is not None, row["created_at"])


def check_branches(branches: list[str]) -> list[str]:
    if not branches:
        raise AccountError("an account needs at least one branch ('*' for every branch)")
    for branch in branches:
        if branch != ALL_BRANCHES and not (0 < len(branch) <= 64 and set(branch) <= _BRANCH_CHARS):
            raise AccountError(f"{branch!r} is not a branch id (1 to 64 of A-Z a-z 0-9 . _ : -)")
    return sorted(set(branches))


async def _fetch(conn: asyncpg.Connection, username: str, *, lock: bool = False) -> asyncpg.Record | None:
    suffix = " FOR UPDATE" if lock else ""
    return await conn.fetchrow(f"SELECT {_COLUMNS} FROM auth_accounts WHERE username = $1{suffix}", username)


async def _require(conn: asyncpg.Connection, username: str) -> asyncpg.Record:
    row = await _fetch(conn, username, lock=True)
    if row is None:
        raise AccountError(f"no account {username!r}")
    return row


async def add_account(db: Database, audit: AuditSink, *, actor: str, username: str, kind: str, role: Role,
                      branches: list[str], password: str | None = None) -> Account:
    """Create a person or service account."""
    if not cred.USERNAME.match(username):
        raise AccountError("a username is 1 to 64 of A-Z a-z 0-9 . _ @ -")
    if kind not in ("person", "service"):
        raise AccountError("kind must be person or service")
    allowed = PERSON_ROLES if kind == "person" else SERVICE_ROLES
    if role not in allowed:
        raise AccountError(f"a {kind} account may hold {', '.join(sorted(allowed))}, not {role}")
    scope = check_branches(branches)
    password_hash = None
    if password is not None:
        try:
            password_hash = await trio.to_thread.run_sync(cred.hash_password, password)
        except ValueError as exc:
            raise AccountError(str(exc)) from None

    async def insert(conn: asyncpg.Connection) -> asyncpg.Record | None:
        return await conn.fetchrow(
            f"INSERT INTO auth_accounts (username, kind, role, branches, password_hash) "
            f"VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
            username, kind, str(role), scope, password_hash)

    row = await db.run(insert)
    if row is None:
        raise AccountError(f"an account {username!r} exists already")
    await audit(action="auth.account_added", subject=actor, outcome="ok",
                detail={"username": username, "kind": kind, "role": str(role), "branches": scope})
    return _account(row)


async def list_accounts(db: Database) -> list[Account]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM auth_accounts ORDER BY username")
    return [_account(r) for r in rows]


async def get_account(db: Database, username: str) -> Account | None:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM auth_accounts WHERE username = $1", username)
    return _account(rows[0]) if rows else None


async def set_password(db: Database, audit: AuditSink, *, actor: str, username: str, password: str) -> None:
    """An admin sets a password; the account's existing tokens are revoked."""
    try:
        password_hash = await trio.to_thread.run_sync(cred.hash_password, password)
    except ValueError as exc:
        raise AccountError(str(exc)) from None

    async def update(conn: asyncpg.Connection) -> None:
        await _require(conn, username)
        await conn.execute("UPDATE auth_accounts SET password_hash = $2, updated_at = now() WHERE username = $1",
                           username, password_hash)
        await revoke_subject(conn, username, reason="password set", revoked_by=actor)

    await db.run(update)
    await audit(action="auth.password_set", subject=actor, outcome="ok", detail={"username": username})


async def issue_reset(db: Database, audit: AuditSink, *, actor: str, username: str,
                      ttl: timedelta = RESET_TTL) -> str:
    """A one-time password reset token for `username` (only its hash is stored)."""
    token, token_hash = cred.new_reset_token()

    async def insert(conn: asyncpg.Connection) -> None:
        await _require(conn, username)
        await conn.execute(
            "INSERT INTO auth_reset_tokens (token_hash, username, expires_at) VALUES ($1, $2, now() + $3)",
            token_hash, username, ttl)

    await db.run(insert)
    await audit(action="auth.reset_issued", subject=actor, outcome="ok",
                detail={"username": username, "expires_in_s": int(ttl.total_seconds())})
    return token


async def reset_password(db: Database, audit: AuditSink, *, reset_token: str, password: str) -> str:
    """Use a one-time reset token: new password, lockout cleared, old tokens revoked; returns the
    username. AUTH_INVALID for an unknown, used or expired token."""
    try:
        password_hash = await trio.to_thread.run_sync(cred.hash_password, password)
    except ValueError as exc:
        raise AccountError(str(exc)) from None

    async def consume(conn: asyncpg.Connection) -> str | None:
        username = await conn.fetchval(
            "UPDATE auth_reset_tokens SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL "
            "AND expires_at > now() RETURNING username", cred.reset_token_hash(reset_token))
        if username is None:
            return None
        await conn.execute(
            "UPDATE auth_accounts SET password_hash = $2, failed_logins = 0, locked_until = NULL, "
            "updated_at = now() WHERE username = $1", username, password_hash)
        await revoke_subject(conn, username, reason="password reset", revoked_by=username)
        return str(username)

    username = await db.run(consume)
    if username is None:
        await audit(action="auth.password_reset", subject="anonymous", outcome="refused",
                    error_code=ErrorCode.AUTH_INVALID, detail={"reason": "unknown, used or expired reset token"})
        raise ClearCardError(ErrorCode.AUTH_INVALID, "The reset token is unknown, used or expired.")
    await audit(action="auth.password_reset", subject=username, outcome="ok", detail={"username": username})
    return username


async def enroll_totp(db: Database, audit: AuditSink, *, actor: str, username: str) -> str:
    """Give a person a new TOTP secret; returns the provisioning URI (otpauth://) for their app."""
    secret = cred.new_totp_secret()

    async def update(conn: asyncpg.Connection) -> None:
        row = await _require(conn, username)
        if row["kind"] != "person":
            raise AccountError("only people enroll a second factor; service accounts use their secret")
        await conn.execute("UPDATE auth_accounts SET totp_secret = $2, totp_last_step = NULL, "
                           "updated_at = now() WHERE username = $1", username, secret)

    await db.run(update)
    await audit(action="auth.totp_enrolled", subject=actor, outcome="ok", detail={"username": username})
    return cred.provisioning_uri(secret, username)


async def unlock(db: Database, audit: AuditSink, *, actor: str, username: str) -> None:
    """An admin lifts a lockout and clears the failure count."""

    async def update(conn: asyncpg.Connection) -> None:
        await _require(conn, username)
        await conn.execute("UPDATE auth_accounts SET failed_logins = 0, locked_until = NULL, updated_at = now() "
                           "WHERE username = $1", username)

    await db.run(update)
    await audit(action="auth.unlock", subject=actor, outcome="ok", detail={"username": username})


async def set_disabled(db: Database, audit: AuditSink, *, actor: str, username: str, disabled: bool = True) -> None:
    """Disable (every token of the account revoked at once) or enable an account."""

    async def update(conn: asyncpg.Connection) -> None:
        await _require(conn, username)
        await conn.execute("UPDATE auth_accounts SET disabled = $2, updated_at = now() WHERE username = $1",
                           username, disabled)
        if disabled:
            await revoke_subject(conn, username, reason="account disabled", revoked_by=actor)

    await db.run(update)
    await audit(action="auth.account_disabled" if disabled else "auth.account_enabled", subject=actor,
                outcome="ok", detail={"username": username})


def utc_now() -> datetime:
    return datetime.now(UTC)
