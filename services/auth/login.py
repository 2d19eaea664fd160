"""Logging in: password (argon2id), optional TOTP, lockout with growing delays; a short-lived token.

A person's token says `amr: ["pwd", "otp"]` only when a valid TOTP code was given; manual clears
and administration by people need that (services.auth.decide).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import trio

from services.auth import credentials as cred
from services.auth.accounts import utc_now
from services.auth.auditing import AuditSink
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode

PERSON_TTL = 900  # people log in again every 15 minutes
SERVICE_TTL = 3600

_WRONG = "Wrong username, password or TOTP code."


class LoginRefused(ClearCardError):
    """AUTH_INVALID, with why in a form a person's screen can put in their own words."""

    def __init__(self, message: str, refusal: str, locked_until: datetime | None = None) -> None:
        super().__init__(ErrorCode.AUTH_INVALID, message)
        self.refusal = refusal  # wrong_credentials | locked | disabled
        self.locked_until = locked_until


async def _account(conn: asyncpg.Connection, username: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT username, kind, role, branches, password_hash, totp_secret, totp_last_step, disabled, "
        "failed_logins, locked_until FROM auth_accounts WHERE username = $1", username)


async def _claim_attempt(conn: asyncpg.Connection, username: str, now: datetime) -> tuple[int, datetime | None] | None:
    """Count this attempt as a failure before its password is checked, and lock the account at once
    if that makes one too many; None if the account is locked or disabled.

    The UPDATE holds the row until the transaction commits, so parallel attempts take turns
    here: each sees the count and lock of the ones before it, and no more than the lockout
    threshold of guesses is ever checked, however many arrive at once. A success resets it.
    """
    failures = await conn.fetchval(
        "UPDATE auth_accounts SET failed_logins = failed_logins + 1, updated_at = now() "
        "WHERE username = $1 AND NOT disabled AND (locked_until IS NULL OR locked_until <= $2) "
        "RETURNING failed_logins", username, now)
    if failures is None:
        return None
    until = cred.lock_until(int(failures), now)
    if until is not None:
        await conn.execute("UPDATE auth_accounts SET locked_until = $2 WHERE username = $1", username, until)
    return int(failures), until


async def _succeeded(conn: asyncpg.Connection, username: str, totp_step: int | None, rehash: str | None) -> bool:
    """Clear the failure count and remember the TOTP step; False if the step was used meanwhile."""
    status = await conn.execute(
        "UPDATE auth_accounts SET failed_logins = 0, locked_until = NULL, updated_at = now(), "
        "totp_last_step = COALESCE($2, totp_last_step), password_hash = COALESCE($3, password_hash) "
        "WHERE username = $1 AND ($2::bigint IS NULL OR totp_last_step IS NULL OR totp_last_step < $2)",
        username, totp_step, rehash)
    return status.endswith(" 1")


async def login(db: Database, keys: KeyRing, username: str, password: str, totp: str | None = None, *,
                audit: AuditSink, now: datetime | None = None, ttl: int | None = None) -> str:
    """A signed access token for the account, or AUTH_INVALID (wrong credentials, locked, disabled).

    Audited: `auth.login` ok/failed/refused and `auth.lockout` when this failure locks the account.
    """
    sink = audit
    now = now or utc_now()
    row = await db.run(_account, username) if cred.USERNAME.match(username) else None

    async def refuse(outcome: str, reason: str, message: str = _WRONG, refusal: str = "wrong_credentials",
                     retry_at: datetime | None = None, **detail: Any) -> LoginRefused:
        await sink(action="auth.login", subject=username[:64], outcome=outcome,
                   error_code=ErrorCode.AUTH_INVALID, detail={"reason": reason, **detail})
        return LoginRefused(message, refusal, retry_at)

    if row is None:
        await trio.to_thread.run_sync(cred.verify_password, None, password)  # same time as a wrong password
        raise await refuse("failed", "unknown account")
    if row["disabled"]:
        raise await refuse("refused", "account disabled", "This account is disabled.", "disabled")
    claim = await db.run(_claim_attempt, username, now)
    if claim is None:
        row = await db.run(_account, username)
        if row is None or row["disabled"]:
            raise await refuse("refused", "account disabled", "This account is disabled.", "disabled")
        until = row["locked_until"]
        if until is None:  # unlocked a moment ago
            raise await refuse("failed", "lock lifted meanwhile", "Please try again.")
        when = "until an admin unlocks it" if until.year == 9999 else f"until {until.isoformat()}"
        raise await refuse("refused", "account locked", f"This account is locked {when}.", "locked",
                           None if until.year == 9999 else until, locked_until=until.isoformat())
    failures, until = claim
    ok = await trio.to_thread.run_sync(cred.verify_password, row["password_hash"], password)
    step: int | None = None
    if ok and totp is not None:
        step = cred.totp_step(row["totp_secret"], totp, now, row["totp_last_step"]) if row["totp_secret"] else None
        ok = step is not None
    if not ok:
        reason = "wrong password" if step is None and totp is None else "wrong password or TOTP code"
        if until is not None:  # this failure locked the account: say so now, not at the next try
            when = "until an admin unlocks it" if until.year == 9999 else f"until {until.isoformat()}"
            error = await refuse("failed", reason, f"{_WRONG} The account is now locked {when}.", "locked",
                                 None if until.year == 9999 else until, failures=failures)
        else:
            error = await refuse("failed", reason, failures=failures)
        if until is not None:
            await sink(action="auth.lockout", subject=username, outcome="locked",
                       error_code=ErrorCode.AUTH_INVALID,
                       detail={"failures": failures, "locked_until": until.isoformat()})
        raise error
    rehash = None
    if cred.needs_rehash(row["password_hash"]):
        rehash = await trio.to_thread.run_sync(cred.hash_password, password)
    if not await db.run(_succeeded, username, step, rehash):
        raise await refuse("failed", "TOTP code already used")
    amr = ["pwd", "otp"] if step is not None else ["pwd"]
    kind = str(row["kind"])
    token = keys.issue(username, Role(row["role"]), list(row["branches"]),
                       ttl or (PERSON_TTL if kind == "person" else SERVICE_TTL), kind=kind, amr=amr)
    await sink(action="auth.login", subject=username, outcome="ok", detail={"amr": amr, "kind": kind})
    return token
