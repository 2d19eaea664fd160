"""Short-lived signed access tokens (JWT, Ed25519), with key rotation.

The signing keys live under <keys_dir>/auth: `signing-<kid>.pem` (private, newest signs) and
the public halves `<kid>.pub.pem` that every service verifies with. Rotating adds a new key;
tokens signed with older keys stay valid until they expire, so rotation needs no downtime.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.authz.roles import Role
from shared.errors import ClearCardError, ErrorCode

ISSUER = "clearcard-auth"
AUDIENCE = "clearcard"
DEFAULT_TTL = 3600
MAX_TTL = 366 * 24 * 3600


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    role: Role
    branches: tuple[str, ...]
    token_id: str
    expires_at: int
    kind: str | None = None  # "person" or "service" for account tokens; None for `token issue` tokens
    mfa: bool = False  # the person proved a second factor (TOTP) at login
    issued_at_ms: int = 0
    # for a token someone else asked for (POST /api/tokens): who, and with which token of theirs
    # (for the audit log); revoking every token of that subject revokes this one too
    issued_by: str | None = None
    issuer_token_id: str | None = None

    @property
    def is_person(self) -> bool:
        return self.kind == "person"

    @property
    def is_key_holder(self) -> bool:
        """Signed locally (`clearcard token issue`) by whoever holds the signing key: no account."""
        return self.kind is None


class KeyRing:
    """The auth keys in one folder; created on first use."""

    def __init__(self, keys_dir: Path) -> None:
        self.folder = keys_dir / "auth"
        self._public_cache: tuple[int, dict[str, Ed25519PublicKey]] | None = None

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The verifying keys, re-read only when the folder changes (a rotation adds a file)."""
        try:
            stamp = self.folder.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if self._public_cache is None or self._public_cache[0] != stamp:
            self._public_cache = (stamp, self._public_keys())
        return self._public_cache[1]

    def _public_keys(self) -> dict[str, Ed25519PublicKey]:
        keys = {}
        for path in sorted(self.folder.glob("*.pub.pem")):
            key = serialization.load_pem_public_key(path.read_bytes())
            if isinstance(key, Ed25519PublicKey):
                keys[path.name.removesuffix(".pub.pem")] = key
        return keys

    def _newest_signing(self) -> tuple[str, Ed25519PrivateKey] | None:
        paths = sorted(self.folder.glob("signing-*.pem"), key=lambda p: p.stat().st_mtime_ns)
        if not paths:
            return None
        path = paths[-1]
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return path.name.removeprefix("signing-").removesuffix(".pem"), key

    def rotate(self) -> str:
        """Create a new signing key; returns its key id. Older public keys keep verifying."""
        self.folder.mkdir(parents=True, exist_ok=True)
        kid = f"{int(time.time())}-{secrets.token_hex(4)}"
        private = Ed25519PrivateKey.generate()
        signing = self.folder / f"signing-{kid}.pem"
        fd = os.open(signing, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ))
        (self.folder / f"{kid}.pub.pem").write_bytes(private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
        ))
        return kid

    def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        found = self._newest_signing()
        if found is None:
            self.rotate()
            found = self._newest_signing()
        assert found is not None
        return found

    def issue(self, subject: str, role: Role, branches: list[str], ttl: int = DEFAULT_TTL, *,
              kind: str | None = None, amr: list[str] | None = None, issued_by: Principal | None = None) -> str:
        """Sign an access token for `subject` with `role` over `branches`.

        Account logins set `kind` (person or service) and `amr` (how the subject proved itself:
        "pwd", plus "otp" after a TOTP code); a token asked for by someone else names them in
        `issued_by` (shared.authz.delegation decides what it may carry).
        """
        if not subject or len(subject) > 128:
            raise ValueError("subject must be 1 to 128 characters")
        if not 1 <= ttl <= MAX_TTL:
            raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds")
        if not branches:
            raise ValueError("a token needs at least one --branch (or '*' for every branch)")
        kid, key = self.signing_key()
        now_ms = time.time_ns() // 1_000_000
        now = now_ms // 1000
        claims: dict[str, object] = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "role": str(role),
            "branches": branches, "iat": now, "nbf": now - 5, "exp": now + ttl,
            "jti": secrets.token_hex(16), "iat_ms": now_ms,
        }
        if kind is not None:
            claims["kind"] = kind
        if amr is not None:
            claims["amr"] = amr
        if issued_by is not None:
            claims["iby"] = issued_by.subject
            claims["ijti"] = issued_by.token_id
        return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})

    def verify(self, token: str) -> Principal:
        """Check signature, issuer, audience and expiry; raises AUTH_INVALID with the reason."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise ClearCardError(ErrorCode.AUTH_INVALID, "The access token is not a valid token.") from None
        key = self.public_keys().get(str(kid))
        if key is None:
            raise ClearCardError(ErrorCode.AUTH_INVALID, "The access token was signed by an unknown key.")
        try:
            claims = jwt.decode(
                token, key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER,
                options={"require": ["exp", "sub", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise ClearCardError(ErrorCode.AUTH_INVALID, "The access token has expired.") from None
        except jwt.PyJWTError as exc:
            raise ClearCardError(ErrorCode.AUTH_INVALID, f"The access token is not valid ({exc}).") from None
        try:
            role = Role(str(claims.get("role")))
            raw_branches = claims.get("branches") or ()
            if not isinstance(raw_branches, list | tuple):
                raise TypeError("branches")
            branches = tuple(str(b) for b in raw_branches)
            kind = claims.get("kind")
            if kind not in (None, "person", "service"):
                raise ValueError("kind")
            amr = claims.get("amr") or []
            mfa = isinstance(amr, list) and "otp" in amr
            issued_at_ms = int(claims.get("iat_ms") or int(claims["iat"]) * 1000)
            issued_by, issuer_token_id = claims.get("iby"), claims.get("ijti")
            if not all(v is None or isinstance(v, str) for v in (issued_by, issuer_token_id)):
                raise TypeError("iby")
        except (ValueError, TypeError):
            raise ClearCardError(ErrorCode.AUTH_INVALID, "The access token has malformed claims.") from None
        return Principal(str(claims["sub"]), role, branches, str(claims["jti"]), int(claims["exp"]),
                         kind=kind, mfa=mfa, issued_at_ms=issued_at_ms, issued_by=issued_by,
                         issuer_token_id=issuer_token_id)


def bearer(header_value: object) -> str:
    """The token of an `authorization: Bearer <token>` header; AUTH_REQUIRED when absent."""
    if isinstance(header_value, bytes):
        header_value = header_value.decode("utf-8", "replace")
    if not isinstance(header_value, str) or not header_value.strip():
        raise ClearCardError(ErrorCode.AUTH_REQUIRED)
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ClearCardError(ErrorCode.AUTH_INVALID, "The authorization header must be 'Bearer <token>'.")
    return token.strip()
