"""Drives the web console in headless Chromium (run by test_browser.py in a child process).

Usage: python -m tests.console.browser_driver < job.json; prints one JSON object. The job names
the console's URL, a person's user name, password and TOTP secret, and where screenshots go.
The person signs in through the form (in Chinese, the console's default), switches to English,
previews and confirms a fleet clear, previews and confirms a manual clear and watches it, then
looks at the month and the devices in Chinese again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# the machine's closed network refuses Chromium's background connections: keep it from trying
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PERIOD = "2026-10"


def _when(page: Any, condition: str) -> bool:
    """Wait up to 20 s for a moment worth a picture; False if it passed unseen (the picture is taken anyway)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition, timeout=20_000, polling=50)
    except PlaywrightTimeout:
        return False
    return True


def _drive(job: dict[str, Any]) -> dict[str, Any]:
    import pyotp
    from playwright.sync_api import expect, sync_playwright

    shots = Path(job["screenshots"])
    shots.mkdir(parents=True, exist_ok=True)
    seen: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900}, accept_downloads=True)
            page.goto(job["base_url"])
            # Chinese first: the sign-in form speaks it before anyone chooses
            expect(page.locator("#login-submit")).to_have_text("登录", timeout=20_000)
            page.fill("#login-user", job["username"])
            page.fill("#login-password", job["password"])
            page.fill("#login-totp", pyotp.TOTP(job["totp_secret"]).now())
            page.click("#login-submit")
            expect(page.locator('[data-tile="devices"] .value')).to_have_text(str(job["devices"]), timeout=20_000)
            expect(page.locator('[data-tile="cleared"] .label')).to_have_text("已清卡")
            seen["month_title_zh"] = page.locator("#nav-month").inner_text()

            page.click("#language")  # English, one click away ...
            expect(page.locator("#nav-month")).to_have_text("Month at a glance")
            page.reload()  # ... and remembered
            expect(page.locator('[data-tile="cleared"] .label')).to_have_text("Cleared", timeout=20_000)

            page.click("#nav-fleetclear")
            page.fill("#fc-branches", " ".join(job["fleet_branches"]))
            page.fill("#fc-period", PERIOD)
            page.click("#fc-preview")
            expect(page.locator("#fc-summary")).to_contain_text(f"{job['fleet_devices']} devices in 2 branches",
                                                               timeout=30_000)
            page.click("#fc-confirm")
            expect(page.locator("#fc-status")).to_be_visible(timeout=30_000)
            # the picture of a running fleet clear: some devices done, others still going
            seen["fleet_pictured_running"] = _when(page, """() => {
                const box = document.querySelector('#fc-status');
                const line = document.querySelector('#fc-status .counts-line');
                return box && box.dataset.finished === 'false' && line && !line.textContent.startsWith('0 of');
            }""")
            page.screenshot(path=str(shots / "console-fleet-clear.png"), full_page=True)
            expect(page.locator("#fc-status")).to_have_attribute("data-finished", "true", timeout=90_000)
            seen["fleet_counts"] = page.locator("#fc-status .counts-line").inner_text()

            page.click("#nav-clear")
            page.fill("#clear-branch", job["manual_branch"])
            page.fill("#clear-period", PERIOD)
            page.click("#preview")
            expect(page.locator("#plan-table")).to_contain_text(job["manual_device"], timeout=30_000)
            page.click("#confirm")
            seen["manual_pictured_running"] = _when(page, """() => {
                const done = [...document.querySelectorAll('.progress-device .percent')]
                    .map((e) => parseInt(e.textContent));
                return !document.querySelector('#clear-final').dataset.status && done.some((n) => n >= 50);
            }""")
            page.screenshot(path=str(shots / "console-clear.png"), full_page=True)
            expect(page.locator("#clear-final")).to_have_attribute("data-status", "succeeded", timeout=90_000)
            expect(page.locator("table.timeline")).to_have_count(job["manual_devices"], timeout=20_000)
            expect(page.locator(f'table.timeline[data-device="{job["manual_device"]}"]')).to_contain_text(
                "written back (反写)")
            seen["manual_final"] = page.locator("#clear-final").inner_text()

            page.click("#nav-reports")
            page.fill("#report-period", PERIOD)
            with page.expect_download(timeout=30_000) as download:
                page.click("#report-xlsx")
            seen["report_name"] = download.value.suggested_filename
            download.value.save_as(str(shots / seen["report_name"]))

            page.click("#language")  # back to Chinese for the pictures of the month and the devices
            page.click("#nav-month")
            expect(page.locator('[data-tile="cleared"] .value')).to_have_text(str(job["cleared_at_end"]),
                                                                              timeout=20_000)
            expect(page.locator("#month-chart svg rect").first).to_be_visible()
            seen["failing_tile"] = page.locator('[data-tile="failing"] .value').inner_text()
            seen["failure_words"] = page.locator("#month-failures").inner_text()
            page.screenshot(path=str(shots / "console-month.png"), full_page=True)
            page.click("#nav-fleet")
            expect(page.locator("tr.device")).to_have_count(job["devices"], timeout=20_000)
            page.locator(f'tr.device[data-device="{job["manual_device"]}"]').click()
            expect(page.locator("#device-detail")).to_contain_text("数据报送起始日期", timeout=20_000)
            seen["device_row"] = page.locator(f'tr.device[data-device="{job["manual_device"]}"]').inner_text()
            page.screenshot(path=str(shots / "console-fleet.png"), full_page=True)
            return seen
        finally:
            browser.close()


if __name__ == "__main__":
    print(json.dumps(_drive(json.loads(sys.stdin.read()))))
