"""Fixtures for the audit service tests: settings under a fresh temporary data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import Settings
from tests.support.settings import local_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return local_settings(tmp_path / "data", backup_dirs=(tmp_path / "b1", tmp_path / "b2"))
