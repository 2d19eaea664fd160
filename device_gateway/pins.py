"""The PINs on record, encrypted at rest, and the memory of which PIN already failed.

The key lives under the data dir's keys folder (created once, mode 0600). A wrong PIN is
remembered by an HMAC fingerprint (never the PIN) so the gateway never sends it again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from shared.errors import ClearCardError, ErrorCode

KEY_FILE = "device-pins.key"


class PinVault:
    """Encrypts PINs on record and fingerprints failed ones."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._mac_key = hashlib.sha256(b"clearcard pin fingerprint|" + key).digest()

    @classmethod
    def open(cls, keys_dir: Path) -> PinVault:
        """Load the PIN key, creating it on first use (racing creators agree on one file)."""
        keys_dir.mkdir(parents=True, exist_ok=True)
        path = keys_dir / KEY_FILE
        if not path.exists():
            key = Fernet.generate_key()
            tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # fails if another process created it first: use theirs
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        return cls(path.read_bytes().strip())

    def seal(self, pin: str) -> bytes:
        """The PIN encrypted for the `devices.pin_cipher` column."""
        return self._fernet.encrypt(pin.encode("utf-8"))

    def unseal(self, cipher: bytes, device_id: str) -> str:
        """The PIN on record; INTERNAL if it was encrypted under another key."""
        try:
            return self._fernet.decrypt(cipher).decode("utf-8")
        except (InvalidToken, UnicodeDecodeError):
            raise ClearCardError(
                ErrorCode.INTERNAL,
                f"the PIN on record for device {device_id} cannot be decrypted (was the key replaced?)",
            ) from None

    def fingerprint(self, device_id: str, pin: str) -> str:
        """A keyed hash identifying one PIN for one device (safe to store)."""
        return hmac.new(self._mac_key, f"{device_id}|{pin}".encode(), hashlib.sha256).hexdigest()
