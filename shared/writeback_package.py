"""Sealing and opening write-back packages (反写监控) in the product's own documented format.

The bureau's real package format is not public; this format is what the authority simulator
issues and the emulated devices accept. A real bureau connector and vendor drivers plug in
their own. The payload is AES-GCM encrypted under a per-device key; the checksum is SHA-256
over the ciphertext, so a damaged package is refused before decryption.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_EMULATION_SECRET = b"clearcard emulated device key v1"


class PackageInvalid(ValueError):
    """The package fails its checksum or cannot be decrypted with the device's key."""


def emulated_device_key(device_id: str, taxpayer_id: str) -> bytes:
    """The key an emulated device shares with the simulated bureau (never a real device's)."""
    return hmac.new(_EMULATION_SECRET, f"{device_id}|{taxpayer_id}".encode(), hashlib.sha256).digest()


def _nonce(package_id: str) -> bytes:
    return hashlib.sha256(package_id.encode()).digest()[:12]


def seal(package_id: str, payload: dict[str, Any], key: bytes) -> tuple[str, str]:
    """Encrypt `payload`; returns (ciphertext hex, checksum hex)."""
    plain = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    ciphertext = AESGCM(key).encrypt(_nonce(package_id), plain, package_id.encode())
    return ciphertext.hex(), hashlib.sha256(ciphertext).hexdigest()


def open_sealed(package_id: str, ciphertext_hex: str, checksum_hex: str, key: bytes) -> dict[str, Any]:
    """Check the checksum, decrypt, and return the payload; raises PackageInvalid."""
    try:
        ciphertext = bytes.fromhex(ciphertext_hex)
    except ValueError:
        raise PackageInvalid("checksum mismatch: ciphertext is not hex") from None
    if not hmac.compare_digest(hashlib.sha256(ciphertext).hexdigest(), checksum_hex.lower()):
        raise PackageInvalid("checksum mismatch")
    try:
        plain = AESGCM(key).decrypt(_nonce(package_id), ciphertext, package_id.encode())
    except InvalidTag:
        raise PackageInvalid("package was not sealed for this device") from None
    payload: dict[str, Any] = json.loads(plain)
    return payload
