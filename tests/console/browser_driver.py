"""Drives the web console in headless Chromium (run by test_browser.py in a child process).

Usage: python -m tests.console.browser_driver BASE_URL SCREENSHOT < token; prints one JSON object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.e2e.fleets import BRANCH

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def _drive(base_url: str, token: str, screenshot: Path) -> dict[str, str]:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base_url)
            page.fill("#login-token", token)
            page.click("#login-token-submit")
            expect(page.locator("tr.device")).to_have_count(2, timeout=20_000)
            expect(page.locator(f'.branch[data-branch="{BRANCH}"] h3')).to_contain_text(BRANCH)
            page.locator('tr.device[data-device="661500000001"]').click()
            expect(page.locator("#device-detail")).to_contain_text("report_window_start", timeout=20_000)
            page.click("#device-clear")  # the clear view, prefilled with this device
            page.fill("#clear-devices", "")  # ... widened to the whole branch
            page.click("#preview")
            expect(page.locator("#plan-table")).to_contain_text("539900000004", timeout=30_000)
            expect(page.locator("#confirm")).to_be_visible()
            page.click("#confirm")
            expect(page.locator("#clear-final")).to_have_attribute("data-status", "succeeded", timeout=60_000)
            expect(page.locator("table.timeline")).to_have_count(2, timeout=20_000)
            expect(page.locator('table.timeline[data-device="661500000001"]')).to_contain_text("written_back")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            final = page.locator("#clear-final").inner_text()
            page.click("#nav-fleet")
            expect(page.locator('tr.device[data-device="661500000001"]')).to_contain_text("004:cleared",
                                                                                          timeout=20_000)
            return {"final": final}
        finally:
            browser.close()



if __name__ == "__main__":
    print(json.dumps(_drive(sys.argv[1], sys.stdin.read().strip(), Path(sys.argv[2]))))
