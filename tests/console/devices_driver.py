"""Drives the console's device registry page in headless Chromium (run by test_browser.py).

Usage: python -m tests.console.devices_driver BASE_URL < admin token; prints one JSON object.
"""

from __future__ import annotations

import json
import sys

from tests.console.browser_driver import ARGS, CHROMIUM
from tests.support.fleets import BRANCH

NEW = "661500000077"


def _drive(base_url: str, token: str) -> dict[str, str]:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base_url)
            page.evaluate("token => sessionStorage.setItem('clearcard.token', token)", token)
            page.click("#nav-devices")
            expect(page.locator("#devices tbody tr")).to_have_count(2, timeout=20_000)
            page.fill("#import-text", "device_id,family,taxpayer_id,branch,machine_no\n"
                                      f"{NEW},ukey,91420100MA4K0001XK,{BRANCH},2\n"
                                      f"{NEW},ukey,91420100MA4K0001XK,{BRANCH},3\n")
            page.click("#import-form button[type=submit]")
            expect(page.locator("#import-errors")).to_contain_text("line 3", timeout=20_000)
            page.fill("#import-text", f"device_id,family,taxpayer_id,branch,machine_no\n"
                                      f"{NEW},ukey,91420100MA4K0001XK,{BRANCH},2\n")
            page.click("#import-form button[type=submit]")
            expect(page.locator("#message")).to_contain_text("1 enrolled", timeout=20_000)
            row = page.locator(f'#devices tr[data-device="{NEW}"]')
            expect(row).to_contain_text("missing", timeout=20_000)
            page.once("dialog", lambda dialog: dialog.accept("12345678"))
            row.locator("button[data-pin]").click()
            expect(row).to_contain_text("on record", timeout=20_000)
            page.once("dialog", lambda dialog: dialog.accept())
            row.locator("button[data-retire]").click()
            expect(row).to_contain_text("retired", timeout=20_000)
            return {"message": page.locator("#message").inner_text()}
        finally:
            browser.close()


if __name__ == "__main__":
    print(json.dumps(_drive(sys.argv[1], sys.stdin.read().strip())))
