"""Webhook signing secrets: one per endpoint, generated when it is added, encrypted at rest.

The key lives under the data dir's keys folder (created once, mode 0600), beside the other
keys the services share; the CLI that adds an endpoint and the notify service that signs with
it read the same file.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from shared.key_files import fernet_key

KEY_FILE = "notify-webhooks.key"


class SecretVault:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def open(cls, keys_dir: Path) -> SecretVault:
        """Load the key, creating it on first use (racing creators agree on one file)."""
        return cls(fernet_key(keys_dir, KEY_FILE))

    @staticmethod
    def new_secret() -> str:
        """A fresh endpoint secret (256 bits, URL-safe)."""
        return f"whsec_{secrets.token_urlsafe(32)}"

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode("utf-8"))

    def unseal(self, cipher: bytes | None) -> str | None:
        """The secret, or None when there is none or it was sealed under another key."""
        if cipher is None:
            return None
        try:
            return self._fernet.decrypt(bytes(cipher)).decode("utf-8")
        except (InvalidToken, UnicodeDecodeError):
            return None
