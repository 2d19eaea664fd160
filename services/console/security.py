"""Bearer tokens on HTTP: the same decision as on the bus (shared/authz), for every /api route.

A token from `clearcard token issue` (or from `/api/login`) goes in `Authorization: Bearer`.
Every route's dependency verifies it, refuses it once revoked (revocations are read before
each decision), and applies the role, branch scope and second-factor rule of shared/authz:
what a console caller may do (`Can`) is an action of the one roles table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.console.context import ConsoleContext, context
from shared.authz import ALL_BRANCHES, Action, Principal, Role, covers, permit, permits
from shared.errors import ClearCardError, ErrorCode

bearer_scheme = HTTPBearer(auto_error=False, description="A ClearCard access token (`clearcard token issue` or "
                     "`POST /api/login`).")


class Can(StrEnum):
    """What a console caller may do; each is an action of shared/authz's roles table."""

    STATUS = "status.read"
    CLEAR_AUTO = "clear.auto"
    CLEAR_MANUAL = "clear.manual"
    PREVIEW = "clear.preview"
    FOLLOW = "clear.follow"  # watch a request's events and timeline
    AUDIT = "audit.read"
    BACKUPS = "backup.read"
    DIGITAL_CONFIRM = "digital.confirm"
    ADMIN = "admin"  # issue tokens, restore backups, seed digital taxpayers, plug emulated devices


ACTION: dict[Can, Action] = {
    Can.STATUS: Action.STATUS, Can.CLEAR_AUTO: Action.CLEAR_AUTO, Can.CLEAR_MANUAL: Action.CLEAR_MANUAL,
    Can.PREVIEW: Action.PREVIEW, Can.FOLLOW: Action.CLEAR_FOLLOW, Can.AUDIT: Action.AUDIT_READ,
    Can.BACKUPS: Action.BACKUP_READ, Can.DIGITAL_CONFIRM: Action.DIGITAL_CONFIRM, Can.ADMIN: Action.ADMIN,
}


def allowed(role: Role, can: Can) -> bool:
    """True if `role` may do `can` (on its branches)."""
    return permits(role, ACTION[can])


def capabilities(role: Role) -> list[str]:
    """Everything `role` may do, for the web console to show or hide its views."""
    return [c.value for c in Can if allowed(role, c)]


async def principal(
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    ctx: ConsoleContext = Depends(context),
) -> Principal:
    """The verified caller, not revoked; AUTH_REQUIRED / AUTH_INVALID otherwise."""
    if credentials is None:
        raise ClearCardError(ErrorCode.AUTH_REQUIRED)
    return await ctx.authorizer.identify(f"{credentials.scheme} {credentials.credentials}")


def require(can: Can) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if shared/authz lets them do `can` (role and, for manual clears and
    administration, a TOTP login); PERMISSION_DENIED otherwise. Branches are checked per route."""

    async def check(who: Principal = Depends(principal)) -> Principal:
        permit(who, ACTION[can])
        return who

    return check


def check_branch(who: Principal, branch_id: str) -> None:
    """PERMISSION_DENIED unless the caller's token covers `branch_id`."""
    if not covers(who.branches, branch_id):
        raise ClearCardError(ErrorCode.PERMISSION_DENIED, f"The token does not cover branch {branch_id}.")


def branch_filter(who: Principal) -> set[str] | None:
    """The branches the caller may see; None means every branch."""
    return None if ALL_BRANCHES in who.branches else set(who.branches)
