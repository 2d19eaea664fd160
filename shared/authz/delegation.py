"""Tokens asked for by someone else (`POST /api/tokens`): never more than the issuer has.

A token issued over HTTP names the kind of its holder (a person or a service), so the rules for
that kind apply to it: it never carries a second factor (a person's manual clears and
administration need their own TOTP login) and a service never clears by hand or administers.
Its role is the issuer's or a lower one, its branches a subset of the issuer's, its lifetime
capped by kind, and it names its issuer, so disabling the issuer's account revokes it too.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.authz.decide import permit
from shared.authz.roles import ALL_BRANCHES, PERSON_ROLES, SERVICE_ROLES, Action, Role, grants, within
from shared.authz.tokens import KeyRing, Principal
from shared.errors import ClearCardError, ErrorCode

PERSON_MAX_TTL = 8 * 3600  # a working day: people log in again for the next one
SERVICE_MAX_TTL = 7 * 24 * 3600  # a week: scripts and ERP connectors are re-issued weekly
MAX_TTL = {"person": PERSON_MAX_TTL, "service": SERVICE_MAX_TTL}


@dataclass(frozen=True)
class Grant:
    """What a token asked for over HTTP would carry."""

    subject: str
    role: Role
    branches: tuple[str, ...]
    kind: str  # "person" or "service"
    ttl: int


def check_grant(issuer: Principal, grant: Grant) -> None:
    """PERMISSION_DENIED (or INVALID_REQUEST) unless `issuer` may hand out `grant`."""
    permit(issuer, Action.ADMIN)  # issuing tokens is administration: a person needs TOTP
    if grant.kind not in MAX_TTL:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, "kind must be person or service")
    allowed = PERSON_ROLES if grant.kind == "person" else SERVICE_ROLES
    if grant.role not in allowed:
        raise ClearCardError(ErrorCode.INVALID_REQUEST,
                             f"a {grant.kind} may hold {', '.join(sorted(allowed))}, not {grant.role}")
    if not grants(issuer.role, grant.role):
        raise ClearCardError(ErrorCode.PERMISSION_DENIED, f"Role {issuer.role} may not hand out role {grant.role}.")
    if not grant.branches:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, f"a token needs at least one branch ('{ALL_BRANCHES}' = all)")
    if not within(issuer.branches, list(grant.branches)):
        raise ClearCardError(ErrorCode.PERMISSION_DENIED, "A token may only cover branches its issuer covers.")
    cap = MAX_TTL[grant.kind]
    if not 1 <= grant.ttl <= cap:
        raise ClearCardError(ErrorCode.INVALID_REQUEST,
                             f"a {grant.kind}'s token lives 1 to {cap} seconds ({cap // 3600} hours)")


def delegate(keys: KeyRing, issuer: Principal, grant: Grant) -> str:
    """A signed token for `grant`, after `check_grant`."""
    check_grant(issuer, grant)
    try:
        return keys.issue(grant.subject, grant.role, list(grant.branches), grant.ttl, kind=grant.kind,
                          issued_by=issuer)
    except ValueError as exc:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, str(exc)) from None
