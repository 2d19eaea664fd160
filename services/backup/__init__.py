"""The backup service: encrypted, content-named snapshots of a device's period in several places.

No write-back happens without a verified backup of that device's period (contract §4); the
coordinator asks for one with `backup.take` and gets an answer only once every copy was read
back intact.
"""

from services.backup.api import check_copies, list_backups, restore_backup, take_backup, verify_backup
from services.backup.repair import repair_backup, rotate_backup_key
from services.backup.retention import keep_from_env, prune
from services.backup.sealed import create_key as rotate_key
from services.backup.service import run_backup

__all__ = ["check_copies", "keep_from_env", "list_backups", "prune", "repair_backup", "restore_backup",
           "rotate_backup_key", "rotate_key", "run_backup", "take_backup", "verify_backup"]
