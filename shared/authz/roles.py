"""Roles (contract §2), what each may do, branch scopes and the second-factor rule: pure data."""

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
    CLEAR_CANCEL = "clear.cancel"  # stop a running clear before its write-backs
    CLEAR_FOLLOW = "clear.follow"  # watch a request's events and timeline
    STATUS = "status.read"
    AUDIT_READ = "audit.read"
    BACKUP_READ = "backup.read"  # list and verify backups
    DIGITAL_CONFIRM = "digital.confirm"  # confirm a month's digital-invoice summary
    ADMIN = "accounts.admin"  # accounts, tokens, restores, revoking others' tokens, emulated hardware


_CLEARING = frozenset({Action.CLEAR_AUTO, Action.PREVIEW, Action.CLEAR_CANCEL, Action.CLEAR_FOLLOW})

ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.OPERATOR: _CLEARING | {Action.CLEAR_MANUAL, Action.STATUS, Action.BACKUP_READ, Action.DIGITAL_CONFIRM},
    Role.REQUESTER: _CLEARING,
    Role.AUDITOR: frozenset({Action.AUDIT_READ}),
    Role.VIEWER: frozenset({Action.STATUS, Action.CLEAR_FOLLOW}),
}

ALL_BRANCHES = "*"

# Which roles each kind of account may hold: a person never acts as the `requester` service and a
# service account never holds a role that clears by hand or administers.
PERSON_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.VIEWER})
SERVICE_ROLES = frozenset({Role.REQUESTER, Role.VIEWER, Role.AUDITOR})

# Irreversible or administrative: a person needs a token earned with a TOTP code, and a service
# account may never take them.
NEEDS_SECOND_FACTOR: frozenset[Action] = frozenset({Action.CLEAR_MANUAL, Action.ADMIN})

# Where roles rank against each other, for tokens issued by someone else: an issuer hands out
# its own role or a lower one, never a higher one. Auditor and viewer read different things, so
# neither is below the other.
_BELOW: dict[Role, frozenset[Role]] = {
    Role.ADMIN: frozenset(Role),
    Role.OPERATOR: frozenset({Role.OPERATOR, Role.REQUESTER, Role.VIEWER}),
    Role.REQUESTER: frozenset({Role.REQUESTER, Role.VIEWER}),
    Role.AUDITOR: frozenset({Role.AUDITOR}),
    Role.VIEWER: frozenset({Role.VIEWER}),
}


def permits(role: Role, action: Action) -> bool:
    """True if `role` may take `action` at all (branch scope is checked separately)."""
    return action in ALLOWED[role]


def covers(branches: tuple[str, ...], branch_id: str) -> bool:
    """True if a token scoped to `branches` may act on `branch_id`."""
    return ALL_BRANCHES in branches or branch_id in branches


def within(issuer_branches: tuple[str, ...], branches: list[str]) -> bool:
    """True if every branch of `branches` is in the issuer's scope ('*' only from an all-branch issuer)."""
    return all(covers(issuer_branches, b) if b != ALL_BRANCHES else ALL_BRANCHES in issuer_branches
               for b in branches)


def grants(issuer: Role, role: Role) -> bool:
    """True if an `issuer` may hand `role` to someone else."""
    return role in _BELOW[issuer]
