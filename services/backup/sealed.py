"""Backup keys, and the version 1 file format (still read; new backups are version 2).

Version 1 was one AES-GCM message holding the whole period, so it could hold only what fitted
in one bus message; services/backup/chunked.py writes version 2, a stream of chunks:

    file  = header || AES-GCM(key, nonce, zlib(JSON snapshot), associated data = header)
    header = b"CCBK" || 0x01 || len(key_id) (1 byte) || key_id (ASCII) || nonce (12 bytes)

The checksum (the file's name) is SHA-256 over the whole file, in both versions. Keys are 32
random bytes, hex, in `<keys_dir>/backup/<key_id>.key`; key ids start with their UTC creation
time, so the newest key sorts last. New backups use the newest key; old backups name theirs and
still decrypt. Key-file functions do blocking I/O: call them from `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.config import Settings

MAGIC = b"CCBK"
VERSION = 1
_KEY_ID = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{6}$")


class CopyDamaged(Exception):
    """A stored copy that cannot be read back: missing, wrong checksum, or does not decrypt."""


def keys_dir(settings: Settings) -> Path:
    return settings.keys_dir / "backup"


def create_key(settings: Settings) -> str:
    """Create a new newest key (key rotation); returns its id."""
    folder = keys_dir(settings)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"  # newest sorts last
    # written under a temporary name and renamed, so a reader never sees a half-written key
    tmp = folder / f".{key_id}.key.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(AESGCM.generate_key(bit_length=256).hex())
        out.flush()
        os.fsync(out.fileno())
    os.rename(tmp, folder / f"{key_id}.key")
    return key_id


def load_key(settings: Settings, key_id: str) -> bytes:
    """The key named `key_id`; raises CopyDamaged if there is no such key."""
    if not _KEY_ID.match(key_id):
        raise CopyDamaged(f"names an invalid key id {key_id!r}")
    try:
        return bytes.fromhex((keys_dir(settings) / f"{key_id}.key").read_text(encoding="ascii").strip())
    except FileNotFoundError:
        raise CopyDamaged(f"needs key {key_id}, which is not in {keys_dir(settings)}") from None
    except ValueError:
        raise CopyDamaged(f"key file {key_id} is unreadable") from None


def current_key(settings: Settings) -> tuple[str, bytes]:
    """The newest key (created on first use)."""
    folder = keys_dir(settings)
    ids = sorted(p.stem for p in folder.glob("*.key") if _KEY_ID.match(p.stem)) if folder.is_dir() else []
    key_id = ids[-1] if ids else create_key(settings)
    return key_id, load_key(settings, key_id)


def seal(snapshot: dict[str, Any], key_id: str, key: bytes) -> bytes:
    """A version 1 file of a whole snapshot (what ClearCard wrote before version 2)."""
    raw_id = key_id.encode("ascii")
    nonce = secrets.token_bytes(12)
    header = MAGIC + bytes([VERSION, len(raw_id)]) + raw_id + nonce
    plain = zlib.compress(json.dumps(snapshot, ensure_ascii=False, sort_keys=True).encode("utf-8"), 9)
    return header + AESGCM(key).encrypt(nonce, plain, header)


def key_id_of(data: bytes) -> str:
    """The key id a stored file (version 1 or 2) names in its header."""
    if len(data) < 6 or data[:4] != MAGIC or data[4] not in (1, 2):
        raise CopyDamaged("is not a ClearCard backup file (bad header)")
    return data[6 : 6 + data[5]].decode("ascii", errors="replace")


def unseal(data: bytes, key_for: Callable[[str], bytes]) -> dict[str, Any]:
    """Decrypt and decompress a whole version 1 file; raises CopyDamaged."""
    if len(data) < 6 or data[:4] != MAGIC or data[4] != VERSION:
        raise CopyDamaged("is not a version 1 ClearCard backup file")
    key_id = key_id_of(data)
    end = 6 + data[5] + 12
    header, body = data[:end], data[end:]
    if len(header) != end:
        raise CopyDamaged("is truncated")
    try:
        plain = AESGCM(key_for(key_id)).decrypt(header[-12:], body, header)
    except InvalidTag:
        raise CopyDamaged("does not decrypt (damaged or altered)") from None
    try:
        snapshot: dict[str, Any] = json.loads(zlib.decompress(plain))
    except (zlib.error, ValueError):
        raise CopyDamaged("decrypts but does not decompress") from None
    return snapshot


def legacy_documents(data: bytes, key_for: Callable[[str], bytes]) -> Iterator[dict[str, Any]]:
    """A version 1 file as the documents a version 2 file holds (services/backup/snapshot.py)."""
    snapshot = unseal(data, key_for)
    invoices = snapshot.get("invoices")
    if not isinstance(invoices, list) or not isinstance(snapshot.get("manifest"), dict):
        raise CopyDamaged("decrypts but is not a snapshot")
    yield {name: snapshot.get(name) for name in ("format", "manifest", "monitoring", "summaries", "device_record")}
    yield {"invoices": invoices}
    yield {"end": {"invoice_count": len(invoices)}}


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
