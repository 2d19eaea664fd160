"""Bearer tokens on HTTP: the same tokens, roles and branch scopes as on the bus.

A token from `clearcard token issue` (or from `/api/login`) goes in `Authorization: Bearer`.
The roles table is services/auth/roles.py; what the console adds (backups, digital-invoice
confirmations, issuing tokens) is mapped here onto the same roles.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.auth.roles import ALL_BRANCHES, Action, Role, covers, permits
from services.auth.tokens import Principal, bearer
from services.console.context import ConsoleContext, context
from shared.errors import ClearCardError, ErrorCode

bearer_scheme = HTTPBearer(auto_error=False, description="A ClearCard access token (`clearcard token issue` or "
                     "`POST /api/login`).")


class Can(StrEnum):
    """What a console caller may do; each maps onto contract roles."""

    STATUS = "status.read"
    CLEAR_AUTO = "clear.auto"
    CLEAR_MANUAL = "clear.manual"
    PREVIEW = "clear.preview"
    FOLLOW = "clear.follow"  # watch a request's events and timeline
    AUDIT = "audit.read"
    BACKUPS = "backup.read"
    DIGITAL_CONFIRM = "digital.confirm"
    ADMIN = "admin"  # issue tokens, seed digital taxpayers, plug emulated devices


_ROLES_BEYOND_AUTH: dict[Can, frozenset[Role]] = {
    Can.BACKUPS: frozenset({Role.ADMIN, Role.OPERATOR}),
    Can.DIGITAL_CONFIRM: frozenset({Role.ADMIN, Role.OPERATOR}),
    Can.ADMIN: frozenset({Role.ADMIN}),
}
_FOLLOWERS = (Action.STATUS, Action.CLEAR_AUTO, Action.PREVIEW)


def allowed(role: Role, can: Can) -> bool:
    """True if `role` may do `can` (on its branches)."""
    if can in _ROLES_BEYOND_AUTH:
        return role in _ROLES_BEYOND_AUTH[can]
    if can is Can.FOLLOW:
        return any(permits(role, a) for a in _FOLLOWERS)
    return permits(role, Action(can.value))


def capabilities(role: Role) -> list[str]:
    """Everything `role` may do, for the web console to show or hide its views."""
    return [c.value for c in Can if allowed(role, c)]


async def principal(
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    ctx: ConsoleContext = Depends(context),
) -> Principal:
    """The verified caller; AUTH_REQUIRED / AUTH_INVALID otherwise."""
    if credentials is None:
        raise ClearCardError(ErrorCode.AUTH_REQUIRED)
    return ctx.keys.verify(bearer(f"{credentials.scheme} {credentials.credentials}"))


def require(can: Can) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if their role may do `can`; PERMISSION_DENIED otherwise."""

    async def check(who: Principal = Depends(principal)) -> Principal:
        if not allowed(who.role, can):
            raise ClearCardError(ErrorCode.PERMISSION_DENIED, f"Role {who.role} may not do {can.value}.")
        return who

    return check


def check_branch(who: Principal, branch_id: str) -> None:
    """PERMISSION_DENIED unless the caller's token covers `branch_id`."""
    if not covers(who.branches, branch_id):
        raise ClearCardError(ErrorCode.PERMISSION_DENIED, f"The token does not cover branch {branch_id}.")


def branch_filter(who: Principal) -> set[str] | None:
    """The branches the caller may see; None means every branch."""
    return None if ALL_BRANCHES in who.branches else set(who.branches)
