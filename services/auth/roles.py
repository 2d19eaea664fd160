"""Moved to shared/authz/roles.py; this name stays for callers not yet moved (tests/test_imports.py
keeps services other than auth from using it)."""

from shared.authz.roles import ALL_BRANCHES, PERSON_ROLES, SERVICE_ROLES, Action, Role, covers, permits

__all__ = ["ALL_BRANCHES", "PERSON_ROLES", "SERVICE_ROLES", "Action", "Role", "covers", "permits"]
