"""Accounts in PostgreSQL: argon2 passwords, lockout with growing delay, admin unlock, one-time
reset, TOTP second factor, disable, revocation; every decision audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
import trio

from clearcard.direct_audit import DirectAudit
from services.audit.log import search
from services.auth import accounts, credentials
from services.auth.login import login
from services.auth.revocation import revoke
from shared.authz import Authorizer, RevocationList
from shared.authz.roles import Action, Role
from shared.authz.tokens import KeyRing
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.clear import ClearRequest

PASSWORD = "correct horse battery"
T0 = datetime(2026, 11, 3, 1, 0, tzinfo=UTC)


def manual(branch: str = "wuhan") -> ClearRequest:
    return ClearRequest(request_id="r-1", branch_id=branch, period="2026-10", mode="manual")


async def add(db: Database, name: str = "li.wei", kind: str = "person", role: Role = Role.OPERATOR,
              branches: list[str] | None = None) -> None:
    await accounts.add_account(db, DirectAudit(db), actor="local:test", username=name, kind=kind, role=role,
                               branches=branches or ["wuhan"], password=PASSWORD)


async def audited(db: Database, subject: str) -> list[dict[str, Any]]:
    return await search(db, subject=subject)


async def test_login_issues_a_scoped_short_lived_token(database: Database, tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    await add(database)
    principal = keys.verify(await login(database, keys, "li.wei", PASSWORD, audit=DirectAudit(database)))
    assert (principal.subject, principal.role, principal.branches) == ("li.wei", Role.OPERATOR, ("wuhan",))
    assert principal.kind == "person" and not principal.mfa
    assert principal.expires_at - principal.issued_at_ms // 1000 <= 900
    rows = await database.fetch("SELECT password_hash FROM auth_accounts")
    assert rows[0]["password_hash"].startswith("$argon2id$")
    logins = [r for r in await audited(database, "li.wei") if r["action"] == "auth.login"]
    assert [r["outcome"] for r in logins] == ["ok"]


async def test_brute_force_locks_with_growing_delay_until_admin_unlock(database: Database, tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    await add(database)
    audit = DirectAudit(database)
    now = T0
    for attempt in range(1, credentials.LOCK_AFTER + 1):
        with pytest.raises(ClearCardError) as wrong:
            await login(database, keys, "li.wei", f"guess-{attempt:04d}", now=now, audit=DirectAudit(database))
        assert wrong.value.code == ErrorCode.AUTH_INVALID
    # locked: even the right password is refused while the delay runs
    with pytest.raises(ClearCardError) as locked:
        await login(database, keys, "li.wei", PASSWORD, now=now + timedelta(seconds=29), audit=DirectAudit(database))
    assert "locked" in locked.value.message
    # the delay doubles with each further failure
    delays = []
    for _ in range(credentials.HARD_LOCK_AFTER - credentials.LOCK_AFTER):
        account = await accounts.get_account(database, "li.wei")
        assert account is not None and account.locked_until is not None
        delays.append(account.locked_until - now)
        now = account.locked_until + timedelta(seconds=1)
        with pytest.raises(ClearCardError):
            await login(database, keys, "li.wei", "still-guessing", now=now, audit=DirectAudit(database))
    assert delays == [timedelta(seconds=30 * 2**i) for i in range(len(delays))]
    # the 10th failure locks until an admin unlocks
    account = await accounts.get_account(database, "li.wei")
    assert account is not None and account.locked_until is not None and account.locked_until.year == 9999
    with pytest.raises(ClearCardError) as hard:
        await login(database, keys, "li.wei", PASSWORD, now=now + timedelta(days=30), audit=DirectAudit(database))
    assert "admin" in hard.value.message
    await accounts.unlock(database, audit, actor="admin-1", username="li.wei")
    token = await login(database, keys, "li.wei", PASSWORD, now=now, audit=DirectAudit(database))
    assert keys.verify(token).subject == "li.wei"
    records = await audited(database, "li.wei")
    outcomes = [(r["action"], r["outcome"]) for r in records]
    assert outcomes.count(("auth.login", "failed")) == credentials.HARD_LOCK_AFTER
    assert ("auth.lockout", "locked") in outcomes
    assert ("auth.login", "refused") in outcomes
    assert outcomes[-1] == ("auth.login", "ok")
    unlocks = [r for r in await audited(database, "admin-1") if r["action"] == "auth.unlock"]
    assert unlocks and unlocks[0]["detail"] == {"username": "li.wei"}


async def test_unknown_account_and_disabled_account(database: Database, tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    with pytest.raises(ClearCardError) as unknown:
        await login(database, keys, "nobody", PASSWORD, audit=DirectAudit(database))
    assert unknown.value.code == ErrorCode.AUTH_INVALID
    await add(database)
    token = await login(database, keys, "li.wei", PASSWORD, audit=DirectAudit(database))
    await accounts.set_disabled(database, DirectAudit(database), actor="admin-1", username="li.wei")
    with pytest.raises(ClearCardError) as disabled:
        await login(database, keys, "li.wei", PASSWORD, audit=DirectAudit(database))
    assert "disabled" in disabled.value.message
    revocations = RevocationList()
    await revocations.refresh(database)
    assert revocations.is_revoked(keys.verify(token))  # the tokens it held stop working at once


async def test_totp_is_needed_for_manual_clears_and_administration(database: Database, tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    audit = DirectAudit(database)
    await add(database)
    await add(database, "zhang.admin", role=Role.ADMIN, branches=["*"])
    uri = await accounts.enroll_totp(database, audit, actor="local:test", username="li.wei")
    await accounts.enroll_totp(database, audit, actor="local:test", username="zhang.admin")
    secret = pyotp.parse_uri(uri).secret
    assert uri.startswith("otpauth://totp/ClearCard:li.wei")

    authorizer = Authorizer(keys, database)
    without = await login(database, keys, "li.wei", PASSWORD, now=T0, audit=DirectAudit(database))
    with pytest.raises(ClearCardError) as refused:
        await authorizer.decide_request({"authorization": f"Bearer {without}"}, manual())
    assert refused.value.code == ErrorCode.PERMISSION_DENIED and "TOTP" in refused.value.message
    code = pyotp.TOTP(secret).at(T0)
    with_otp = await login(database, keys, "li.wei", PASSWORD, code, now=T0, audit=DirectAudit(database))
    assert keys.verify(with_otp).mfa
    assert (await authorizer.decide_request({"authorization": f"Bearer {with_otp}"}, manual())).subject == "li.wei"
    # a code is good once, and a wrong code counts as a failed login
    with pytest.raises(ClearCardError):
        await login(database, keys, "li.wei", PASSWORD, code, now=T0 + timedelta(seconds=5),
                    audit=DirectAudit(database))
    with pytest.raises(ClearCardError):
        await login(database, keys, "li.wei", PASSWORD, "000000", now=T0, audit=DirectAudit(database))
    account = await accounts.get_account(database, "li.wei")
    assert account is not None and account.failed_logins == 2

    admin_plain = await login(database, keys, "zhang.admin", PASSWORD, now=T0, audit=DirectAudit(database))
    with pytest.raises(ClearCardError):
        await authorizer.decide(f"Bearer {admin_plain}", Action.ADMIN)
    admin_secret = (await database.fetch(
        "SELECT totp_secret FROM auth_accounts WHERE username = 'zhang.admin'"))[0]["totp_secret"]
    admin_otp = await login(database, keys, "zhang.admin", PASSWORD, pyotp.TOTP(admin_secret).at(T0), now=T0,
                            audit=DirectAudit(database))
    assert (await authorizer.decide(f"Bearer {admin_otp}", Action.ADMIN)).subject == "zhang.admin"


async def test_service_accounts_never_clear_by_hand(database: Database, tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    with pytest.raises(accounts.AccountError):
        await add(database, "erp", kind="service", role=Role.OPERATOR)
    await add(database, "erp", kind="service", role=Role.REQUESTER)
    token = await login(database, keys, "erp", PASSWORD, audit=DirectAudit(database))
    auto = ClearRequest(request_id="r-2", branch_id="wuhan", period="2026-10")
    authorizer = Authorizer(keys, database)
    assert (await authorizer.decide_request({"authorization": f"Bearer {token}"}, auto)).kind == "service"
    with pytest.raises(ClearCardError) as refused:
        await authorizer.decide_request({"authorization": f"Bearer {token}"}, manual())
    assert refused.value.code == ErrorCode.PERMISSION_DENIED
    with pytest.raises(accounts.AccountError):
        await accounts.enroll_totp(database, DirectAudit(database), actor="x", username="erp")


async def test_one_time_reset_lifts_lockout_and_revokes_old_tokens(database: Database, tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    audit = DirectAudit(database)
    await add(database)
    old = await login(database, keys, "li.wei", PASSWORD, audit=DirectAudit(database))
    for attempt in range(credentials.LOCK_AFTER):
        with pytest.raises(ClearCardError):
            await login(database, keys, "li.wei", f"wrong-{attempt:05d}", audit=DirectAudit(database))
    reset = await accounts.issue_reset(database, audit, actor="admin-1", username="li.wei")
    assert await accounts.reset_password(database, audit, reset_token=reset, password="a new passphrase") == "li.wei"
    with pytest.raises(ClearCardError) as reused:
        await accounts.reset_password(database, audit, reset_token=reset, password="another passphrase")
    assert reused.value.code == ErrorCode.AUTH_INVALID
    new = await login(database, keys, "li.wei", "a new passphrase", audit=DirectAudit(database))
    revocations = RevocationList()
    await revocations.refresh(database)
    assert revocations.is_revoked(keys.verify(old))
    assert not revocations.is_revoked(keys.verify(new))
    assert not (await database.fetch("SELECT 1 FROM auth_reset_tokens WHERE token_hash = $1", reset))
    actions = {(r["action"], r["outcome"]) for r in await search(database)}
    assert {("auth.reset_issued", "ok"), ("auth.password_reset", "ok"), ("auth.password_reset", "refused")} <= actions


async def test_revoked_token_is_refused_at_the_next_decision(database: Database, tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    token = keys.issue("ops", Role.OPERATOR, ["wuhan"])
    authorizer = Authorizer(keys, database)
    auto = ClearRequest(request_id="r-3", branch_id="wuhan", period="2026-10")
    headers = {"authorization": f"Bearer {token}"}
    assert (await authorizer.decide_request(headers, auto)).subject == "ops"
    await revoke(database, keys, token, DirectAudit(database), actor="admin-1")
    with pytest.raises(ClearCardError) as refused:
        await authorizer.decide_request(headers, auto)
    assert refused.value.code == ErrorCode.AUTH_INVALID and "revoked" in refused.value.message
    assert [r["action"] for r in await audited(database, "admin-1")] == ["auth.revoke"]


def test_lockout_policy_is_pure() -> None:
    assert credentials.lock_until(credentials.LOCK_AFTER - 1, T0) is None
    assert credentials.lock_until(credentials.LOCK_AFTER, T0) == T0 + timedelta(seconds=30)
    assert credentials.lock_until(credentials.LOCK_AFTER + 2, T0) == T0 + timedelta(seconds=120)
    hard = credentials.lock_until(credentials.HARD_LOCK_AFTER, T0)
    assert hard is not None and hard.year == 9999
    assert not credentials.verify_password(None, "anything")
    assert not credentials.verify_password(credentials.hash_password(PASSWORD), "x" * 5000)


async def test_parallel_wrong_guesses_never_exceed_the_lockout_threshold(database: Database, tmp_path: Path) -> None:
    """Forty guesses at once: only as many passwords are checked as the threshold allows."""
    keys = KeyRing(tmp_path)
    await add(database)
    outcomes: list[str] = []

    async def guess(n: int) -> None:
        with pytest.raises(ClearCardError) as refused:
            await login(database, keys, "li.wei", f"parallel-guess-{n:03d}", now=T0, audit=DirectAudit(database))
        # a checked guess says the credentials were wrong (the one that locks adds that it did)
        outcomes.append("wrong" if refused.value.message.startswith("Wrong") else "locked")

    async with trio.open_nursery() as nursery:
        for n in range(40):
            nursery.start_soon(guess, n)
    assert outcomes.count("wrong") == credentials.LOCK_AFTER
    assert outcomes.count("locked") == 40 - credentials.LOCK_AFTER
    account = await accounts.get_account(database, "li.wei")
    assert account is not None and account.failed_logins == credentials.LOCK_AFTER
    assert account.locked_until is not None and account.locked_until > T0
    checked = [r for r in await audited(database, "li.wei")
               if r["action"] == "auth.login" and r["detail"].get("reason") == "wrong password"]
    assert len(checked) == credentials.LOCK_AFTER
    with pytest.raises(ClearCardError) as still:
        await login(database, keys, "li.wei", PASSWORD, now=T0 + timedelta(seconds=1), audit=DirectAudit(database))
    assert "locked" in still.value.message
