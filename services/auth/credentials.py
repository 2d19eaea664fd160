"""Passwords (argon2id), TOTP codes and the lockout policy: pure functions, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters
# verified against when an account does not exist, so a wrong name takes as long as a wrong password
_DUMMY_HASH = HASHER.hash(secrets.token_hex(16))

MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # hashing cost is linear in length: refuse megabyte "passwords"
USERNAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")

# Lockout: from the 5th consecutive failure the account waits 30 s, doubling with each further
# failure up to an hour; from the 10th it stays locked until an admin unlocks it.
LOCK_AFTER = 5
HARD_LOCK_AFTER = 10
BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=1)

UNTIL_UNLOCKED = datetime(9999, 1, 1, tzinfo=UTC)  # stays locked until an admin unlocks

TOTP_ISSUER = "ClearCard"
TOTP_STEP = 30


def check_password_rules(password: str) -> None:
    """ValueError unless the password is acceptable."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"a password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def hash_password(password: str) -> str:
    check_password_rules(password)
    return HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if `password` matches; always does the work of one argon2 verification."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return HASHER.check_needs_rehash(stored_hash)


def lock_until(failures: int, now: datetime) -> datetime | None:
    """When an account with `failures` consecutive failures may try again (None: not locked,
    UNTIL_UNLOCKED: until an admin unlocks)."""
    if failures < LOCK_AFTER:
        return None
    if failures >= HARD_LOCK_AFTER:
        return UNTIL_UNLOCKED
    delay = min(BASE_DELAY * (2 ** (failures - LOCK_AFTER)), MAX_DELAY)
    return now + delay


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret, interval=TOTP_STEP).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def totp_step(secret: str, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step `code` belongs to (current one, or one step of clock drift either way),
    if it is newer than `last_step` (a code is good once); None otherwise."""
    if not re.fullmatch(r"[0-9]{6}", code or ""):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_STEP)
    current = int(now.timestamp()) // TOTP_STEP
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.at(step * TOTP_STEP), code) and (last_step is None or step > last_step):
            return step
    return None


def new_reset_token() -> tuple[str, str]:
    """A one-time reset token and the hash stored for it."""
    token = secrets.token_urlsafe(32)
    return token, reset_token_hash(token)


def reset_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
