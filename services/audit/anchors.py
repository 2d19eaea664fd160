"""The anchor locations: where every signed checkpoint is kept, off the database host.

Each location (CLEARCARD_AUDIT_ANCHORS; by default an `audit-anchors` folder in every backup
location) holds the checkpoints as JSON lines, one file per month (`checkpoints-YYYY-MM.jsonl`),
appended and fsynced, never rewritten, and the audit key's public half (`checkpoint.pub`).
A location that was away misses some lines; the others hold them, and reading merges every
location by checkpoint number, so a checkpoint lives as long as one location keeps it. Two
locations holding different checkpoints under one number is tampering.

Writers (audit replicas, the CLI's direct appends) take turns through a lock file in the first
reachable location, which must support file locks when shared (NFSv4, SMB).
Blocking I/O throughout: call from `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import fcntl
import heapq
import os
from collections.abc import Iterator
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.audit.checkpoint import Checkpoint, CheckpointInvalid, check_link, check_signature, parse
from shared.config import Settings

log = structlog.get_logger("clearcard.audit.anchors")

PUBLIC = "checkpoint.pub"
LOCK = "checkpoints.lock"
_TAIL_BYTES = 64 * 1024


def _files(location: Path) -> list[Path]:
    return sorted(location.glob("checkpoints-*.jsonl"))


def lock_writers(settings: Settings) -> int:
    """Block until this process holds the writers' lock; returns the fd to close."""
    errors = []
    for location in settings.audit_anchors:
        try:
            location.mkdir(parents=True, exist_ok=True)
            fd = os.open(location / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            errors.append(f"{location}: {exc}")
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise OSError("no anchor location is reachable: " + "; ".join(errors))


def _last_line(path: Path) -> str | None:
    """The last complete line of `path` (a line without its newline is a torn write)."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _TAIL_BYTES))
        lines = f.read().split(b"\n")
    complete = lines[:-1]  # whatever follows the last newline is incomplete
    return complete[-1].decode("ascii", "replace") if complete and complete[-1] else None


def newest(settings: Settings, public: Ed25519PublicKey) -> Checkpoint | None:
    """The newest checkpoint any location holds (signature checked), to write the next after."""
    best: Checkpoint | None = None
    for location in settings.audit_anchors:
        try:
            files = _files(location)
            line = next((x for x in (_last_line(p) for p in reversed(files)) if x), None)
        except OSError as exc:
            log.warning("anchor location unreadable", location=str(location), error=str(exc))
            continue
        if line is None:
            continue
        found = parse(line)
        if best is not None and found.n == best.n and found != best:
            raise CheckpointInvalid(f"checkpoint {found.n} differs between anchor locations")
        if best is None or found.n > best.n:
            best = found
    if best is not None:
        check_signature(public, best)
    return best


def _drop_torn_tail(fd: int) -> None:
    """Cut a line a crashed writer left without its newline: it was never a checkpoint (readers
    skip it), and the next line must not be glued to it. Writers hold the lock, so no one else
    is writing here now."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    tail = os.pread(fd, min(size, _TAIL_BYTES), max(0, size - _TAIL_BYTES))
    cut = tail.rfind(b"\n")
    os.ftruncate(fd, max(0, size - len(tail) + cut + 1) if cut >= 0 else 0)


def append(settings: Settings, checkpoint: Checkpoint, public_raw: bytes) -> list[Path]:
    """Append `checkpoint` to every reachable location (fsynced); the locations written.

    Raises OSError when none could be written: the checkpoint does not exist then.
    """
    written, errors = [], []
    for location in settings.audit_anchors:
        try:
            location.mkdir(parents=True, exist_ok=True)
            pub = location / PUBLIC
            if not pub.exists():
                pub.write_bytes(public_raw)
            target = location / f"checkpoints-{checkpoint.written_at[:7]}.jsonl"
            new = not target.exists()
            fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                _drop_torn_tail(fd)
                os.write(fd, (checkpoint.line() + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            if new:
                dir_fd = os.open(location, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            written.append(location)
        except OSError as exc:
            errors.append(f"{location}: {exc}")
            log.error("audit checkpoint not written to an anchor location", location=str(location), error=str(exc))
    if not written:
        raise OSError("no anchor location could be written: " + "; ".join(errors))
    return written


def public_key(settings: Settings, local: bytes | None) -> Ed25519PublicKey | None:
    """The audit key's public half: this host's (`local`), else the one kept with the anchors.
    A different key in an anchor location is tampering."""
    for location in settings.audit_anchors:
        try:
            kept = (location / PUBLIC).read_bytes()
        except OSError:
            continue
        if local is not None and kept != local:
            raise CheckpointInvalid(f"the checkpoint key in {location} is not this host's audit key")
        local = local or kept
    try:
        return Ed25519PublicKey.from_public_bytes(local) if local is not None else None
    except ValueError as exc:
        raise CheckpointInvalid(f"the checkpoint key is unreadable: {exc}") from None


def _lines(location: Path) -> Iterator[tuple[int, str, Path]]:
    try:
        files = _files(location)
    except OSError:
        return
    for path in files:
        try:
            with path.open("r", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.endswith("\n") and line.strip():
                        yield parse(line).n, line.strip(), location
        except OSError as exc:
            log.warning("anchor file unreadable", path=str(path), error=str(exc))


def checkpoints(settings: Settings) -> Iterator[Checkpoint]:
    """Every checkpoint of every location, once each, in order, each linked to the one before.

    Streams: memory stays bounded however many checkpoints years of operation left.
    """
    merged = heapq.merge(*(_lines(location) for location in settings.audit_anchors), key=lambda t: t[0])
    previous: Checkpoint | None = None
    seen: tuple[int, str, Path] | None = None
    for n, line, location in merged:
        if seen is not None and seen[0] == n:
            if seen[1] != line:
                raise CheckpointInvalid(f"checkpoint {n} differs between {seen[2]} and {location}")
            continue
        seen = (n, line, location)
        current = parse(line)
        check_link(previous, current)
        yield current
        previous = current
