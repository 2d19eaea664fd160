"""Roles (contract §2) and what each may do, scoped to branches."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"  # everything
    OPERATOR = "operator"  # clears and status for its branches
    REQUESTER = "requester"  # a service submitting `auto` clears for its branches
    AUDITOR = "auditor"  # audit log, read only
    VIEWER = "viewer"  # status only


class Action(StrEnum):
    CLEAR_AUTO = "clear.auto"
    CLEAR_MANUAL = "clear.manual"
    PREVIEW = "clear.preview"
    STATUS = "status.read"
    AUDIT_READ = "audit.read"
    ADMIN = "accounts.admin"  # manage accounts, unlock, revoke others' tokens


ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.OPERATOR: frozenset({Action.CLEAR_AUTO, Action.CLEAR_MANUAL, Action.PREVIEW, Action.STATUS}),
    Role.REQUESTER: frozenset({Action.CLEAR_AUTO, Action.PREVIEW}),
    Role.AUDITOR: frozenset({Action.AUDIT_READ}),
    Role.VIEWER: frozenset({Action.STATUS}),
}

ALL_BRANCHES = "*"

# Which roles each kind of account may hold: a person never acts as the `requester` service and a
# service account never holds a role that clears by hand or administers.
PERSON_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.VIEWER})
SERVICE_ROLES = frozenset({Role.REQUESTER, Role.VIEWER, Role.AUDITOR})


def permits(role: Role, action: Action) -> bool:
    """True if `role` may take `action` at all (branch scope is checked separately)."""
    return action in ALLOWED[role]


def covers(branches: tuple[str, ...], branch_id: str) -> bool:
    """True if a token scoped to `branches` may act on `branch_id`."""
    return ALL_BRANCHES in branches or branch_id in branches
