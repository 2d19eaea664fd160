"""The auth decision for one clear request: token valid, role allows it, branch in scope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.auth.roles import Action, covers, permits
from services.auth.tokens import KeyRing, Principal, bearer
from shared.errors import ClearCardError, ErrorCode
from shared.messages.clear import ClearRequest


def action_of(request: ClearRequest) -> Action:
    if request.preview:
        return Action.PREVIEW
    return Action.CLEAR_MANUAL if request.mode == "manual" else Action.CLEAR_AUTO


def authorize(keys: KeyRing, headers: Mapping[str, Any], request: ClearRequest) -> Principal:
    """Who is asking, if they may; raises AUTH_REQUIRED / AUTH_INVALID / PERMISSION_DENIED."""
    principal = keys.verify(bearer(headers.get("authorization")))
    action = action_of(request)
    if not permits(principal.role, action):
        raise ClearCardError(
            ErrorCode.PERMISSION_DENIED,
            f"Role {principal.role} may not {action.value.replace('clear.', '')} clears.",
        )
    if not covers(principal.branches, request.branch_id):
        raise ClearCardError(
            ErrorCode.PERMISSION_DENIED, f"The token does not cover branch {request.branch_id}."
        )
    return principal
