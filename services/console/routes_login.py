"""`POST /api/login` (contract §6): password and TOTP, decided by the auth service over the bus.

The console holds no accounts: it asks `auth.login` (shared/bus RPC) and hands back the token, or
says in plain words why not (wrong credentials, locked until when, disabled).
"""

from __future__ import annotations

from datetime import datetime

import trio
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from services.console.context import ConsoleContext, context
from services.console.security import capabilities
from services.console.spec import TIMEOUT, ConsoleError, ErrorBody, request_locale
from shared.bus.topology import COMMANDS
from shared.china_time import format_china
from shared.errors import ErrorCode
from shared.i18n import N_, Locale, gettext
from shared.messages.auth import AUTH_LOGIN, LoginAnswer, LoginRequest

router = APIRouter(prefix="/api", tags=["sign-in"])
LOGIN_TIMEOUT = 10.0

WRONG = N_("Wrong user name, password or one-time code.")
LOCKED_UNTIL = N_("Too many failed sign-ins: the account is locked until {when} (China time). Try again then, "
                  "or ask an administrator to unlock it.")
LOCKED = N_("Too many failed sign-ins: the account is locked until an administrator unlocks it.")
DISABLED = N_("This account is disabled; ask an administrator.")
NO_ANSWER = N_("The sign-in service did not answer; try again in a moment.")


class Login(BaseModel):
    """Contract §6: a user name, password and, for people with a second factor, the current code."""

    username: str = Field(max_length=128)
    password: str = Field(max_length=1024)
    totp: str | None = Field(default=None, max_length=16, description="the current six-digit one-time code")


class LoginResult(BaseModel):
    token: str = Field(description="the bearer token for `Authorization: Bearer`")
    subject: str
    role: str
    branches: list[str]
    expires_at: int = Field(description="Unix time the token expires")
    can: list[str] = Field(description="what the token may do (as `GET /api/me`)")


def refusal_words(answer: LoginAnswer, locale: Locale) -> str:
    """Why a sign-in was refused, in the person's language."""
    if answer.refusal == "locked":
        if answer.locked_until is None:
            return gettext(LOCKED, locale)
        return gettext(LOCKED_UNTIL, locale, when=format_china(datetime.fromisoformat(answer.locked_until)))
    if answer.refusal == "disabled":
        return gettext(DISABLED, locale)
    return gettext(WRONG, locale)


@router.post("/login", summary="Sign in with user name, password and one-time code; returns a bearer token",
             responses={401: {"model": ErrorBody, "description": "wrong credentials, locked or disabled "
                              "(AUTH_INVALID; `reason` and `locked_until` say which)"},
                        422: {"model": ErrorBody, "description": "the body is not a login (INVALID_REQUEST)"},
                        **TIMEOUT})
async def login(body: Login, request: Request, ctx: ConsoleContext = Depends(context)) -> LoginResult:
    if ctx.rpc is None:
        raise ConsoleError(ErrorCode.TIMEOUT, NO_ANSWER)
    client = request.client.host if request.client else None
    answer: LoginAnswer | None = None
    with trio.move_on_after(LOGIN_TIMEOUT):
        answer = await ctx.rpc.call(COMMANDS, AUTH_LOGIN, LoginRequest(
            username=body.username, password=body.password, totp=body.totp or None, client=client), LoginAnswer)
    if answer is None:
        raise ConsoleError(ErrorCode.TIMEOUT, NO_ANSWER)
    if answer.token is None:
        locale = request_locale(request)
        raise ConsoleError(ErrorCode.AUTH_INVALID, refusal_words(answer, locale), localized=True,
                           reason=answer.refusal, locked_until=answer.locked_until)
    who = ctx.keys.verify(answer.token)
    return LoginResult(token=answer.token, subject=who.subject, role=who.role.value, branches=list(who.branches),
                       expires_at=who.expires_at, can=capabilities(who.role))
