"""Retention: which backups to keep, and pruning the rest from the table and every location.

The rule (`CLEARCARD_BACKUP_KEEP`, default 3): for each device and period, the N newest backups
are kept. Whatever N is, a period that was written back keeps its newest backup and the backup
its write-back relied on (the evidence that no write-back happened without one). Nothing else
is ever removed: periods are never dropped as a whole.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import trio

from services.backup import store
from shared.config import Settings
from shared.db.pool import Database

log = structlog.get_logger("clearcard.backup")

KEEP_ENV = "CLEARCARD_BACKUP_KEEP"
DEFAULT_KEEP = 3


def keep_from_env(environ: Mapping[str, str] | None = None) -> int:
    """N from `CLEARCARD_BACKUP_KEEP` (a whole number >= 1; unset or empty = 3)."""
    raw = (os.environ if environ is None else environ).get(KEEP_ENV, "").strip()
    if not raw:
        return DEFAULT_KEEP
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{KEEP_ENV} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class WriteBack:
    """A device's period that was written back, and the backup the write-back relied on."""

    device_id: str
    period: str
    backup_id: str | None


def choose_expired(rows: Iterable[store.BackupRow], writebacks: Iterable[WriteBack], keep: int) -> list[str]:
    """The ids of the backups the rule does not keep (pure: no I/O)."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    relied_on = {w.backup_id for w in writebacks if w.backup_id}
    groups: dict[tuple[str, str], list[store.BackupRow]] = defaultdict(list)
    for row in rows:
        groups[(row.device_id, row.period)].append(row)
    expired = []
    for group in groups.values():
        newest_first = sorted(group, key=lambda r: (r.taken_at, r.backup_id), reverse=True)
        # keep >= 1, so a written-back period's newest backup is always among the kept ones
        expired += [r.backup_id for r in newest_first[keep:] if r.backup_id not in relied_on]
    return sorted(expired)


@dataclass
class PruneReport:
    keep: int
    removed: list[str] = field(default_factory=list)
    kept: int = 0
    # locations where a removed backup's file could not be deleted (left as an encrypted orphan)
    leftovers: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_json(self) -> dict[str, object]:
        return {"keep": self.keep, "removed": self.removed, "kept": self.kept,
                "leftovers": self.leftovers, "dry_run": self.dry_run}


def _remove_files(rows: list[store.BackupRow]) -> list[str]:
    leftovers = []
    for row in rows:
        for location in row.locations:
            try:
                (Path(location) / row.file_name).unlink(missing_ok=True)
            except OSError as exc:
                leftovers.append(f"{location}/{row.file_name}: {exc.strerror}")
    return leftovers


async def prune(db: Database, settings: Settings, keep: int | None = None, *, dry_run: bool = False) -> PruneReport:
    """Apply the retention rule: drop expired backups' rows, then their files in every location."""
    del settings  # locations come from each backup's own row
    keep = keep_from_env() if keep is None else keep
    rows = await db.run(store.all_backups)
    writebacks = [WriteBack(*w) for w in await db.run(store.written_back)]
    expired = choose_expired(rows, writebacks, keep)
    report = PruneReport(keep=keep, kept=len(rows) - len(expired), dry_run=dry_run)
    if dry_run or not expired:
        report.removed = expired
        return report
    # rows first: a crash between the two steps leaves unreferenced encrypted files, never a row
    # that points at nothing
    removed = await db.run(store.delete, expired)
    report.removed = sorted(r.backup_id for r in removed)
    report.leftovers = await trio.to_thread.run_sync(_remove_files, removed)
    log.info("backups pruned", keep=keep, removed=len(removed), leftovers=len(report.leftovers))
    return report
