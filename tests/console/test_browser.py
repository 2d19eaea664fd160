"""The web console in headless Chromium: sign in, preview and confirm a manual clear, watch it finish.

The whole system runs in this process on the in-memory bus (as tests/e2e/test_clear_embedded.py),
with the console on a free port; Playwright drives the system Chromium from a child process
(browser_driver.py: Playwright needs a plain asyncio loop, and trio-asyncio owns the loop policy
in this one). With CLEARCARD_UPDATE_SCREENSHOT=1 the screenshot of the finished clear replaces docs/console.png.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import trio

from shared.authz.roles import Role
from tests.conftest import missing
from tests.console.browser_driver import CHROMIUM
from tests.console.conftest import BRANCH, Console

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"

pytestmark = pytest.mark.slow


async def test_manual_clear_in_the_browser(system: Console, tmp_path: Path) -> None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        missing("Chromium at /usr/bin/chromium", "apt-get update && apt-get install -y chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the playwright package", ".venv/bin/python -m pip install playwright")
    shot = tmp_path / "console.png"
    token = system.token(Role.OPERATOR, (BRANCH,))
    with trio.fail_after(110):
        command = [sys.executable, "-m", "tests.console.browser_driver", system.base_url, str(shot)]
        done = await trio.run_process(command,
                                      stdin=token.encode(), capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-4000:]
    result = json.loads(done.stdout)
    assert result["final"].startswith("succeeded"), result
    assert shot.stat().st_size > 10_000
    if os.environ.get("CLEARCARD_UPDATE_SCREENSHOT") == "1":  # refresh the docs' picture on purpose only
        shutil.copyfile(shot, SCREENSHOT)


async def test_device_registry_page_in_the_browser(system: Console) -> None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        missing("Chromium at /usr/bin/chromium", "apt-get update && apt-get install -y chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the playwright package", ".venv/bin/python -m pip install playwright")
    with trio.fail_after(110):
        command = [sys.executable, "-m", "tests.console.devices_driver", system.base_url]
        done = await trio.run_process(command, stdin=system.token(Role.ADMIN).encode(), capture_stdout=True,
                                      capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-4000:]
    assert "retired" in json.loads(done.stdout)["message"]
    rows = await system.db.fetch("SELECT retired_at, pin_revision FROM device_enrolments WHERE device_id = $1",
                                 "661500000077")
    assert rows[0]["retired_at"] is not None and rows[0]["pin_revision"] == 1
