"""The web console in headless Chromium, as a finance team member uses it.

A person signs in with password and TOTP through the form (no token injected), in Chinese; switches
to English; previews and confirms a fleet clear of two branches and watches it; previews, confirms
and watches a manual clear; downloads the period's report; and looks at the month and the devices
in Chinese again. The whole system runs in this process on the in-memory bus with the console on a
free port; Playwright drives the system Chromium from a child process (browser_driver.py: Playwright
needs a plain asyncio loop, and trio-asyncio owns the loop policy here). With
CLEARCARD_UPDATE_SCREENSHOT=1 the screenshots replace the ones in docs/.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
import trio
from openpyxl import load_workbook

from clearcard.demo import console_device_ids, console_fleet
from shared.authz.roles import Role
from shared.china_time import CHINA
from shared.db import Database
from tests.console.browser_driver import CHROMIUM, PERIOD
from tests.console.conftest import Console, _run, _settings, add_person
from tests.support.servers import missing

DOCS = Path(__file__).resolve().parents[2] / "docs"
SHOTS = ("console-month.png", "console-fleet.png", "console-fleet-clear.png", "console-clear.png")
PASSWORD = "month-end 2026 clear"

pytestmark = pytest.mark.slow


@pytest.fixture
async def showcase(tmp_path: Path, database: Database, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Console]:
    """Every service and the console over the demo's three-branch fleet; devices take 100 ms a command."""
    monkeypatch.setenv("CLEARCARD_COORDINATOR_SCHEDULER", "0")
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(console_fleet(datetime(2026, 11, 3, 9, 0, tzinfo=CHINA), PERIOD, latency_ms=100),
                     encoding="utf-8")
    from clearcard.runtime import ALL

    async for c in _run(_settings(tmp_path, database, fleet), database, ALL):
        yield c


async def test_a_month_end_in_the_browser(showcase: Console, tmp_path: Path) -> None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        missing("Chromium at /usr/bin/chromium", "apt-get update && apt-get install -y chromium fonts-wqy-zenhei")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the playwright package", ".venv/bin/python -m pip install playwright")
    secret = await add_person(showcase.db, "chen.jing", Role.OPERATOR, ["*"], PASSWORD)
    shots = tmp_path / "shots"
    job = {"base_url": showcase.base_url, "username": "chen.jing", "password": PASSWORD, "totp_secret": secret,
           "screenshots": str(shots), "devices": len(console_device_ids()),
           "fleet_branches": ["demo-shanghai", "demo-beijing"], "fleet_devices": 6,
           "manual_branch": "demo-wuhan", "manual_device": "661500000001", "manual_devices": 4, "cleared_at_end": 8}
    with trio.fail_after(280):
        done = await trio.run_process([sys.executable, "-m", "tests.console.browser_driver"],
                                      stdin=json.dumps(job).encode(), capture_stdout=True, capture_stderr=True,
                                      check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-4000:]
    seen = json.loads(done.stdout)
    assert seen["month_title_zh"] == "本月概览"
    assert seen["fleet_counts"] == "4 of 6 cleared · 2 failed · 0 in progress"
    assert seen["manual_final"].startswith("succeeded")
    assert seen["failing_tile"] == "2"
    assert "一窗式比对未通过" in seen["failure_words"] and "增值税纳税申报尚未完成" in seen["failure_words"]
    assert "004:已清卡" in seen["device_row"] and "税务UKey" in seen["device_row"]
    report = load_workbook(shots / seen["report_name"], read_only=True)
    assert len(list(report["Device detail"].iter_rows())) == 1 + len(console_device_ids())
    for name in SHOTS:
        assert (shots / name).stat().st_size > 20_000, name
    if os.environ.get("CLEARCARD_UPDATE_SCREENSHOT") == "1":  # refresh the docs' pictures on purpose only
        for name in SHOTS:
            shutil.copyfile(shots / name, DOCS / name)


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
