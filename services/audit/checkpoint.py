"""Signed checkpoints of the audit chain's head, each chained to the one before: no I/O here.

A database superuser can rewrite rows and recompute every hash after them, or cut the newest
rows off; neither can forge the Ed25519 signature of a checkpoint, nor take back checkpoints
already written to the anchor locations (services/audit/anchors.py) off the database host.
Checkpoint n holds the chain's head (seq, hash) when it was written and `prev`, the digest of
checkpoint n-1, so the checkpoints form a chain of their own: one valid signature on the newest
vouches for every one before it, and a checkpoint removed, altered or reordered breaks the links.

Key (blocking I/O, call from a thread): `<keys_dir>/audit/checkpoint.ed25519`, raw 32 bytes,
mode 0600, created by the audit service; its public half `.pub` beside it and in every anchor
location.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.audit.chain import GENESIS
from shared.config import Settings

_DOMAIN = b"clearcard audit checkpoint v2\n"


class CheckpointInvalid(Exception):
    """A checkpoint cannot be trusted (bad signature or link, unreadable, no key)."""


@dataclass(frozen=True)
class Checkpoint:
    n: int  # 1, 2, ... in the order written
    seq: int  # the audit chain's head when it was written
    hash: str
    written_at: str
    prev: str  # digest of checkpoint n-1 (GENESIS for the first)
    signature: str

    def fields(self) -> dict[str, Any]:
        return {"n": self.n, "seq": self.seq, "hash": self.hash, "written_at": self.written_at, "prev": self.prev}

    def line(self) -> str:
        """The checkpoint as one line of an anchor file."""
        return json.dumps({**self.fields(), "signature": self.signature}, sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        """What the next checkpoint's `prev` names."""
        return hashlib.sha256(self.line().encode("ascii")).hexdigest()


def _signed_bytes(fields: dict[str, Any]) -> bytes:
    return _DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("ascii")


def parse(line: str) -> Checkpoint:
    """One anchor-file line; CheckpointInvalid if it is not a checkpoint."""
    try:
        raw = json.loads(line)
        return Checkpoint(int(raw["n"]), int(raw["seq"]), str(raw["hash"]), str(raw["written_at"]),
                          str(raw["prev"]), str(raw["signature"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointInvalid(f"unreadable checkpoint line ({exc})") from None


def sign_next(key: Ed25519PrivateKey, previous: Checkpoint | None, seq: int, digest: str,
              now: datetime | None = None) -> Checkpoint:
    """The checkpoint after `previous` for the chain head (seq, digest)."""
    n = previous.n + 1 if previous else 1
    written_at = (now or datetime.now(UTC)).isoformat()
    prev = previous.digest if previous else GENESIS
    unsigned = Checkpoint(n, seq, digest, written_at, prev, "")
    return Checkpoint(n, seq, digest, written_at, prev, key.sign(_signed_bytes(unsigned.fields())).hex())


def check_signature(public: Ed25519PublicKey, checkpoint: Checkpoint) -> None:
    """CheckpointInvalid unless the audit key signed `checkpoint`."""
    try:
        public.verify(bytes.fromhex(checkpoint.signature), _signed_bytes(checkpoint.fields()))
    except (InvalidSignature, ValueError):
        raise CheckpointInvalid(f"checkpoint {checkpoint.n} has an invalid signature") from None


def check_link(previous: Checkpoint | None, checkpoint: Checkpoint) -> None:
    """CheckpointInvalid unless `checkpoint` follows `previous` in the chain of checkpoints."""
    expected = previous.n + 1 if previous else 1
    if checkpoint.n != expected:
        raise CheckpointInvalid(f"checkpoint {expected} is missing (the next one kept is {checkpoint.n})")
    if checkpoint.prev != (previous.digest if previous else GENESIS):
        raise CheckpointInvalid(f"checkpoint {checkpoint.n} does not follow checkpoint {expected - 1} "
                                "(one was altered or replaced)")
    if previous is not None and checkpoint.seq < previous.seq:
        raise CheckpointInvalid(f"checkpoint {checkpoint.n} goes back from record {previous.seq} "
                                f"to {checkpoint.seq}")


def key_path(settings: Settings) -> Path:
    return settings.keys_dir / "audit" / "checkpoint.ed25519"


def load_or_create_key(settings: Settings) -> Ed25519PrivateKey:
    """The audit service's signing key, created (mode 0600) on first use."""
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
    path.with_suffix(".pub").write_bytes(key.public_key().public_bytes_raw())
    return key


def local_public_key(settings: Settings) -> bytes | None:
    """The public key beside the signing key on this host (raw bytes), if there is one."""
    path = key_path(settings)
    pub = path.with_suffix(".pub")
    if pub.exists():
        return pub.read_bytes()
    if path.exists():
        return Ed25519PrivateKey.from_private_bytes(path.read_bytes()).public_key().public_bytes_raw()
    return None
