"""Fixtures for the audit service tests: settings under a fresh temporary data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        amqp_url=None,
        database_url=None,
        data_dir=tmp_path / "data",
        backup_dirs=(tmp_path / "b1", tmp_path / "b2"),
        fleet_file=None,
        http_host="127.0.0.1",
        http_port=8080,
    )
