"""Every Grafana panel's query, evaluated by a real Prometheus scraping the console after test clears.

Prometheus comes from Debian's package (scripts/services unpacks it under
/opt/clearcard-test/prometheus, or set CLEARCARD_TEST_PROMETHEUS to a binary). It scrapes the
console's /metrics every second while the whole system clears a branch twice (one device
clears, one fails NOT_DECLARED); then each panel's PromQL runs through Prometheus' own query
API and must return data: at least one series with a finite value.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from shared.authz.roles import Role
from shared.db import Database
from tests.console.conftest import Console, _run, _settings
from tests.notify.test_notify import free_port
from tests.support.fleets import BRANCH, two_family_fleet
from tests.support.servers import missing

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "clearcard.json"
UNPACKED = Path("/opt/clearcard-test/prometheus/usr/bin/prometheus")


def prometheus_binary() -> str:
    found = os.environ.get("CLEARCARD_TEST_PROMETHEUS") or shutil.which("prometheus")
    if found is None and UNPACKED.exists():
        found = str(UNPACKED)
    if found is None:
        missing("the Prometheus binary", "bash scripts/services (unpacks Debian's prometheus package)")
    assert found is not None
    return found


@pytest.fixture
async def system(tmp_path: Path, database: Database, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CLEARCARD_COORDINATOR_SCHEDULER", "0")
    fleet = two_family_fleet(tmp_path / "fleet.toml", declared=False)  # the UKey's return is not filed
    async for console in _run(_settings(tmp_path, database, fleet), database, ("audit", "authority-sim", "gateway",
                                                                              "backup", "auth", "coordinator")):
        yield console


async def _until(what: str, check: Any, seconds: float = 60) -> Any:
    """Poll an external process (Prometheus has no event to wait on) until `check()` is truthy."""
    with trio.fail_after(seconds):
        while not (value := await check()):  # noqa: ASYNC110 - an external process: nothing to wait on
            await trio.sleep(0.25)
    return value


async def _query(prom: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    answer = (await prom.get("/api/v1/query", params={"query": expr})).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


async def _clear(console: Console) -> dict[str, Any]:
    async with console.client(Role.OPERATOR, (BRANCH,)) as http:
        answer = await http.post("/api/clears", params={"wait": True},
                                 json={"branch_id": BRANCH, "period": "2026-10", "mode": "auto"})
        final: dict[str, Any] = answer.json()["final"]
        return final


async def test_every_dashboard_panel_has_data_after_a_test_clear(system: Console, tmp_path: Path) -> None:
    binary = prometheus_binary()
    target = system.base_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "clearcard-console", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target]}]}]}), encoding="utf-8")
    port = free_port()
    process = await trio.lowlevel.open_process(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as prom:
            async def up() -> bool:
                try:
                    ready = await prom.get("/-/ready")
                except httpx.HTTPError:
                    return False  # not listening yet
                # while it starts, Prometheus answers 503 in plain text: not ready for queries yet
                return ready.status_code == 200 and bool(await _query(prom, 'up{job="clearcard-console"} == 1'))

            await _until("the console is scraped", up)
            first = await _clear(system)
            assert first["status"] == "partial", first
            assert {r["outcome"] for r in first["results"]} == {"cleared", "failed"}

            async def scraped_clears() -> bool:
                return bool(await _query(prom, 'clearcard_device_clears_total{outcome="failed"}'))

            await _until("the first clear is scraped", scraped_clears)
            second = await _clear(system)  # already cleared once, and the return is still not filed
            assert {r["outcome"] for r in second["results"]} == {"already_cleared", "failed"}

            async def rates() -> bool:
                return _finite(await _query(prom, "sum(rate(clearcard_step_duration_seconds_count[5m])) > 0"))

            await _until("the second clear is scraped", rates)
            panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
            empty = []
            for panel in panels:
                for t in panel["targets"]:
                    result = await _query(prom, t["expr"])
                    if not _finite(result):
                        empty.append((panel["title"], t["expr"], result))
            assert not empty, empty
            names = {r["metric"]["__name__"] for r in await _query(prom, '{__name__=~"clearcard_.*"}')}
            assert {"clearcard_device_clears_total", "clearcard_step_duration_seconds_bucket"} <= names
    finally:
        process.terminate()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
