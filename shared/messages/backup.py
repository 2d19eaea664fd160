"""Commands to the backup service; routing key backup.<op>."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shared.messages.base import DeviceId, Frozen, Period


class TakeBackup(Frozen):
    """`take`: snapshot the device's period to every location and verify it."""

    request_id: str
    device_id: DeviceId
    period: Period
    gateway_id: str


class BackupTaken(Frozen):
    backup_id: str
    checksum: str
    locations: list[str]


class VerifyBackup(Frozen):
    """`verify`: read every copy back."""

    backup_id: str


class BackupVerified(Frozen):
    backup_id: str
    ok: bool
    damaged: list[str]  # locations whose copy is missing or does not verify


# Front ends' requests (queue clearcard.backup.admin, routing keys backup.admin.<op>).

LIST_LIMIT = 500  # backups per answer at most
PAGE_BYTES = 48_000  # and about this much JSON: the bus refuses a message over 64 KiB


class ListBackups(Frozen):
    """`backup.admin.list`: one page of backups, oldest first (by taken_at, then backup_id).

    `after` is the cursor: the `[taken_at, backup_id]` of the previous page's last backup.
    `branches`, when given, limits the page to the devices of those branches (a branch-scoped
    caller's). A page holds at most `limit` backups and about PAGE_BYTES of JSON."""

    backup_id: str | None = Field(None, max_length=300)
    device_id: str | None = Field(None, max_length=200)
    branches: list[str] | None = Field(None, max_length=1000)
    after: tuple[str, str] | None = None
    limit: int = Field(LIST_LIMIT, ge=1, le=LIST_LIMIT)


class BackupList(Frozen):
    backups: list[dict[str, Any]]  # as `clearcard backup list --json` shows each
    after: tuple[str, str] | None = None  # the next page's cursor; None: this was the last page


class RestoreBackup(Frozen):
    """`backup.admin.restore`: decrypt a backup into `to`, a folder under the backup service's
    restore root (CLEARCARD_RESTORE_ROOT; a relative path is taken from the root)."""

    backup_id: str = Field(max_length=300)
    to: str = Field(min_length=1, max_length=1024)
    force: bool = False


class BackupRestored(Frozen):
    backup_id: str
    device_id: str
    restored_to: str
