"""What a benchmark phase cost, counted where the work happens: CPU per process group, the broker's
own message counters, PostgreSQL's commit counter, and the product's RPC counter.

Every figure is a difference between two readings (`Reading.take()` before and after a phase),
divided by the device clears of the phase. The broker's counters are node-wide and PostgreSQL's
are per database: measure on a quiet machine, with nothing else using the broker.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shared import metrics

BROKER_METRICS = "http://127.0.0.1:15692/metrics"  # the rabbitmq_prometheus plugin
_BROKER_COUNTERS = {
    "rabbitmq_global_messages_received_total": "publishes",
    "rabbitmq_global_messages_delivered_total": "deliveries",
    "rabbitmq_global_messages_confirmed_total": "confirms",
}


def cpu_ticks() -> dict[str, int]:
    """CPU ticks (user + system, with reaped children's) so far of this process and its descendants (`clearcard serve`
    processes and their workers), of PostgreSQL and of RabbitMQ."""
    totals = {"python": 0, "postgres": 0, "rabbitmq": 0}
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        pid = int(entry.name)
        # utime + stime, and cutime + cstime: what its exited children used (PostgreSQL's postmaster
        # reaps each backend that closes, so a closed connection's CPU stays counted)
        parents[pid], ticks[pid] = int(fields[1]), sum(int(f) for f in fields[11:15])
        if comm == "postgres":
            totals["postgres"] += ticks[pid]
        elif comm == "beam.smp" and b"rabbit" in cmdline:
            totals["rabbitmq"] += ticks[pid]
    me = os.getpid()
    for pid in ticks:
        ancestor = pid
        while ancestor not in (me, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == me:
            totals["python"] += ticks[pid]
    return totals


def broker_counters() -> dict[str, float]:
    """The broker's node-wide message counters (publishes received, deliveries, confirms)."""
    try:
        with urllib.request.urlopen(BROKER_METRICS, timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        raise SystemExit(f"cannot read the broker's counters at {BROKER_METRICS} ({exc}); "
                         "enable them with: rabbitmq-plugins enable rabbitmq_prometheus") from None
    totals = dict.fromkeys(_BROKER_COUNTERS.values(), 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in _BROKER_COUNTERS:
            totals[_BROKER_COUNTERS[name]] += float(line.rsplit(" ", 1)[1])
    return totals


def rpc_calls() -> float:
    """Commands this process sent over the bus and waited for (the product's own counter)."""
    return sum(s.value for m in metrics.RPC_CALLS.collect() for s in m.samples if s.name.endswith("_total"))


async def database_commits(dsn: str) -> int:
    """Committed transactions of the benchmark's database so far (pg_stat_database)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()


@dataclass(frozen=True)
class Reading:
    cpu: dict[str, int]
    broker: dict[str, float]
    rpcs: float
    commits: int

    @classmethod
    async def take(cls, dsn: str) -> Reading:
        """All counters now (the database's after its backends have reported: see `settle`)."""
        return cls(cpu_ticks(), broker_counters(), rpc_calls(), await database_commits(dsn))

    def per_clear(self, later: Reading, clears: int, *, in_process_rpcs: bool = True) -> dict[str, float | None]:
        """Costs per device clear between this reading and a later one."""
        n = max(clears, 1)
        hz = os.sysconf("SC_CLK_TCK")
        out: dict[str, float | None] = {
            f"cpu_ms_{k}": round((later.cpu[k] - self.cpu[k]) / hz * 1000 / n, 2) for k in self.cpu}
        out["cpu_ms_total"] = round(sum(v for k, v in out.items() if k.startswith("cpu_ms_") and v) or 0, 2)
        for k in self.broker:
            out[k] = round((later.broker[k] - self.broker[k]) / n, 2)
        out["rpcs"] = round((later.rpcs - self.rpcs) / n, 2) if in_process_rpcs else None
        out["postgres_commits"] = round((later.commits - self.commits) / n, 2)
        return out
