"""The one authorization decision: token valid and not revoked, role allows the action, branch in
scope, and a second factor where a person does something irreversible or administrative.

Every consumer (auth, the coordinator's intake, fleet clears and cancels), every console route
and the CLI call `Authorizer`; `permit` is its pure rule, for code that already holds a
verified principal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.authz.revocations import RevocationList
from shared.authz.roles import NEEDS_SECOND_FACTOR, Action, covers, permits
from shared.authz.tokens import KeyRing, Principal, bearer
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.clear import ClearRequest


def action_of(request: ClearRequest) -> Action:
    """What a clear request asks to do."""
    if request.preview:
        return Action.PREVIEW
    return Action.CLEAR_MANUAL if request.mode == "manual" else Action.CLEAR_AUTO


def _wording(action: Action) -> str:
    words = {Action.CLEAR_AUTO: "do auto clears", Action.CLEAR_MANUAL: "do manual clears",
             Action.PREVIEW: "preview clears", Action.CLEAR_CANCEL: "cancel clears",
             Action.CLEAR_FOLLOW: "follow clears", Action.STATUS: "read the status",
             Action.AUDIT_READ: "read the audit log", Action.BACKUP_READ: "read backups",
             Action.DIGITAL_CONFIRM: "confirm digital-invoice summaries", Action.ADMIN: "administer"}
    return words[action]


def permit(principal: Principal, action: Action, branch_id: str | None = None) -> None:
    """Raise PERMISSION_DENIED unless `principal` may take `action` on `branch_id`."""
    if not permits(principal.role, action):
        raise ClearCardError(ErrorCode.PERMISSION_DENIED, f"Role {principal.role} may not {_wording(action)}.")
    if action in NEEDS_SECOND_FACTOR:
        if principal.kind == "service":
            raise ClearCardError(ErrorCode.PERMISSION_DENIED,
                                 "Service accounts may not do manual clears or administration.")
        if principal.is_person and not principal.mfa:
            raise ClearCardError(ErrorCode.PERMISSION_DENIED,
                                 "This needs a login with a TOTP code (second factor); log in again with the code.")
    if branch_id is not None and not covers(principal.branches, branch_id):
        raise ClearCardError(ErrorCode.PERMISSION_DENIED, f"The token does not cover branch {branch_id}.")


def permit_branches(principal: Principal, action: Action, branches: Iterable[str]) -> None:
    """`permit` for an operation over several branches ('*' needs an every-branch token)."""
    permit(principal, action)
    wanted = list(branches)
    if "*" in wanted and "*" not in principal.branches:
        raise ClearCardError(ErrorCode.PERMISSION_DENIED, "Only an every-branch token may act on every branch.")
    denied = [b for b in wanted if b != "*" and not covers(principal.branches, b)]
    if denied:
        raise ClearCardError(ErrorCode.PERMISSION_DENIED,
                             f"The token does not cover branch(es) {', '.join(denied)}.")


@dataclass
class Authorizer:
    """Verifies bearer tokens against the signing keys and this process's revocation list."""

    keys: KeyRing
    db: Database
    revocations: RevocationList = field(default_factory=RevocationList)

    async def identify(self, authorization: object) -> Principal:
        """Who an `Authorization: Bearer` value speaks for; AUTH_REQUIRED / AUTH_INVALID otherwise
        (a revoked token included, as of the revocations committed before this call)."""
        principal = self.keys.verify(bearer(authorization))
        await self.revocations.refresh(self.db)
        if self.revocations.is_revoked(principal):
            raise ClearCardError(ErrorCode.AUTH_INVALID, "The access token has been revoked.")
        return principal

    async def decide(self, authorization: object, action: Action, branch_id: str | None = None) -> Principal:
        """The caller, if they may take `action` on `branch_id`; raises AUTH_* / PERMISSION_DENIED."""
        principal = await self.identify(authorization)
        permit(principal, action, branch_id)
        return principal

    async def decide_branches(self, authorization: object, action: Action, branches: Iterable[str]) -> Principal:
        """The caller, if they may take `action` on every one of `branches`."""
        principal = await self.identify(authorization)
        permit_branches(principal, action, branches)
        return principal

    async def decide_request(self, headers: Mapping[str, Any], request: ClearRequest) -> Principal:
        """The decision for a clear request carrying `authorization: Bearer <token>`."""
        return await self.decide(headers.get("authorization"), action_of(request), request.branch_id)

    def subject_of(self, headers: Mapping[str, Any]) -> str:
        """For the audit log: the subject a token claims when it verifies, else 'anonymous'."""
        try:
            return self.keys.verify(bearer(headers.get("authorization"))).subject
        except ClearCardError:
            return "anonymous"
