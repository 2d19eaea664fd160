"""`auth.login` over RPC: the console (or any front end) asks the auth service to log a person in.

The auth service owns the accounts; front ends never read them. A refusal is an answer, not an
error: it says why (wrong credentials, locked until when, disabled) so the person's screen can say
it in their own language.
"""

from __future__ import annotations

from typing import cast

from services.auth.auditing import AuditSink
from services.auth.login import LoginRefused, login
from shared.authz.tokens import KeyRing
from shared.bus.rpc import Operation
from shared.db import Database
from shared.messages.auth import LoginAnswer, LoginRequest, Refusal


def login_operation(db: Database, keys: KeyRing, audit: AuditSink) -> Operation:
    """The `login` operation of the auth service's RPC queue."""

    async def run(request: LoginRequest) -> LoginAnswer:
        try:
            token = await login(db, keys, request.username, request.password, request.totp or None, audit=audit)
        except LoginRefused as refused:
            return LoginAnswer(refusal=cast(Refusal, refused.refusal),
                               locked_until=refused.locked_until.isoformat() if refused.locked_until else None)
        return LoginAnswer(token=token)

    return Operation(LoginRequest, run)
