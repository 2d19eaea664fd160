"""The signed checkpoint: the audit chain's head anchored outside the database.

A database superuser can rewrite rows and recompute every hash after them, or cut the newest
rows off; neither can forge the Ed25519 signature on the checkpoint file. The audit service
moves the checkpoint forward after appends (only over a chain it has re-checked), and
`verify_chain` refuses a log that is shorter than the checkpoint or differs at its seq.

Files (blocking I/O: call from `trio.to_thread.run_sync`):
- `<keys_dir>/audit/checkpoint.ed25519` private key (raw 32 bytes, mode 0600), `.pub` beside it;
- `<data_dir>/audit/checkpoint.json` {"seq", "hash", "written_at", "signature"};
- `<data_dir>/audit/checkpoint.lock` serializes writers of this data dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared.config import Settings

_DOMAIN = b"clearcard audit checkpoint v1\n"


class CheckpointInvalid(Exception):
    """The checkpoint file exists but cannot be trusted (bad signature, unreadable, no key)."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    written_at: str


def key_path(settings: Settings) -> Path:
    return settings.keys_dir / "audit" / "checkpoint.ed25519"


def checkpoint_path(settings: Settings) -> Path:
    return settings.data_dir / "audit" / "checkpoint.json"


def _signed_bytes(seq: int, digest: str, written_at: str) -> bytes:
    body = json.dumps({"seq": seq, "hash": digest, "written_at": written_at}, sort_keys=True)
    return _DOMAIN + body.encode("ascii")


def load_or_create_key(settings: Settings) -> Ed25519PrivateKey:
    """The service's signing key, created (mode 0600) on first use."""
    path = key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Ed25519PrivateKey.from_private_bytes(path.read_bytes())
    key = Ed25519PrivateKey.generate()
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes_raw())
        out.flush()
        os.fsync(out.fileno())
    path.with_suffix(".pub").write_bytes(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    return key


def _public_key(settings: Settings) -> Ed25519PublicKey | None:
    path = key_path(settings)
    pub = path.with_suffix(".pub")
    if pub.exists():
        return Ed25519PublicKey.from_public_bytes(pub.read_bytes())
    if path.exists():
        return Ed25519PrivateKey.from_private_bytes(path.read_bytes()).public_key()
    return None


def signing_key_exists(settings: Settings) -> bool:
    return key_path(settings).exists() or key_path(settings).with_suffix(".pub").exists()


def read_checkpoint(settings: Settings) -> Checkpoint | None:
    """The current checkpoint, None if none was written; raises CheckpointInvalid if forged."""
    path = checkpoint_path(settings)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        seq, digest, written_at = int(raw["seq"]), str(raw["hash"]), str(raw["written_at"])
        signature = bytes.fromhex(str(raw["signature"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointInvalid(f"checkpoint {path} is unreadable: {exc}") from None
    try:
        public = _public_key(settings)
    except ValueError as exc:
        raise CheckpointInvalid(f"checkpoint key is unreadable: {exc}") from None
    if public is None:
        raise CheckpointInvalid(f"checkpoint {path} exists but its key {key_path(settings)} is missing")
    try:
        public.verify(signature, _signed_bytes(seq, digest, written_at))
    except InvalidSignature:
        raise CheckpointInvalid(f"checkpoint {path} has an invalid signature") from None
    return Checkpoint(seq, digest, written_at)


def write_checkpoint(settings: Settings, seq: int, digest: str) -> Checkpoint:
    """Sign and atomically replace the checkpoint (temp file, fsync, rename, fsync dir)."""
    key = load_or_create_key(settings)
    written_at = datetime.now(UTC).isoformat()
    signature = key.sign(_signed_bytes(seq, digest, written_at)).hex()
    path = checkpoint_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    body = json.dumps({"seq": seq, "hash": digest, "written_at": written_at, "signature": signature})
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return Checkpoint(seq, digest, written_at)


def lock_writers(settings: Settings) -> int:
    """Block until this process holds the checkpoint writers' lock; returns the fd to close."""
    path = checkpoint_path(settings).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def writers_locked(settings: Settings) -> Iterator[None]:
    """Synchronous form of `lock_writers` (scripts and tests)."""
    fd = lock_writers(settings)
    try:
        yield
    finally:
        os.close(fd)
