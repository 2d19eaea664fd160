"""Auth service commands over RPC (`auth.<op>` on `clearcard`): logging a person in."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.messages.base import Frozen

AUTH_LOGIN = "auth.login"

Refusal = Literal["wrong_credentials", "locked", "disabled"]


class LoginRequest(Frozen):
    """Routing key `auth.login`: a user name, password and (optionally) the current TOTP code."""

    username: str = Field(max_length=128)
    password: str = Field(max_length=1024)
    totp: str | None = Field(default=None, max_length=16)
    client: str | None = Field(default=None, max_length=128, description="who asked (the console: address)")


class LoginAnswer(Frozen):
    """Either a token (with what it grants) or a refusal a person can act on."""

    token: str | None = None
    refusal: Refusal | None = None
    locked_until: str | None = None  # ISO 8601, for `locked`; None with `locked` = until an admin unlocks
