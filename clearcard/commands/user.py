"""`clearcard user ...`: people and service accounts, passwords, TOTP, lockout, login, revocation.

Administrative commands act as the admin named by `--token` (CLEARCARD_TOKEN; a person's token
needs a TOTP login) or, without one, as `local:<os user>`: whoever holds this host's database URL
and signing keys, the same trust `clearcard token issue` relies on. Every change is audited.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from shared.config import Settings

T = TypeVar("T")

app = typer.Typer(help="People and service accounts: passwords, TOTP, lockout, login, revocation.",
                  no_args_is_help=True)
totp_app = typer.Typer(help="TOTP second factor.", no_args_is_help=True)
token_app = typer.Typer(help="Access tokens of accounts.", no_args_is_help=True)
app.add_typer(totp_app, name="totp")
app.add_typer(token_app, name="token")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document and nothing else.")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="CLEARCARD_TOKEN",
                                              help="An admin's bearer token (acts as that admin).")]
StdinOpt = Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")]


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err(f"error: {message}")
    return typer.Exit(code)


def _password(from_stdin: bool, *, confirm: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm, err=True)
    return value


def _run(work: Callable[[Any, Any, Settings, Any], Awaitable[T]], token: str | None = None, *,
         admin: bool = True) -> T:
    """Run `work(db, audit, settings, actor)` with the database, an audit sink and the acting admin."""
    from clearcard.direct_audit import DirectAudit
    from clearcard.runtime import identified, infrastructure, run_async
    from services.auth.accounts import AccountError
    from services.auth.auditing import AuditSink, BusAudit
    from shared.authz import Action, Authorizer, KeyRing
    from shared.errors import ClearCardError

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise _fail(f"configuration error: {exc}", 2) from None

    async def main() -> T | Exception:
        # errors are returned, not raised: trio-asyncio's loop would wrap them in an ExceptionGroup
        try:
            async with infrastructure(settings) as (bus, db):
                sink: AuditSink = (DirectAudit(db, settings) if settings.embedded_bus
                                   else BusAudit(identified(bus, "cli", settings), service="cli"))
                actor = f"local:{getpass.getuser()}"
                if admin and token:
                    try:
                        actor = (await Authorizer(KeyRing(settings.keys_dir), db).decide(
                            f"Bearer {token}", Action.ADMIN)).subject
                    except ClearCardError as exc:
                        await sink(action="auth.admin", subject="anonymous", outcome="rejected",
                                   error_code=exc.code, detail={"reason": exc.message})
                        raise
                return await work(db, sink, settings, actor)
        except (AccountError, ClearCardError) as exc:
            return exc

    result = run_async(main)
    if isinstance(result, AccountError):
        raise _fail(str(result), 2)
    if isinstance(result, ClearCardError):
        raise _fail(f"{result.code}: {result.message}")
    return result


@app.command("add")
def add(
    username: str,
    role: Annotated[str, typer.Option(help="admin, operator, auditor, viewer (people); requester, viewer, "
                                           "auditor (services).")],
    branch: Annotated[list[str], typer.Option(help="Branch in scope ('*' = all); repeatable.")],
    kind: Annotated[str, typer.Option(help="person or service.")] = "person",
    password_stdin: StdinOpt = False,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a person or a service account (prompts for its password)."""
    from services.auth.accounts import add_account
    from shared.authz.roles import Role

    try:
        parsed = Role(role)
    except ValueError:
        raise _fail(f"unknown role {role!r}", 2) from None
    password = _password(password_stdin, confirm=True)

    async def work(db: Any, sink: Any, settings: Settings, actor: str) -> dict[str, Any]:
        account = await add_account(db, sink, actor=actor, username=username, kind=kind, role=parsed,
                                    branches=branch, password=password)
        return account.as_json()

    row = _run(work, token)
    if as_json:
        sys.stdout.write(json.dumps(row) + "\n")
    else:
        _err(f"added {row['kind']} {row['username']} ({row['role']} of {', '.join(row['branches'])})")


@app.command("passwd")
def passwd(username: str, password_stdin: StdinOpt = False, token: TokenOpt = None) -> None:
    """Set an account's password (its existing tokens are revoked)."""
    from services.auth.accounts import set_password

    password = _password(password_stdin, confirm=True)

    async def work(db: Any, sink: Any, settings: Settings, actor: str) -> None:
        await set_password(db, sink, actor=actor, username=username, password=password)

    _run(work, token)
    _err(f"password of {username} set")


