"""The certificate PINs on record, encrypted at rest.

The registry seals a PIN when it is recorded (`clearcard device set-pin`, a fleet file's first
seeding); the gateway unseals it for the device's PIN check. The key lives under the data dir's
keys folder (created once, mode 0600), so every process of one installation shares it.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from shared.errors import ClearCardError, ErrorCode
from shared.key_files import fernet_key

KEY_FILE = "device-pins.key"


class PinVault:
    """Encrypts and decrypts the PINs on record."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def open(cls, keys_dir: Path) -> PinVault:
        """Load the PIN key, creating it on first use (racing creators agree on one file)."""
        return cls(fernet_key(keys_dir, KEY_FILE))

    def seal(self, pin: str) -> bytes:
        """The PIN encrypted for `device_enrolments.pin_cipher`."""
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


PIN_MAX = 32


def checked_pin(pin: str) -> str:
    """The PIN as given, if a device could hold it; INVALID_REQUEST in plain words otherwise."""
    if not pin:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, "The PIN is empty: give it as one line on standard input.")
    if len(pin) > PIN_MAX:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, f"A certificate PIN has at most {PIN_MAX} characters.")
    if not pin.isprintable() or any(c.isspace() for c in pin):
        raise ClearCardError(ErrorCode.INVALID_REQUEST,
                             "The PIN contains spaces or control characters; give only the PIN itself.")
    return pin
