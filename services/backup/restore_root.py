"""Where a backup may be restored: only under the restore root (CLEARCARD_RESTORE_ROOT).

A restore writes a taxpayer's invoices in clear on the backup service's machine. A console user
names the folder, so it is confined to one root the operator chose: `..`, absolute paths
elsewhere and symbolic links leading out are refused before anything is written, and the
files themselves are written private (services/backup/api.py).
"""

from __future__ import annotations

from pathlib import Path

from shared.errors import ClearCardError, ErrorCode


def restore_target(root: Path, to: str) -> Path:
    """The folder `to` (relative to `root`, or absolute) if it lies under `root`; INVALID_REQUEST otherwise."""
    if "\x00" in to:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, "The restore folder name contains a NUL character.")
    base = root.resolve()
    # resolve() follows every symbolic link that exists, so a link pointing out is caught here
    target = (base / to).resolve()
    if target == base or not target.is_relative_to(base):
        raise ClearCardError(
            ErrorCode.INVALID_REQUEST,
            f"Restores go into a folder under the restore root {base} (CLEARCARD_RESTORE_ROOT); {to!r} is not one.")
    return target
