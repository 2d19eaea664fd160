"""Writing backup copies as streams to every location and reading them back (blocking I/O: threads).

A new backup is written chunk by chunk into a temporary file in every location at once; only
when the last chunk is in are the files flushed (fsync), renamed to their checksum name, and
their folders flushed. A copy is therefore whole or absent, and memory holds one chunk, never
the period. Reading a copy back streams it too: checksum, then every chunk's decryption.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from services.backup import chunked, sealed
from services.backup.snapshot import Head, walk
from shared.config import Settings

T = TypeVar("T")
Part = Head | list[dict[str, Any]]  # what a stored copy yields: its head, then invoice batches
READ_BLOCK = 1024 * 1024
# A copy being written is touched by every chunk; one untouched this long was left by a process
# that died mid-write (a crash, SIGKILL, power loss) and is never renamed: it is swept away.
ABANDONED_AFTER_S = 3600.0


class LocationFailed(Exception):
    """A copy could not be written to one location."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason


@dataclass(frozen=True)
class CopyStatus:
    """One stored copy as read back: intact, or why not."""

    location: str
    ok: bool
    reason: str | None = None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _at_once(work: Callable[[T], None], items: list[T]) -> None:
    """`work` on every item in parallel threads (locations are usually different disks)."""
    if len(items) <= 1:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="backup-copy") as pool:
        futures = [pool.submit(work, item) for item in items]
    for future in futures:  # in location order, so the error names the first location that failed
        future.result()


@dataclass
class _Incoming:
    location: Path
    folder: Path
    tmp: Path
    out: BinaryIO | None


def sweep_abandoned(folder: Path) -> None:
    """Remove the unfinished copies in a device's folder that no writer has touched for
    ABANDONED_AFTER_S. A copy another replica is writing now is left alone."""
    limit = time.time() - ABANDONED_AFTER_S
    for tmp in folder.glob(".incoming.*.tmp"):
        with contextlib.suppress(OSError):  # gone already, or not ours to remove: not this backup's concern
            if tmp.stat().st_mtime < limit:
                tmp.unlink()


class NewCopies:
    """One new backup being written to every location; `commit` names it, `discard` drops it."""

    def __init__(self, locations: tuple[Path, ...], device_id: str) -> None:
        self.locations = locations
        self._incoming: list[_Incoming] = []
        self._hash = hashlib.sha256()
        self.size = 0
        try:
            for location in locations:
                self._incoming.append(self._open(location, device_id))
        except LocationFailed:
            self.discard()
            raise

    @staticmethod
    def _open(location: Path, device_id: str) -> _Incoming:
        folder = location / device_id
        try:
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                _fsync_dir(location)  # so the device's folder itself survives a power loss
            sweep_abandoned(folder)
            tmp = folder / f".incoming.{uuid.uuid4().hex}.tmp"
            return _Incoming(location, folder, tmp, open(tmp, "xb"))
        except OSError as exc:
            raise LocationFailed(str(location), exc.strerror or str(exc)) from None

    def write(self, data: bytes) -> None:
        """Append bytes to every copy; raises LocationFailed naming the first that failed."""
        for incoming in self._incoming:
            try:
                assert incoming.out is not None
                incoming.out.write(data)
            except OSError as exc:
                raise LocationFailed(str(incoming.location), exc.strerror or str(exc)) from None
        self._hash.update(data)
        self.size += len(data)

    @property
    def checksum(self) -> str:
        """SHA-256 of everything written so far (the file's name once committed)."""
        return self._hash.hexdigest()

    def commit(self, file_name: str) -> None:
        """Flush every copy, rename it to `file_name` (relative to its location), flush folders."""

        def finish(incoming: _Incoming) -> None:
            try:
                assert incoming.out is not None
                incoming.out.flush()
                os.fsync(incoming.out.fileno())
                incoming.out.close()
                incoming.out = None
                os.replace(incoming.tmp, incoming.location / file_name)
                _fsync_dir(incoming.folder)
            except OSError as exc:
                raise LocationFailed(str(incoming.location), exc.strerror or str(exc)) from None

        _at_once(finish, self._incoming)

    def discard(self) -> None:
        """Close and remove whatever was not committed; never raises."""
        for incoming in self._incoming:
            with contextlib.suppress(OSError):
                if incoming.out is not None:
                    incoming.out.close()
                    incoming.out = None
                incoming.tmp.unlink(missing_ok=True)

    def remove(self, file_name: str) -> None:
        """Delete committed copies again (another take of the same request won the race)."""
        for incoming in self._incoming:
            with contextlib.suppress(OSError):
                (incoming.location / file_name).unlink(missing_ok=True)


def copy_atomically(source: Path, location: Path, file_name: str) -> None:
    """Copy a stored file into another location as a stream: temp file, fsync, rename, fsync folder."""
    target = location / file_name
    try:
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(target.parent.parent)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(source, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, READ_BLOCK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(target.parent)
    except OSError as exc:
        raise LocationFailed(str(location), exc.strerror or str(exc)) from None


class CopyMissing(sealed.CopyDamaged):
    """The copy is not where its backup's row says."""


@contextlib.contextmanager
def reading(settings: Settings, path: Path) -> Iterator[tuple[chunked.HashingReader, Iterator[Part]]]:
    """A stored copy opened for streaming: its hashing reader and its parts (head, invoice batches).

    Every problem with the copy, opening and reading included, is a CopyDamaged (CopyMissing
    when it is not there), so an OSError that escapes belongs to the caller's own files.
    """
    try:
        raw = open(path, "rb", buffering=READ_BLOCK)  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise CopyMissing("is missing") from None
    except OSError as exc:
        raise sealed.CopyDamaged(f"cannot be read: {exc.strerror}") from None
    with raw:
        source = chunked.HashingReader(raw)
        documents = chunked.read_documents(source, lambda key_id: sealed.load_key(settings, key_id))
        yield source, walk(documents)


def check_copy(settings: Settings, location: str, file_name: str, expected_checksum: str) -> CopyStatus:
    """Read one copy back as a stream: every chunk decrypts, the structure holds, the checksum matches.

    A copy that fails is read to its end, so a changed file is named by its checksum first
    (plain damage), and a decryption problem of an unchanged file (a missing key) by itself.
    """
    try:
        with reading(settings, Path(location) / file_name) as (source, parts):
            try:
                for _ in parts:
                    pass
                damage = None
            except sealed.CopyDamaged as exc:
                damage = exc
                while source.read(READ_BLOCK):
                    pass
            if not hmac.compare_digest(source.checksum(), expected_checksum):
                return CopyStatus(location, False, "the copy's checksum does not match (damaged)")
            if damage is not None:
                raise damage
    except sealed.CopyDamaged as exc:
        return CopyStatus(location, False, f"the copy {exc}")
    return CopyStatus(location, True)


def check_all(
    settings: Settings, locations: list[str], file_name: str, expected_checksum: str
) -> list[CopyStatus]:
    """Every copy's status, in location order."""
    return [check_copy(settings, loc, file_name, expected_checksum) for loc in locations]
