"""Writing backup copies atomically and reading them back (blocking I/O: run in a thread)."""

from __future__ import annotations

import contextlib
import hmac
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.backup import sealed
from shared.config import Settings


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


def write_atomically(location: Path, file_name: str, data: bytes) -> None:
    """Temp file, fsync, rename, fsync the directory: a copy is whole or absent.

    One fsync for the file and one for its folder (plus one for the location when the device's
    folder is new, so the folder itself survives a power loss).
    """
    target = location / file_name
    try:
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(target.parent.parent)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(target.parent)
    except OSError as exc:
        raise LocationFailed(str(location), exc.strerror or str(exc)) from None


def write_everywhere(locations: tuple[Path, ...], file_name: str, data: bytes) -> None:
    """A copy in every location, written at once; raises LocationFailed naming the first that failed.

    The locations are usually different disks: their fsyncs overlap instead of adding up.
    """
    if len(locations) <= 1:
        for location in locations:
            write_atomically(location, file_name, data)
        return
    with ThreadPoolExecutor(max_workers=len(locations), thread_name_prefix="backup-copy") as pool:
        futures = [pool.submit(write_atomically, location, file_name, data) for location in locations]
    for future in futures:  # in location order, so the error names the first location that failed
        future.result()


def check_copy(
    settings: Settings, location: str, file_name: str, expected_checksum: str
) -> tuple[CopyStatus, dict[str, Any] | None]:
    """Read one copy back: checksum, then decryption; returns its status and the snapshot."""
    try:
        data = (Path(location) / file_name).read_bytes()
    except FileNotFoundError:
        return CopyStatus(location, False, "the copy is missing"), None
    except OSError as exc:
        return CopyStatus(location, False, f"the copy cannot be read: {exc.strerror}"), None
    if not hmac.compare_digest(sealed.checksum(data), expected_checksum):
        return CopyStatus(location, False, "the copy's checksum does not match (damaged)"), None
    try:
        snapshot = sealed.unseal(data, lambda key_id: sealed.load_key(settings, key_id))
    except sealed.CopyDamaged as exc:
        return CopyStatus(location, False, f"the copy {exc}"), None
    return CopyStatus(location, True), snapshot


def check_all(
    settings: Settings, locations: list[str], file_name: str, expected_checksum: str
) -> list[CopyStatus]:
    """Every copy's status, in location order."""
    return [check_copy(settings, loc, file_name, expected_checksum)[0] for loc in locations]


def first_intact(
    settings: Settings, locations: list[str], file_name: str, expected_checksum: str
) -> tuple[dict[str, Any] | None, list[CopyStatus]]:
    """The snapshot from the first intact copy (None if none), and the statuses seen on the way."""
    seen = []
    for location in locations:
        status, snapshot = check_copy(settings, location, file_name, expected_checksum)
        seen.append(status)
        if snapshot is not None:
            return snapshot, seen
    return None, seen
