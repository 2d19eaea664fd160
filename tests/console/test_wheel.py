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


def _missing_from(folder: Path) -> list[str]:
    """What the console needs at run time that the wheel in `folder` lacks."""
    [wheel] = folder.glob("clearcard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = [f"services/console/static/{f.name}" for f in sorted((ROOT / "services/console/static").iterdir())]
    wanted += ["shared/i18n/locale/zh_CN/LC_MESSAGES/clearcard.po", "shared/db/migrations/0050_console_month.sql"]
    return [name for name in wanted if name not in names]


async def test_the_wheel_holds_the_console_and_its_words(tmp_path: Path) -> None:
    build = ROOT / "build"
    leftover = await trio.Path(build).exists()
    with trio.fail_after(300):
        await trio.run_process([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path),
                                str(ROOT)], cwd=tmp_path, stdout=subprocess.DEVNULL, capture_stderr=True)
    if not leftover:  # setuptools' work folder in the checkout: gone again, so no later build reuses it
        await trio.to_thread.run_sync(lambda: shutil.rmtree(build, ignore_errors=True))
    assert await trio.to_thread.run_sync(_missing_from, tmp_path) == []
