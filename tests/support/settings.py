"""Settings for tests that hand the bus and database over themselves: everything under one folder."""

from __future__ import annotations

from pathlib import Path

from shared.config import Settings


def local_settings(data_dir: Path, *, backup_dirs: tuple[Path, ...] | None = None,
                   fleet_file: Path | None = None) -> Settings:
    """No broker or database URL; backups in `data_dir`'s b1 and b2 unless given."""
    return Settings(amqp_url=None, database_url=None, data_dir=data_dir,
                    backup_dirs=(data_dir / "b1", data_dir / "b2") if backup_dirs is None else backup_dirs,
                    fleet_file=fleet_file, http_host="127.0.0.1", http_port=8080)
