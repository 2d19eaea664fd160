"""Symmetric keys kept as files under the data dir's keys folder, shared by an installation's processes.

A key is created once, mode 0600, the first time any process needs it; processes racing to
create it agree on one file (the first link wins, the others read it).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet


def fernet_key(keys_dir: Path, file_name: str) -> bytes:
    """The Fernet key in `keys_dir/file_name`, created on first use."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / file_name
    if not path.exists():
        tmp = path.with_name(f".{file_name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, Fernet.generate_key())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process created it first: use theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()
