"""Moved to shared/authz/tokens.py; this name stays for callers not yet moved (tests/test_imports.py
keeps services other than auth from using it)."""

from shared.authz.tokens import AUDIENCE, DEFAULT_TTL, ISSUER, MAX_TTL, KeyRing, Principal, bearer

__all__ = ["AUDIENCE", "DEFAULT_TTL", "ISSUER", "MAX_TTL", "KeyRing", "Principal", "bearer"]
