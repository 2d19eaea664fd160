"""Commands to the backup service; routing key backup.<op>."""

from __future__ import annotations

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
