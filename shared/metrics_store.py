"""The installation's metrics in PostgreSQL: each process records its own, the console shows the sum.

Why one aggregated view rather than a `/metrics` port per process: the contract asks for
every clear the installation ran on the console's `/metrics`; services run as separate
processes (often on branch hosts behind NAT, in k8s pods that come and go) and already share
PostgreSQL, so one scrape target that any console replica answers alike needs no per-process
ports, scrape configs or service discovery, and works the same with the embedded bus.

Each serving process upserts the cumulative values of its counters and histogram buckets
(a few hundred rows) every `FLUSH_SECONDS`, at once after a device clear finishes, and when it
stops. The console sums rows over processes. A process that stopped long ago is folded into
the `retired` row set, so totals never go backwards when processes restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import asyncpg
import structlog
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shared import metrics
from shared.db import Database
from shared.db.pool import INFRASTRUCTURE_ERRORS

log = structlog.get_logger("clearcard.metrics")
PROCESS = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
RETIRED = "retired"
FLUSH_SECONDS = 5.0
RETIRE_AFTER_SECONDS = 3600.0  # a process silent this long has stopped (or lost its database)
Row = tuple[str, str, float]  # sample name, labels as canonical JSON, value


def _labels(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def samples(registry: CollectorRegistry = metrics.REGISTRY) -> list[Row]:
    """Every cumulative sample of a registry (creation timestamps left out)."""
    rows: list[Row] = []
    for family in registry.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                rows.append((sample.name, _labels(sample.labels), float(sample.value)))
    return rows


async def flush(conn: asyncpg.Connection, process: str, rows: list[Row]) -> None:
    """Store this process's current values (one statement: no transaction block needed)."""
    if rows:
        await conn.execute(
            "INSERT INTO metric_series (process, sample, labels, value, updated_at)"
            " SELECT $1, s, l::jsonb, v, now() FROM unnest($2::text[], $3::text[], $4::float8[]) AS u(s, l, v)"
            " ON CONFLICT (process, sample, labels) DO UPDATE SET value = excluded.value, updated_at = now()",
            process, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    else:
        await conn.execute("SELECT 1")


async def retire_stale(conn: asyncpg.Connection, older_than: float = RETIRE_AFTER_SECONDS) -> int:
    """Fold processes silent for `older_than` seconds into the retired totals; how many rows."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", 0x434D5452)  # one folder at a time
    stale = await conn.fetch(
        "DELETE FROM metric_series WHERE process <> $1 AND process IN (SELECT process FROM metric_series"
        " GROUP BY process HAVING max(updated_at) < now() - make_interval(secs => $2))"
        " RETURNING sample, labels::text AS labels, value", RETIRED, float(older_than))
    folded: dict[tuple[str, str], float] = defaultdict(float)
    for r in stale:
        folded[(r["sample"], r["labels"])] += r["value"]
    await conn.executemany(
        "INSERT INTO metric_series (process, sample, labels, value) VALUES ($1, $2, $3::jsonb, $4)"
        " ON CONFLICT (process, sample, labels) DO UPDATE SET value = metric_series.value + excluded.value,"
        " updated_at = now()", [(RETIRED, s, labels, v) for (s, labels), v in folded.items()])
    return len(stale)


async def installation(conn: asyncpg.Connection) -> list[Row]:
    """Every sample summed over the installation's processes."""
    rows = await conn.fetch("SELECT sample, labels::text AS labels, sum(value) AS value FROM metric_series"
                            " GROUP BY sample, labels ORDER BY sample, labels")
    return [(r["sample"], r["labels"], float(r["value"])) for r in rows]


class InstallationCollector(Collector):
    """The instruments of shared/metrics.py with the installation's summed values."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self._by_sample: dict[str, list[tuple[dict[str, Any], float]]] = defaultdict(list)
        for sample, labels, value in rows:
            self._by_sample[sample].append((json.loads(labels), value))

    def collect(self) -> Iterable[Metric]:
        for family in metrics.REGISTRY.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            names = {s.name for s in family.samples} | {f"{family.name}{x}" for x in _SUFFIXES[family.type]}
            for name in sorted(names):
                for labels, value in self._by_sample.get(name, []):
                    out.add_sample(name, labels, value)
            yield out


_SUFFIXES = defaultdict(lambda: ("",), {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")})


async def run_flusher(db: Database, *, interval: float = FLUSH_SECONDS, process: str = PROCESS,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Write this process's metrics every `interval` (sooner when asked) until cancelled."""
    wake = trio.Event()

    def poke() -> None:
        wake.set()

    unregister = metrics.on_flush_request(poke)
    task_status.started()
    retired_at = trio.current_time()
    try:
        while True:
            with trio.move_on_after(interval):
                await wake.wait()
            wake = trio.Event()
            try:
                await db.call(flush, process, samples())
                if trio.current_time() - retired_at > RETIRE_AFTER_SECONDS / 6:
                    retired_at = trio.current_time()
                    await db.run(retire_stale)
            except INFRASTRUCTURE_ERRORS as exc:  # the database is away: the next flush catches up
                log.warning("metrics not recorded", error=repr(exc))
    finally:
        unregister()
        with trio.CancelScope(shield=True), trio.move_on_after(2), contextlib.suppress(*INFRASTRUCTURE_ERRORS):
            await db.call(flush, process, samples())
