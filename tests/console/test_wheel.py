"""A plain install carries what the console reads at run time: its web files and the catalogue."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


async def test_the_wheel_holds_the_console_and_its_words(tmp_path: Path) -> None:
    build = ROOT / "build"
    leftover = build.exists()
    with trio.fail_after(300):
        await trio.run_process([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                                "-w", str(tmp_path), str(ROOT)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                               capture_stderr=True)
    if not leftover:  # setuptools' work folder in the checkout: gone again, so no later build reuses it
        shutil.rmtree(build, ignore_errors=True)
    [wheel] = tmp_path.glob("clearcard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for static in sorted((ROOT / "services/console/static").iterdir()):
        assert f"services/console/static/{static.name}" in names
    assert "shared/i18n/locale/zh_CN/LC_MESSAGES/clearcard.po" in names
    assert "shared/db/migrations/0050_console_month.sql" in names
