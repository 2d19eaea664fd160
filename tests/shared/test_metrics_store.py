"""Metrics recorded by each process in PostgreSQL, summed by the console, cheap to scrape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from services.console import metrics_view
from services.console.context import ConsoleContext
from services.console.events import EventHub
from shared import metrics, metrics_store
from shared.authz.tokens import KeyRing
from shared.bus.memory import MemoryBus
from shared.config import Settings
from shared.db import Database

pytestmark = pytest.mark.postgres
SAMPLE = "clearcard_device_clears_total"


def _value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def _rows(rows: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    return [(s, json.dumps(json.loads(labels), sort_keys=True, separators=(",", ":")), v) for s, labels, v in rows]


async def test_processes_add_up_and_stopped_ones_are_folded_without_losing_counts(database: Database) -> None:
    cleared = '{"error_code":"","outcome":"cleared"}'  # canonical: sorted keys, no spaces
    await database.call(metrics_store.flush, "gateway-host:1", [(SAMPLE, cleared, 3.0)])
    await database.call(metrics_store.flush, "coordinator-a:2", [(SAMPLE, cleared, 4.0)])
    assert _rows(await database.run(metrics_store.installation)) == [(SAMPLE, cleared, 7.0)]
    await database.execute("UPDATE metric_series SET updated_at = now() - interval '2 hours'"
                           " WHERE process = 'coordinator-a:2'")
    assert await database.run(metrics_store.retire_stale) == 1
    await database.call(metrics_store.flush, "coordinator-b:3", [(SAMPLE, cleared, 1.0)])  # its restart
    assert _rows(await database.run(metrics_store.installation)) == [(SAMPLE, cleared, 8.0)]  # never backwards
    processes = {r["process"] for r in await database.fetch("SELECT process FROM metric_series")}
    assert processes == {"gateway-host:1", "coordinator-b:3", metrics_store.RETIRED}


async def test_a_scrape_is_rendered_once_per_interval(database: Database, tmp_path: Path,
                                                      mock_clock: trio.testing.MockClock) -> None:
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path)})
    ctx = ConsoleContext(bus=MemoryBus(), db=database, settings=settings, keys=KeyRing(settings.keys_dir),
                         hub=EventHub())
    cache = metrics_view.ScrapeCache()
    other = '{"error_code":"DEVICE_BUSY","outcome":"failed"}'
    first = (await metrics_view.cached(ctx, cache)).decode()
    assert _value(first, "clearcard_clear_requests_running") == 0.0
    await database.call(metrics_store.flush, "elsewhere:9", [(SAMPLE, other, 5.0)])
    again = (await metrics_view.cached(ctx, cache)).decode()
    assert again == first  # within the interval: no reading of the database at all
    mock_clock.jump(metrics_view.CACHE_SECONDS)
    fresh = (await metrics_view.cached(ctx, cache)).decode()
    assert _value(fresh, SAMPLE, outcome="failed", error_code="DEVICE_BUSY") == 5.0 + (
        metrics.DEVICE_CLEARS.labels("failed", "DEVICE_BUSY")._value.get())
