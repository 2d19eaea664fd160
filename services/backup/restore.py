"""Restoring a backup into a folder as a stream (blocking I/O: run in a thread).

The folder gets `manifest.json`, `invoices.json` (one JSON array, written invoice by invoice),
`monitoring.json`, `summaries.json` and `device_record.json`. They are written under temporary
names and renamed only after the whole copy decrypted and its checksum matched, so a damaged
copy leaves nothing behind and the next copy is tried; memory holds one chunk.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import uuid
from pathlib import Path
from typing import Any, TextIO

from services.backup import sealed, storage
from services.backup.snapshot import Head
from shared.config import Settings

PARTS = ("manifest", "invoices", "monitoring", "summaries", "device_record")


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


class _InvoicesFile:
    """A JSON array written one element at a time, laid out as `json.dumps(..., indent=2)` would."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._count = 0

    def add(self, invoices: list[dict[str, Any]]) -> None:
        for invoice in invoices:
            self._out.write(("[\n  " if self._count == 0 else ",\n  ") + _pretty(invoice).replace("\n", "\n  "))
            self._count += 1

    def close(self) -> None:
        self._out.write("\n]\n" if self._count else "[]\n")


class _Restored:
    """The folder's files under temporary names until `commit`."""

    def __init__(self, to_dir: Path) -> None:
        self.to_dir = to_dir
        self._tag = uuid.uuid4().hex[:12]
        self.written: list[str] = []

    def _tmp(self, part: str) -> Path:
        return self.to_dir / f".{part}.json.{self._tag}.partial"

    def open(self, part: str) -> TextIO:
        self.written.append(part)
        # a taxpayer's invoices in clear: readable by this account only (the rename keeps the
        # mode), and never written through a link planted under the temporary name
        fd = os.open(self._tmp(part), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        return os.fdopen(fd, "w", encoding="utf-8")

    def small(self, part: str, value: Any) -> None:
        with self.open(part) as out:
            out.write(_pretty(value) + "\n")

    def commit(self) -> None:
        for part in self.written:
            os.replace(self._tmp(part), self.to_dir / f"{part}.json")

    def discard(self) -> None:
        for part in self.written:
            with contextlib.suppress(OSError):
                self._tmp(part).unlink()


def _restore_copy(settings: Settings, path: Path, checksum: str, to_dir: Path) -> None:
    """Restore from one copy; raises CopyDamaged/OSError with nothing left behind."""
    restored = _Restored(to_dir)
    try:
        with storage.reading(settings, path) as (source, parts), restored.open("invoices") as out:
            invoices = _InvoicesFile(out)
            for part in parts:
                if isinstance(part, Head):
                    restored.small("manifest", part.manifest)
                    restored.small("monitoring", part.monitoring)
                    restored.small("summaries", part.summaries)
                    restored.small("device_record", part.device_record)
                else:
                    invoices.add(part)
            invoices.close()
            if not hmac.compare_digest(source.checksum(), checksum):
                raise sealed.CopyDamaged("has a checksum that does not match (damaged)")
        restored.commit()
    except BaseException:
        restored.discard()
        raise


def restore_first_intact(
    settings: Settings, locations: list[str], file_name: str, checksum: str, to_dir: Path
) -> list[storage.CopyStatus]:
    """Restore from the first copy that reads back whole; the statuses seen on the way (last ok if done).

    A problem with a copy moves on to the next; an OSError is the target folder's and stops.
    """
    created = not to_dir.exists()
    to_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    seen: list[storage.CopyStatus] = []
    for location in locations:
        try:
            _restore_copy(settings, Path(location) / file_name, checksum, to_dir)
        except sealed.CopyDamaged as exc:
            seen.append(storage.CopyStatus(location, False, f"the copy {exc}"))
        else:
            seen.append(storage.CopyStatus(location, True))
            return seen
    if created:
        with contextlib.suppress(OSError):
            to_dir.rmdir()
    return seen
