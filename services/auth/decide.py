"""The auth decision for one clear request: token valid and not revoked, role allows it, branch in
scope, and a second factor where a person does something irreversible or administrative.

`authorize` is the one entry point every service calls (auth first, the coordinator again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from services.auth.roles import Action, Role, covers, permits
from services.auth.tokens import KeyRing, Principal, bearer
from shared.errors import ClearCardError, ErrorCode
from shared.messages.clear import ClearRequest

# Given a verified principal, True if its token was revoked (services.auth.revocation.RevocationList).
RevocationCheck = Callable[[Principal], bool]

# Actions a person may only take with a token earned with a TOTP code.
NEEDS_SECOND_FACTOR: frozenset[Action] = frozenset({Action.CLEAR_MANUAL, Action.ADMIN})


def action_of(request: ClearRequest) -> Action:
    if request.preview:
        return Action.PREVIEW
    return Action.CLEAR_MANUAL if request.mode == "manual" else Action.CLEAR_AUTO


def identify(keys: KeyRing, headers: Mapping[str, Any], revoked: RevocationCheck | None = None) -> Principal:
    """Who the `authorization` header speaks for; AUTH_REQUIRED / AUTH_INVALID otherwise."""
    principal = keys.verify(bearer(headers.get("authorization")))
    if revoked is not None and revoked(principal):
        raise ClearCardError(ErrorCode.AUTH_INVALID, "The access token has been revoked.")
    return principal


def permit(principal: Principal, action: Action, branch_id: str | None) -> None:
    """Raise PERMISSION_DENIED unless `principal` may take `action` on `branch_id`."""
    if not permits(principal.role, action):
        raise ClearCardError(
            ErrorCode.PERMISSION_DENIED,
            f"Role {principal.role} may not {action.value.replace('clear.', '').replace('.', ' ')}"
            + (" clears." if action.value.startswith("clear.") else "."),
        )
    if principal.kind == "service" and action in NEEDS_SECOND_FACTOR:
        raise ClearCardError(ErrorCode.PERMISSION_DENIED,
                             "Service accounts may not do manual clears or administration.")
    if principal.is_person and action in NEEDS_SECOND_FACTOR and not principal.mfa:
        raise ClearCardError(
            ErrorCode.PERMISSION_DENIED,
            "This needs a login with a TOTP code (second factor); log in again with --totp.",
        )
    if branch_id is not None and not covers(principal.branches, branch_id):
        raise ClearCardError(ErrorCode.PERMISSION_DENIED, f"The token does not cover branch {branch_id}.")


def authorize(keys: KeyRing, headers: Mapping[str, Any], request: ClearRequest,
              revoked: RevocationCheck | None = None) -> Principal:
    """Who is asking, if they may; raises AUTH_REQUIRED / AUTH_INVALID / PERMISSION_DENIED."""
    principal = identify(keys, headers, revoked)
    permit(principal, action_of(request), request.branch_id)
    return principal


def authorize_token(keys: KeyRing, token: str, action: Action, branch_id: str | None = None,
                    revoked: RevocationCheck | None = None) -> Principal:
    """The same decision for a command-line or console action carrying a bare token."""
    principal = identify(keys, {"authorization": f"Bearer {token}"}, revoked)
    permit(principal, action, branch_id)
    return principal


def subject_of(keys: KeyRing, headers: Mapping[str, Any]) -> str:
    """For the audit log: the subject a token claims when it verifies, else 'anonymous'."""
    try:
        return keys.verify(bearer(headers.get("authorization"))).subject
    except ClearCardError:
        return "anonymous"


__all__ = ["Role", "action_of", "authorize", "authorize_token", "identify", "permit", "subject_of"]