@app.command("reset")
def reset(username: str, token: TokenOpt = None) -> None:
    """Print a one-time password reset token for the account (valid one hour)."""
    from services.auth.accounts import issue_reset

    async def work(db: Any, sink: Any, settings: Settings, actor: str) -> str:
        return await issue_reset(db, sink, actor=actor, username=username)

    sys.stdout.write(_run(work, token) + "\n")


@app.command("reset-password")
def reset_password_command(
    reset_token: Annotated[str, typer.Option("--reset-token", help="The one-time token from `user reset`.")],
    password_stdin: StdinOpt = False,
) -> None:
    """Choose a new password with a one-time reset token (also lifts a lockout)."""
    from services.auth.accounts import reset_password

    password = _password(password_stdin, confirm=True)

    async def work(db: Any, sink: Any, settings: Settings, actor: str) -> str:
        return await reset_password(db, sink, reset_token=reset_token, password=password)

    _err(f"password of {_run(work, admin=False)} reset")


@totp_app.command("enroll")
def totp_enroll(username: str, token: TokenOpt = None) -> None:
    """Give a person a new TOTP secret; prints the otpauth:// provisioning URI for their app."""
    from services.auth.accounts import enroll_totp

    async def work(db: Any, sink: Any, settings: Settings, actor: str) -> str:
        return await enroll_totp(db, sink, actor=actor, username=username)

    sys.stdout.write(_run(work, token) + "\n")


@app.command("unlock")
def unlock_command(username: str, token: TokenOpt = None) -> None:
    """Lift a lockout after repeated failed logins."""
    from services.auth.accounts import unlock

    async def work(db: Any, sink: Any, settings: Settings, actor: str) -> None:
        await unlock(db, sink, actor=actor, username=username)

    _run(work, token)
    _err(f"{username} unlocked")


@app.command("disable")
def disable(username: str, enable: Annotated[bool, typer.Option(help="Enable it again instead.")] = False,
            token: TokenOpt = None) -> None:
    """Disable an account: it cannot log in and every token it holds is revoked at once."""
    from services.auth.accounts import set_disabled

    async def work(db: Any, sink: Any, settings: Settings, actor: str) -> None:
        await set_disabled(db, sink, actor=actor, username=username, disabled=not enable)

    _run(work, token)
    _err(f"{username} {'enabled' if enable else 'disabled'}")


@app.command("list")
def list_command(token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every account (no secrets): kind, role, branches, lockout, TOTP."""
    from services.auth.accounts import list_accounts

    async def work(db: Any, sink: Any, settings: Settings, actor: str) -> list[dict[str, Any]]:
        return [a.as_json() for a in await list_accounts(db)]

    rows = _run(work, token)
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    for row in rows:
        state = "disabled" if row["disabled"] else ("locked" if row["locked_until"] else "active")
        sys.stdout.write(f"{row['username']:<24} {row['kind']:<8} {row['role']:<10} {state:<9} "
                         f"{','.join(row['branches'])}\n")


@app.command("login")
def login_command(
    username: str,
    totp: Annotated[str | None, typer.Option(help="The current TOTP code (needed for manual clears and "
                                                  "administration).")] = None,
    password_stdin: StdinOpt = False,
) -> None:
    """Log in and print a short-lived access token (one line)."""
    from services.auth.login import login
    from shared.authz.tokens import KeyRing

    password = _password(password_stdin, confirm=False)

    async def work(db: Any, sink: Any, settings: Settings, actor: str) -> str:
        return await login(db, KeyRing(settings.keys_dir), username, password, totp, audit=sink)

    sys.stdout.write(_run(work, admin=False) + "\n")


@token_app.command("revoke")
def token_revoke(
    revoked: Annotated[str, typer.Argument(help="The token to revoke (or its id with --id).")],
    by_id: Annotated[bool, typer.Option("--id", help="The argument is a token id (jti).")] = False,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "revoked",
    token: TokenOpt = None,
) -> None:
    """Revoke an access token: every service refuses it from its next message on."""
    from services.auth.revocation import revoke, revoke_id
    from shared.authz.tokens import KeyRing

    async def work(db: Any, sink: Any, settings: Settings, actor: str) -> str:
        if by_id:
            await revoke_id(db, revoked, sink, actor=actor, reason=reason)
            return revoked
        return (await revoke(db, KeyRing(settings.keys_dir), revoked, sink, actor=actor, reason=reason)).token_id

    _err(f"revoked token {_run(work, token)}")
