"""Prometheus metrics (`clearcard_*`): instruments services increment, and the fleet snapshot.

Two kinds of metric live here:

- instruments (counters, histograms) that a service increments where the event happens; they
  count what happened in *this process* and are exposed by a console running in it;
- the fleet snapshot, computed from PostgreSQL at scrape time by the console, so that any
  console replica reports the same fleet-wide numbers (clears by outcome, devices by days left).

Import the instruments and use them; never create metrics elsewhere, so names stay unique.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# One registry for the instruments of this process (not prometheus_client's default one, so
# importing ClearCard never adds metrics to a host application's registry).
REGISTRY = CollectorRegistry(auto_describe=True)

_STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

CLEARS = Counter(
    "clearcard_clears", "Device clears that reached an outcome in this process.",
    ["outcome", "error_code"], registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "clearcard_step_duration_seconds", "Time a device spent on one clear step.",
    ["step"], buckets=_STEP_BUCKETS, registry=REGISTRY,
)
GATEWAY_COMMAND = Histogram(
    "clearcard_gateway_command_duration_seconds", "Latency of device gateway commands, as the caller saw it.",
    ["op", "outcome"], buckets=_COMMAND_BUCKETS, registry=REGISTRY,
)
RPC_CALLS = Counter(
    "clearcard_rpc_calls", "Commands this process sent over the bus and waited for, by operation.",
    ["op"], registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "clearcard_http_requests", "Console HTTP requests by route and status code.",
    ["route", "method", "status"], registry=REGISTRY,
)
CLEAR_REQUESTS_SUBMITTED = Counter(
    "clearcard_console_clear_requests_submitted", "Clear requests the console published.",
    ["mode", "preview"], registry=REGISTRY,
)

# Fleet gauges: days-left buckets for the lock-date countdown (upper bounds, inclusive).
DAYS_LEFT_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("overdue", -1), ("0-3", 3), ("4-7", 7), ("8-15", 15), ("16+", None),
)


def days_left_bucket(days: int | None) -> str:
    """The countdown bucket of a device (`unknown` when its lock date is not known yet)."""
    if days is None:
        return "unknown"
    for name, upper in DAYS_LEFT_BUCKETS:
        if upper is None or days <= upper:
            return name
    return DAYS_LEFT_BUCKETS[-1][0]


@dataclass(frozen=True)
class FleetSnapshot:
    """Fleet-wide numbers read from PostgreSQL at scrape time."""

    # (outcome, error_code or "") -> device clears
    clears: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # (branch, family, days-left bucket) -> devices
    devices: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    # (branch, online "true"/"false") -> devices
    online: Mapping[tuple[str, str], int] = field(default_factory=dict)
    running_requests: int = 0
    devices_in_progress: int = 0
    # queue -> messages waiting (only where the transport can tell)
    queue_depths: Mapping[str, int] = field(default_factory=dict)
    # (status) -> digital-invoice monthly confirmations
    digital_confirmations: Mapping[str, int] = field(default_factory=dict)


class SnapshotCollector(Collector):
    """Exposes one FleetSnapshot; build one per scrape."""

    def __init__(self, snapshot: FleetSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        s = self.snapshot
        clears = GaugeMetricFamily("clearcard_device_clears", "Device clears recorded in the database, by outcome "
                                   "and error code (running clears have outcome 'running').",
                                   labels=["outcome", "error_code"])
        for (outcome, code), n in sorted(s.clears.items()):
            clears.add_metric([outcome, code], n)
        yield clears
        devices = GaugeMetricFamily("clearcard_devices", "Registered devices by branch, family and days left to "
                                    "their lock date.", labels=["branch", "family", "days_left"])
        for (branch, family, bucket), n in sorted(s.devices.items()):
            devices.add_metric([branch, family, bucket], n)
        yield devices
        online = GaugeMetricFamily("clearcard_devices_online", "Registered devices by branch and connection.",
                                   labels=["branch", "online"])
        for (branch, flag), n in sorted(s.online.items()):
            online.add_metric([branch, flag], n)
        yield online
        yield GaugeMetricFamily("clearcard_clear_requests_running", "Clear requests not finished yet.",
                                value=s.running_requests)
        yield GaugeMetricFamily("clearcard_device_clears_in_progress", "Device clears without an outcome yet.",
                                value=s.devices_in_progress)
        depths = GaugeMetricFamily("clearcard_queue_depth", "Messages waiting in a queue.", labels=["queue"])
        for queue, n in sorted(s.queue_depths.items()):
            depths.add_metric([queue], n)
        yield depths
        digital = GaugeMetricFamily("clearcard_digital_confirmations", "Monthly digital-invoice summary "
                                    "confirmations by status.", labels=["status"])
        for status, n in sorted(s.digital_confirmations.items()):
            digital.add_metric([status], n)
        yield digital


def exposition(snapshot: FleetSnapshot) -> bytes:
    """The Prometheus text format of this process's instruments plus the fleet snapshot."""
    scrape = CollectorRegistry(auto_describe=True)
    scrape.register(SnapshotCollector(snapshot))
    return generate_latest(REGISTRY) + generate_latest(scrape)


def metric_names() -> Iterator[str]:
    """Every metric family name this module defines (for docs and tests)."""
    for metric in REGISTRY.collect():
        yield metric.name
    yield from (m.name for m in SnapshotCollector(FleetSnapshot()).collect())
